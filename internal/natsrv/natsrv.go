// Package natsrv runs a NATS server with JetStream inside the process: the
// embedded mode of cocmd's cluster, where each node's server routes to the
// others' and together they replicate the state of record.
package natsrv

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config is one embedded server.
type Config struct {
	// Name is the server's name, unique in its cluster.
	Name string
	// Dir holds JetStream's files.
	Dir string
	// Listen is the host:port of client connections; port 0 picks one.
	Listen string
	// Cluster names the cluster; empty runs a single server.
	Cluster string
	// ClusterListen is the host:port of routes from the other servers.
	ClusterListen string
	// Routes are the other servers' route addresses (host:port or
	// nats://host:port); this server's own may be among them.
	Routes []string
	// SyncInterval is how often JetStream fsyncs; default 1 s (see
	// docs/cluster.md: a write is acknowledged once a quorum has it in
	// memory, and reaches disk within this interval).
	SyncInterval time.Duration
	// Logger, if set, receives the server's log.
	Logger server.Logger
	// Secret, if set, is required of routes (other servers) and clients
	// alike, as user "cocmd": see ClientUser.
	Secret string
}

// ClientUser is the user name of the embedded servers' clients and routes.
const ClientUser = "cocmd"

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*server.Server, error) {
	host, port, err := hostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("natsrv: listen: %w", err)
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = time.Second
	}
	opts := &server.Options{
		ServerName:   cfg.Name,
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     cfg.Dir,
		NoSigs:       true,
		NoLog:        cfg.Logger == nil,
		SyncInterval: cfg.SyncInterval,
	}
	if cfg.Cluster != "" {
		ch, cp, err := hostPort(cfg.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("natsrv: cluster listen: %w", err)
		}
		// A frozen or unreachable peer is dropped within seconds (the
		// default pings every 2 minutes): until then NATS keeps routing
		// requests, direct gets included, to it.
		opts.Cluster = server.ClusterOpts{Name: cfg.Cluster, Host: ch, Port: cp, PingInterval: 2 * time.Second, MaxPingsOut: 3}
		if cfg.Secret != "" {
			opts.Cluster.Username, opts.Cluster.Password = ClientUser, cfg.Secret
		}
		for _, r := range cfg.Routes {
			if !strings.Contains(r, "://") {
				r = "nats://" + r
			}
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("natsrv: route %q: %w", r, err)
			}
			if cfg.Secret != "" {
				u.User = url.UserPassword(ClientUser, cfg.Secret)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if cfg.Secret != "" {
		opts.Username, opts.Password = ClientUser, cfg.Secret
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsrv: %w", err)
	}
	if cfg.Logger != nil {
		s.SetLoggerV2(cfg.Logger, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("natsrv: the server did not start within 30 s")
	}
	// The server logs a port it could not bind and carries on: refuse.
	if s.Addr() == nil {
		s.Shutdown()
		return nil, fmt.Errorf("natsrv: cannot listen on %s", cfg.Listen)
	}
	if cfg.Cluster != "" && s.ClusterAddr() == nil {
		s.Shutdown()
		return nil, fmt.Errorf("natsrv: cannot listen for routes on %s", cfg.ClusterListen)
	}
	return s, nil
}

func hostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	if n == 0 {
		n = server.RANDOM_PORT
	}
	return h, n, nil
}

// Slog adapts l to the server's logger: its notices are Info, its errors
// Warn (most are a route to a server not up yet, retried by itself), its
// debug and trace lines Debug.
func Slog(l *slog.Logger) server.Logger { return slogLogger{l.With("component", "nats")} }

type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Noticef(format string, v ...any) { s.l.Info(fmt.Sprintf(format, v...)) }
func (s slogLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s slogLogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogLogger) Errorf(format string, v ...any)  { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s slogLogger) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s slogLogger) Tracef(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
