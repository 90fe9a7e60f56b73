// Package natstest starts embedded NATS servers for tests: one, or a
// cluster of three on loopback ports, with JetStream.
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

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
	Servers []*server.Server
	Configs []natsrv.Config
}

// Start starts n servers (n = 1: a single server; else one cluster) and
// stops them when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{}
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
	for time.Now().Before(deadline) {
		for _, s := range c.Servers {
			if s != nil && s.Running() && s.JetStreamIsLeader() {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("natstest: no JetStream meta leader within 30 s")
}

// Stop stops every server still running.
func (c *Cluster) Stop() {
	for _, s := range c.Servers {
		if s != nil && s.Running() {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
}

// URL returns server i's client URL.
func (c *Cluster) URL(i int) string { return c.Servers[i].ClientURL() }

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
