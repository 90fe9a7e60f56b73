package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cocmd/cocmd/cluster"
	"github.com/cocmd/cocmd/internal/natsrv"
	"github.com/cocmd/cocmd/store/natsjs"
)

// nodeName is what a node's name may be: it is a key in JetStream.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (c config) validateCluster() error {
	if !c.clustered() {
		if c.ClusterRoutes != "" || c.NATSListen != "" {
			return errors.New("-cluster-routes and -nats-listen need -cluster-listen (an embedded NATS server)")
		}
		return nil
	}
	if c.NATS != "" && c.ClusterListen != "" {
		return errors.New("give -nats (an existing NATS cluster) or -cluster-listen (an embedded one), not both")
	}
	if c.ClusterListen != "" {
		host, _, err := net.SplitHostPort(c.ClusterListen)
		if err != nil {
			return fmt.Errorf("-cluster-listen %q: %v", c.ClusterListen, err)
		}
		nhost, _, _ := net.SplitHostPort(c.NATSListen)
		if c.ClusterSecret == "" && (!isLoopback(host) || c.NATSListen != "" && !isLoopback(nhost)) {
			return errors.New("-cluster-listen or -nats-listen off loopback: give -cluster-secret-file (whoever reaches the embedded NATS servers reads and writes all the state, token signing keys included)")
		}
		for _, r := range splitList(c.ClusterRoutes) {
			if _, _, err := net.SplitHostPort(strings.TrimPrefix(r, "nats://")); err != nil {
				return fmt.Errorf("-cluster-routes %q: %v", r, err)
			}
		}
	}
	if c.Node != "" && !nodeName.MatchString(c.Node) {
		return fmt.Errorf("-node %q: letters, digits, '-' and '_', at most 64", c.Node)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("-replicas %d: 0 (automatic) to 5", c.Replicas)
	}
	if c.LeaseTTL < 500*time.Millisecond || c.LeaseTTL > time.Minute {
		return fmt.Errorf("-lease-ttl %v: 500ms to 1m", c.LeaseTTL)
	}
	if c.AuditRetention != 0 {
		return errors.New("-audit-retention: the audit log cannot be pruned in cluster mode yet (docs/cluster.md); leave it 0")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// nodeID is this node's name: -node, or the host name and HTTP port.
func (c config) nodeID() string {
	if c.Node != "" {
		return c.Node
	}
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(c.Listen)
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host+"-"+port)
	return id
}

// replicas is the replica count of the state.
func (c config) replicas() int {
	if c.Replicas > 0 {
		return c.Replicas
	}
	n := len(splitList(c.NATS))
	if c.ClusterListen != "" {
		routes := map[string]bool{c.ClusterListen: true}
		for _, r := range splitList(c.ClusterRoutes) {
			routes[strings.TrimPrefix(r, "nats://")] = true
		}
		n = len(routes)
	}
	if n >= 3 {
		return 3
	}
	return 1
}

// clusterNode is this process's part of a cluster: the embedded NATS
// server, if it runs one, the connection, the store and the membership.
type clusterNode struct {
	embedded *server.Server
	nc       *nats.Conn
	store    *natsjs.Store
	node     *cluster.Node
	caughtUp atomic.Bool // the embedded server was current once since the start
}

// joinCluster starts the embedded NATS server, if asked for, connects, and
// opens the store and the node. JetStream may take a while to elect its
// leaders when the cluster starts: it is retried for a minute.
func joinCluster(ctx context.Context, c config, dataDir string, log *slog.Logger) (*clusterNode, error) {
	cn := &clusterNode{}
	url := c.NATS
	var opts []nats.Option
	name := c.nodeID()
	if c.ClusterListen != "" {
		listen := c.NATSListen
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		var secret string
		if c.ClusterSecret != "" {
			b, err := os.ReadFile(c.ClusterSecret)
			if err != nil {
				return nil, fmt.Errorf("-cluster-secret-file: %w", err)
			}
			if secret = strings.TrimSpace(string(b)); len(secret) < 16 {
				return nil, errors.New("-cluster-secret-file: the secret must be at least 16 characters")
			}
		}
		s, err := natsrv.Start(natsrv.Config{Name: name, Dir: filepath.Join(dataDir, "nats"), Listen: listen,
			Cluster: "cocmd", ClusterListen: c.ClusterListen, Routes: splitList(c.ClusterRoutes), Logger: natsrv.Slog(log), Secret: secret})
		if err != nil {
			return nil, err
		}
		cn.embedded = s
		url = s.ClientURL()
		if secret != "" {
			opts = append(opts, nats.UserInfo(natsrv.ClientUser, secret))
		}
	}
	nc, err := nats.Connect(url, append(opts, nats.Name("cocmd "+name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted()) }))...)
	if err != nil {
		cn.close()
		return nil, fmt.Errorf("NATS %s: %w", url, err)
	}
	cn.nc = nc
	deadline := time.Now().Add(2 * time.Minute)
	// A request made before JetStream has a meta leader goes unanswered:
	// wait for one (AccountInfo needs it) before creating anything.
	js, err := jetstream.New(nc)
	if err != nil {
		cn.close()
		return nil, err
	}
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			cn.close()
			return nil, fmt.Errorf("NATS %s: JetStream is not available: %w", url, err)
		}
		log.Info("waiting for the cluster's JetStream", "err", err)
		time.Sleep(250 * time.Millisecond)
	}
	for {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cn.store, err = natsjs.Open(octx, nc, natsjs.Config{Replicas: c.replicas(), Node: name})
		if err == nil {
			cn.node, err = cluster.Open(octx, nc, cn.store, cluster.Config{Node: name, Replicas: c.replicas(), LeaseTTL: c.LeaseTTL, Logger: log})
		}
		cancel()
		if err == nil {
			break
		}
		if cn.store != nil {
			cn.store.Close()
			cn.store = nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			cn.close()
			return nil, fmt.Errorf("cluster store: %w", err)
		}
		log.Info("waiting for the cluster's store", "err", err)
		time.Sleep(250 * time.Millisecond)
	}
	log.Info("cluster mode", "node", name, "replicas", c.replicas(), "nats", nc.ConnectedUrlRedacted())
	return cn, nil
}

// close leaves the cluster: the meetings this node holds are released.
func (cn *clusterNode) close() {
	if cn.node != nil {
		cn.node.Close()
	}
	if cn.store != nil {
		cn.store.Close()
	}
	if cn.nc != nil {
		cn.nc.Close()
	}
	if cn.embedded != nil {
		cn.embedded.Shutdown()
		cn.embedded.WaitForShutdown()
	}
}

// ready is the node's readiness: it reaches NATS and, with an embedded
// server, that server has caught up with the streams a node needs since
// it started (a restarted server replays what it missed first; during a
// rolling restart, the next node must not stop before this one is
// current, or JetStream loses its quorum). Once caught up, a follower's
// moment behind its leader after each write is no reason to refuse
// anyone.
func (cn *clusterNode) ready() error {
	if err := cn.node.Ready(); err != nil {
		return err
	}
	s := cn.embedded
	if s == nil || cn.caughtUp.Load() {
		return nil
	}
	if !s.JetStreamIsCurrent() {
		return errors.New("the embedded NATS server is catching up with the cluster")
	}
	for _, st := range []string{"COCMD_MEETINGS", "KV_cocmd_owners", "KV_cocmd_nodes"} {
		if s.JetStreamIsStreamAssigned(server.DEFAULT_GLOBAL_ACCOUNT, st) && !s.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, st) {
			return fmt.Errorf("the embedded NATS server is catching up with stream %s", st)
		}
	}
	cn.caughtUp.Store(true)
	return nil
}

// natsFlag is the -nats flag of the commands that work on a cluster's
// shared store.
func natsFlag(fs *flag.FlagSet) *string {
	return fs.String("nats", "", "work on a cluster's shared store at these NATS URLs (comma-separated; with embedded servers, a node's client port: nats://cocmd:SECRET@127.0.0.1:PORT) instead of a data directory")
}

// withSharedStore runs fn on the store of the cluster at url, for a
// command, within a minute.
func withSharedStore(url string, fn func(ctx context.Context, st *natsjs.Store) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, closeStore, err := openSharedStore(ctx, url)
	if err != nil {
		return err
	}
	defer closeStore()
	return fn(ctx, st)
}

// openSharedStore connects to a cluster's NATS and opens its store, for a
// command; the returned function closes both.
func openSharedStore(ctx context.Context, url string) (*natsjs.Store, func(), error) {
	nc, err := nats.Connect(url, nats.Name("cocmd command"))
	if err != nil {
		return nil, nil, fmt.Errorf("NATS %s: %w", url, err)
	}
	// A cluster's streams exist: without them, this is not one (and the
	// command must not make them, with its own idea of replicas).
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.Stream(ctx, "COCMD_MEETINGS")
	}
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("no cocmd cluster at %s: %w", url, err)
	}
	st, err := natsjs.Open(ctx, nc, natsjs.Config{Node: "command", Replicas: 1})
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("the cluster's store: %w", err)
	}
	return st, func() { st.Close(); nc.Close() }, nil
}
