// Package natstest starts embedded NATS servers for tests: one, or a
// cluster of three on loopback ports, with JetStream.
package natstest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cocmd/cocmd/internal/natsrv"
)

// freePort returns a loopback address nobody listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Cluster is a set of running servers.
type Cluster struct {
	Servers []*server.Server // nil for the child's
	Configs []natsrv.Config
	// Child is the server run in a child process (StartWithChild), or
	// nil; ChildIndex its index.
	Child      *exec.Cmd
	ChildIndex int
	childURL   string
}

// Start starts n servers (n = 1: a single server; else one cluster) and
// stops them when the test ends.
func Start(t testing.TB, n int) *Cluster { return start(t, n, -1) }

// StartWithChild starts a cluster of n servers like Start, except that
// server child runs in a child process — the test binary again, whose
// TestMain must call RunChild first — so that it can be frozen (Freeze):
// to the others it is then a server that crashed or was cut off without
// a word, which one stopped in this process never is (it hands its
// leaderships over as it stops).
func StartWithChild(t testing.TB, n, child int) *Cluster { return start(t, n, child) }

func start(t testing.TB, n, child int) *Cluster {
	t.Helper()
	c := &Cluster{ChildIndex: child}
	routes := make([]string, n)
	for i := range routes {
		routes[i] = freePort(t)
	}
	for i := range n {
		cfg := natsrv.Config{Name: fmt.Sprint("n", i), Dir: t.TempDir(), Listen: "127.0.0.1:0"}
		if n > 1 {
			cfg.Cluster, cfg.ClusterListen, cfg.Routes = "test", routes[i], routes
		}
		c.Configs = append(c.Configs, cfg)
	}
	c.Servers = make([]*server.Server, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			if i == child {
				errs <- c.startChild(t, c.Configs[i])
				return
			}
			s, err := natsrv.Start(c.Configs[i])
			c.Servers[i] = s
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.Stop)
	if n > 1 {
		c.WaitJetStream(t)
	}
	return c
}

// WaitJetStream waits until the cluster's JetStream has a meta leader.
func (c *Cluster) WaitJetStream(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var js jetstream.JetStream
	if c.Child != nil { // it may be the leader: ask through a client
		nc, err := nats.Connect(c.URLs())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ = jetstream.New(nc)
	}
	for time.Now().Before(deadline) {
		for _, s := range c.Servers {
			if s != nil && s.Running() && s.JetStreamIsLeader() {
				return
			}
		}
		if js != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := js.AccountInfo(ctx)
			cancel()
			if err == nil {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("natstest: no JetStream meta leader within 30 s")
}

// childEnv carries a child server's configuration (JSON) to the child.
const childEnv = "COCMD_NATSTEST_CHILD"

// RunChild makes this process the NATS server a StartWithChild asked
// for, if it is that child: it prints the client URL and serves until
// killed, never returning. Otherwise it returns at once. Call it first
// in TestMain.
func RunChild() {
	cfgJSON := os.Getenv(childEnv)
	if cfgJSON == "" {
		return
	}
	var cfg natsrv.Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "natstest child:", err)
		os.Exit(2)
	}
	s, err := natsrv.Start(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstest child:", err)
		os.Exit(2)
	}
	fmt.Println(s.ClientURL())
	select {}
}

// startChild starts the child server with cfg and waits for its URL.
func (c *Cluster) startChild(t testing.TB, cfg natsrv.Config) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	c.Child = cmd
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("natstest: the child server said nothing (does TestMain call natstest.RunChild?): %w", err)
	}
	c.childURL = strings.TrimSpace(line)
	return nil
}

// Freeze stops the child server's process (SIGSTOP): its connections
// stay open, and nothing answers on them.
func (c *Cluster) Freeze(t testing.TB) {
	t.Helper()
	if err := c.Child.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

// Stop stops every server still running.
func (c *Cluster) Stop() {
	if c.Child != nil && c.Child.ProcessState == nil {
		c.Child.Process.Kill()
		c.Child.Wait()
	}
	for _, s := range c.Servers {
		if s != nil && s.Running() {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
}

// URL returns server i's client URL.
func (c *Cluster) URL(i int) string {
	if c.Child != nil && i == c.ChildIndex {
		return c.childURL
	}
	return c.Servers[i].ClientURL()
}

// URLs returns every server's client URL, comma-separated.
func (c *Cluster) URLs() string {
	s := ""
	for i := range c.Servers {
		if i > 0 {
			s += ","
		}
		s += c.URL(i)
	}
	return s
}

// Connect connects to the servers (url: one or several, comma-separated)
// and closes the connection when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
