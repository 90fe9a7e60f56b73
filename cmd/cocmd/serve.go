package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with -debug-addr
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/cocmd/cocmd"
	"github.com/cocmd/cocmd/internal/datadir"
	"github.com/cocmd/cocmd/media"
	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/relay"
	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/store/sqlite"
	"github.com/cocmd/cocmd/webhook"
)

// config is everything serve can be told, with its defaults.
type config struct {
	Listen         string
	DataDir        string
	PublicURL      string
	ReconnectGrace time.Duration
	LogLevel       string
	APIKey         string
	APIKeyFile     string // a file holding the API key, to keep it out of process listings
	DebugAddr      string
	// WebhooksAllowPrivate lets webhook endpoints be private, loopback or
	// link-local addresses: for development.
	WebhooksAllowPrivate bool
	// AuditRetention is how long the meetings' log entries are kept; 0
	// keeps them for ever. Webhook attempts are kept 30 days.
	AuditRetention time.Duration
	MediaListen    string // UDP address of the media plane; "" is the HTTP port on every interface
	MediaPublicIP  string // comma-separated; announced instead of local addresses (1:1 NAT); "auto": ask STUN
	NodeHost       string // the name or address of this node itself, not the balancer's: TURN URLs name it
	STUN           string // host:port of the STUN server -media-public-ip auto asks
	MediaLoopback  bool   // offer loopback candidates too
	MediaTCP       bool   // ICE-TCP on the HTTP(S) port
	TURN           bool   // the embedded TURN server, on the media UDP port and the HTTP(S) port
	TURNURLs       string // comma-separated URLs of an external TURN server, instead of the embedded one
	TURNSecretFile string // the TURN REST shared secret; default <data>/turn-secret, created
	TURNOffer      string // the embedded server's transports clients are told of: udp, tcp, tls; "": tls with HTTPS, else udp
	Dev            string // "auto" (on when listening on loopback), "true" or "false"
	TLSCert        string // PEM certificate (chain) file; with TLSKey, serve HTTPS
	TLSKey         string // PEM private key file
	RedirectHTTP   string // with TLS: an address whose plain HTTP requests are redirected to HTTPS
	Domain         string // comma-separated names: get certificates over ACME and serve HTTPS
	ACMECA         string // the ACME directory URL; "" is Let's Encrypt
	ACMEEmail      string
	ACMECARoot     string        // a PEM file of roots for the CA's own HTTPS (private CAs, tests)
	ACMERenewCheck time.Duration // how often certificates are checked for renewal
	ConnLimit      int           // realtime connections per client address
	MaxConns       int           // realtime connections this node takes; 0: no limit
	PingInterval   time.Duration // how often each realtime connection is pinged
	UnauthLimit    int           // unauthenticated connections per peer address
	TrustedProxies string        // comma-separated CIDRs or addresses whose X-Forwarded-For is believed
	// Cluster mode (docs/cluster.md): the state in NATS JetStream.
	NATS          string        // comma-separated URLs of an existing NATS cluster with JetStream
	ClusterListen string        // host:port: run an embedded NATS server, its routes listening here
	ClusterRoutes string        // comma-separated host:port of the embedded servers' routes (this node's among them, or not)
	NATSListen    string        // host:port of the embedded server's clients; default 127.0.0.1 on a port of its choosing
	ClusterSecret string        // file holding the secret the embedded servers require of each other (and of clients)
	Node          string        // this node's name in the cluster; default the host name and HTTP port
	Replicas      int           // replicas of the state; 0: 3 with three servers or more, else 1
	LeaseTTL      time.Duration // how long a dead node's meetings stay its own
}

// clustered reports whether the node runs in cluster mode.
func (c config) clustered() bool { return c.NATS != "" || c.ClusterListen != "" }

func defaults() config {
	return config{
		Listen:         "localhost:8080",
		DataDir:        "data",
		ReconnectGrace: 30 * time.Second,
		LogLevel:       "info",
		MediaLoopback:  true,
		MediaTCP:       true,
		TURN:           true,
		Dev:            "auto",
		ACMERenewCheck: 10 * time.Minute,
		ConnLimit:      2000,
		PingInterval:   20 * time.Second,
		UnauthLimit:    64,
		LeaseTTL:       2 * time.Second,
	}
}

// dev reports whether development mode (demo webinars for anyone who asks)
// is on: when asked for, or, by default, when both the listen address and
// the public URL are loopback — a server reached through a proxy under a
// public name is not in development, whatever it listens on.
func (c config) dev() bool {
	if c.Dev != "auto" {
		on, _ := strconv.ParseBool(c.Dev)
		return on
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	if !isLoopback(host) {
		return false
	}
	u, err := url.Parse(c.PublicURL)
	return c.PublicURL == "" || err == nil && isLoopback(u.Hostname())
}

// isLoopback reports whether host names this machine only.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// turnURLs are the external TURN server's URLs, if any.
func (c config) turnURLs() []string {
	var urls []string
	for u := range strings.SplitSeq(c.TURNURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// turnOffer is the set of the embedded TURN server's transports clients
// are told of, when the server serves TLS or not.
func (c config) turnOffer(tls bool) (map[string]bool, error) {
	if c.TURNOffer == "" {
		// Every client allocates a relay on every transport it is told
		// of, used or not: tell of the one that gets through where
		// nothing else does. A client that reaches the UDP port needs no
		// TURN/UDP on that same port (ICE gets there directly), and one
		// that reaches TCP 443 has ICE-TCP; TLS on 443 passes the
		// firewalls that let nothing else out. Without HTTPS, TURN/UDP,
		// the cheapest, for clients that want relays only.
		if tls {
			return map[string]bool{"tls": true}, nil
		}
		return map[string]bool{"udp": true}, nil
	}
	out := map[string]bool{}
	for t := range strings.SplitSeq(c.TURNOffer, ",") {
		switch t = strings.TrimSpace(t); t {
		case "udp", "tcp", "tls":
			out[t] = true
		default:
			return nil, fmt.Errorf("-turn-offer %q: transports are udp, tcp and tls", t)
		}
	}
	return out, nil
}

// mediaAddr is the UDP address the media plane listens on.
func (c config) mediaAddr() string {
	if c.MediaListen != "" {
		return c.MediaListen
	}
	_, port, _ := net.SplitHostPort(c.Listen)
	return ":" + port
}

// Validate reports the first setting that cannot work.
func (c config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen address %q: %v", c.Listen, err)
	}
	if c.DataDir == "" {
		return errors.New("a data directory is required")
	}
	if c.ReconnectGrace < time.Second || c.ReconnectGrace > time.Hour {
		return fmt.Errorf("reconnect grace %v: must be 1s to 1h", c.ReconnectGrace)
	}
	if c.AuditRetention != 0 && c.AuditRetention < 48*time.Hour {
		return fmt.Errorf("audit retention %v: 0 (for ever) or at least 48h, as webhook deliveries are retried for a day from the log", c.AuditRetention)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.mediaAddr()); err != nil {
		return fmt.Errorf("media listen address %q: %v", c.MediaListen, err)
	}
	if h := c.NodeHost; h != "" && (strings.ContainsAny(h, "/?#@: ") && net.ParseIP(h) == nil) {
		return fmt.Errorf("-node-host %q: a host name or an IP address, without scheme or port", h)
	}
	for _, u := range c.turnURLs() {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			return fmt.Errorf("-turn-urls %q: a TURN URL starts with \"turn:\" or \"turns:\"", u)
		}
	}
	if _, err := c.turnOffer(false); err != nil {
		return err
	}
	if len(c.turnURLs()) > 0 && c.TURNSecretFile == "" {
		return errors.New("-turn-urls needs the external server's shared secret (-turn-secret-file)")
	}
	if c.MediaPublicIP == "auto" && c.STUN == "" {
		return errors.New("-media-public-ip auto needs a STUN server to ask (-stun host:3478)")
	}
	for _, ip := range c.publicIPs() {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("media public IP %q is not an IP address", ip)
		}
	}
	if _, err := strconv.ParseBool(c.Dev); err != nil && c.Dev != "auto" {
		return fmt.Errorf("dev %q: use auto, true or false", c.Dev)
	}
	if c.DebugAddr != "" {
		host, _, err := net.SplitHostPort(c.DebugAddr)
		if err != nil || !isLoopback(host) {
			return fmt.Errorf("debug address %q: must be a loopback address (127.0.0.1:port); it serves pprof without authentication", c.DebugAddr)
		}
	}
	if c.Domain != "" && c.TLSCert != "" {
		return errors.New("give -domain (certificates over ACME) or -tls-cert/-tls-key, not both")
	}
	for _, d := range c.domains() {
		if strings.ContainsAny(d, "/: ") || net.ParseIP(d) != nil {
			return fmt.Errorf("domain %q: a DNS name (ACME certifies names, not addresses)", d)
		}
	}
	if c.ACMERenewCheck < time.Second {
		return fmt.Errorf("acme-renew-check %v: at least 1s", c.ACMERenewCheck)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("a TLS certificate needs its key, and a key its certificate (-tls-cert and -tls-key)")
	}
	if c.RedirectHTTP != "" {
		if c.scheme() != "https" {
			return errors.New("-redirect-http needs HTTPS (-tls-cert and -tls-key)")
		}
		if _, _, err := net.SplitHostPort(c.RedirectHTTP); err != nil {
			return fmt.Errorf("redirect address %q: %v", c.RedirectHTTP, err)
		}
	}
	if c.PingInterval < 500*time.Millisecond || c.PingInterval > 5*time.Minute {
		return fmt.Errorf("-ping-interval %v: 500ms to 5m", c.PingInterval)
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("-max-connections %d: 0 (no limit) or more", c.MaxConns)
	}
	if c.ConnLimit < 1000 {
		return fmt.Errorf("conn-limit %d: at least 1000 (a whole company may share one address)", c.ConnLimit)
	}
	if c.UnauthLimit < 1 {
		return fmt.Errorf("conn-limit-unauthenticated %d: at least 1", c.UnauthLimit)
	}
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	if c.APIKey != "" && len(c.APIKey) < 16 {
		return errors.New("an API key must be at least 16 characters")
	}
	return nil
}

// scheme is https when the server serves TLS itself.
func (c config) scheme() string {
	if c.TLSCert != "" || c.Domain != "" {
		return "https"
	}
	return "http"
}

// domains lists Domain's names.
func (c config) domains() []string {
	var out []string
	for _, d := range strings.Split(c.Domain, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, strings.ToLower(d))
		}
	}
	return out
}

// trustedProxies parses TrustedProxies: CIDRs, or single addresses.
func (c config) trustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range strings.Split(c.TrustedProxies, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// publicIPs are the addresses given; none for "auto", which is learned at
// start.
func (c config) publicIPs() []string {
	if c.MediaPublicIP == "auto" {
		return nil
	}
	var ips []string
	for _, ip := range strings.Split(c.MediaPublicIP, ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			ips = append(ips, ip)
		}
	}
	return ips
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// parseConfig applies the environment, then flags, over the defaults.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	c := defaults()
	env := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	env("COCMD_LISTEN", &c.Listen)
	env("COCMD_DATA_DIR", &c.DataDir)
	env("COCMD_PUBLIC_URL", &c.PublicURL)
	env("COCMD_LOG_LEVEL", &c.LogLevel)
	env("COCMD_API_KEY", &c.APIKey)
	env("COCMD_API_KEY_FILE", &c.APIKeyFile)
	env("COCMD_DEBUG_ADDR", &c.DebugAddr)
	if v := getenv("COCMD_AUDIT_RETENTION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return c, fmt.Errorf("COCMD_AUDIT_RETENTION %q: %w", v, err)
		}
		c.AuditRetention = d
	}
	if v := getenv("COCMD_WEBHOOKS_ALLOW_PRIVATE"); v != "" {
		c.WebhooksAllowPrivate = v == "1" || strings.EqualFold(v, "true")
	}
	env("COCMD_MEDIA_LISTEN", &c.MediaListen)
	env("COCMD_MEDIA_PUBLIC_IP", &c.MediaPublicIP)
	env("COCMD_NODE_HOST", &c.NodeHost)
	env("COCMD_STUN", &c.STUN)
	env("COCMD_DEV", &c.Dev)
	env("COCMD_TRUSTED_PROXIES", &c.TrustedProxies)
	env("COCMD_TLS_CERT", &c.TLSCert)
	env("COCMD_TURN_URLS", &c.TURNURLs)
	env("COCMD_TURN_SECRET_FILE", &c.TURNSecretFile)
	env("COCMD_TURN_OFFER", &c.TURNOffer)
	env("COCMD_TLS_KEY", &c.TLSKey)
	env("COCMD_REDIRECT_HTTP", &c.RedirectHTTP)
	env("COCMD_DOMAIN", &c.Domain)
	env("COCMD_ACME_CA", &c.ACMECA)
	env("COCMD_ACME_EMAIL", &c.ACMEEmail)
	env("COCMD_ACME_CA_ROOT", &c.ACMECARoot)
	env("COCMD_NATS", &c.NATS)
	env("COCMD_CLUSTER_LISTEN", &c.ClusterListen)
	env("COCMD_CLUSTER_ROUTES", &c.ClusterRoutes)
	env("COCMD_NATS_LISTEN", &c.NATSListen)
	env("COCMD_CLUSTER_SECRET_FILE", &c.ClusterSecret)
	env("COCMD_NODE", &c.Node)
	for name, dst := range map[string]*int{"COCMD_CONN_LIMIT": &c.ConnLimit, "COCMD_CONN_LIMIT_UNAUTHENTICATED": &c.UnauthLimit} {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return c, fmt.Errorf("%s: %v", name, err)
			}
			*dst = n
		}
	}
	if v := getenv("COCMD_MEDIA_TCP"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("COCMD_MEDIA_TCP: %v", err)
		}
		c.MediaTCP = b
	}
	if v := getenv("COCMD_TURN"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("COCMD_TURN: %v", err)
		}
		c.TURN = b
	}
	if v := getenv("COCMD_MEDIA_LOOPBACK"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("COCMD_MEDIA_LOOPBACK: %v", err)
		}
		c.MediaLoopback = b
	}
	if v := getenv("COCMD_RECONNECT_GRACE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return c, fmt.Errorf("COCMD_RECONNECT_GRACE: %v", err)
		}
		c.ReconnectGrace = d
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", c.Listen, "HTTP listen address (env COCMD_LISTEN)")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory, created on first start (env COCMD_DATA_DIR)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "URL clients reach the server at, for links (env COCMD_PUBLIC_URL)")
	fs.DurationVar(&c.ReconnectGrace, "reconnect-grace", c.ReconnectGrace, "how long a dropped participant keeps its place (env COCMD_RECONNECT_GRACE)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (env COCMD_LOG_LEVEL)")
	fs.StringVar(&c.DebugAddr, "debug-addr", c.DebugAddr, "if set, serve net/http/pprof there; keep it on loopback (env COCMD_DEBUG_ADDR)")
	fs.DurationVar(&c.AuditRetention, "audit-retention", c.AuditRetention, "how long the meetings' audit log entries are kept, at least 48h (webhooks retry for a day); 0 keeps them for ever (env COCMD_AUDIT_RETENTION)")
	fs.BoolVar(&c.WebhooksAllowPrivate, "webhooks-allow-private", c.WebhooksAllowPrivate, "let webhook endpoints be private, loopback or link-local addresses: for development only (env COCMD_WEBHOOKS_ALLOW_PRIVATE)")
	fs.StringVar(&c.APIKey, "api-key", c.APIKey, "API key to create the data directory with, instead of a random one (env COCMD_API_KEY)")
	fs.StringVar(&c.APIKeyFile, "api-key-file", c.APIKeyFile, "read the API key from this file instead, out of process listings (env COCMD_API_KEY_FILE)")
	fs.StringVar(&c.MediaListen, "media-listen", c.MediaListen, "UDP address for all WebRTC media; default: the HTTP port on every interface (env COCMD_MEDIA_LISTEN)")
	fs.StringVar(&c.NodeHost, "node-host", c.NodeHost, "the name or address that reaches this node itself rather than a load balancer: the embedded TURN server's URLs name it, as only the node a client is connected to relays its media; default: the first -media-public-ip, else the public URL's host (env COCMD_NODE_HOST)")
	fs.StringVar(&c.MediaPublicIP, "media-public-ip", c.MediaPublicIP, "public IPs to announce for media, comma-separated, behind 1:1 NAT; auto: ask the -stun server at start (env COCMD_MEDIA_PUBLIC_IP)")
	fs.StringVar(&c.STUN, "stun", c.STUN, "STUN server (host:port) that -media-public-ip auto asks for the public address (env COCMD_STUN)")
	fs.BoolVar(&c.MediaTCP, "media-tcp", c.MediaTCP, "also carry media over TCP (ICE-TCP) on the HTTP(S) port, for clients whose networks block UDP (env COCMD_MEDIA_TCP)")
	fs.BoolVar(&c.TURN, "turn", c.TURN, "run the embedded TURN server (UDP on the media port; TCP and TLS on the HTTP(S) port) and hand clients credentials for it (env COCMD_TURN)")
	fs.StringVar(&c.TURNURLs, "turn-urls", c.TURNURLs, "hand clients these TURN URLs (comma-separated; an external server such as coturn with use-auth-secret) instead of the embedded server's (env COCMD_TURN_URLS)")
	fs.StringVar(&c.TURNSecretFile, "turn-secret-file", c.TURNSecretFile, "file holding the TURN shared secret; default: <data>/turn-secret, created (env COCMD_TURN_SECRET_FILE)")
	fs.StringVar(&c.TURNOffer, "turn-offer", c.TURNOffer, "which of the embedded TURN server's transports clients are told of, comma-separated: udp, tcp, tls; default tls with HTTPS, else udp (env COCMD_TURN_OFFER)")
	fs.BoolVar(&c.MediaLoopback, "media-loopback", c.MediaLoopback, "offer loopback candidates too, for clients on this machine (env COCMD_MEDIA_LOOPBACK)")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "PEM certificate chain: serve HTTPS with it and -tls-key (env COCMD_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "PEM private key of -tls-cert (env COCMD_TLS_KEY)")
	fs.StringVar(&c.RedirectHTTP, "redirect-http", c.RedirectHTTP, "with HTTPS: also listen here (for example :80) and redirect plain HTTP to HTTPS (env COCMD_REDIRECT_HTTP)")
	fs.StringVar(&c.Domain, "domain", c.Domain, "serve HTTPS for these names (comma-separated) with certificates got and renewed over ACME; listens on :443 and :80 unless told otherwise (env COCMD_DOMAIN)")
	fs.StringVar(&c.ACMECA, "acme-ca", c.ACMECA, "ACME directory URL; default Let's Encrypt (env COCMD_ACME_CA)")
	fs.StringVar(&c.ACMEEmail, "acme-email", c.ACMEEmail, "contact for the ACME account, for expiry notices (env COCMD_ACME_EMAIL)")
	fs.StringVar(&c.ACMECARoot, "acme-ca-root", c.ACMECARoot, "PEM roots to trust for the ACME server's own HTTPS, for a private CA (env COCMD_ACME_CA_ROOT)")
	fs.DurationVar(&c.ACMERenewCheck, "acme-renew-check", c.ACMERenewCheck, "how often certificates are checked for renewal")
	fs.IntVar(&c.ConnLimit, "conn-limit", c.ConnLimit, "realtime connections per client address (env COCMD_CONN_LIMIT)")
	fs.IntVar(&c.MaxConns, "max-connections", c.MaxConns, "realtime connections this node takes; past it /readyz says 503 and new ones are refused, for a balancer to send them elsewhere; 0: no limit")
	fs.DurationVar(&c.PingInterval, "ping-interval", c.PingInterval, "how often each realtime connection is pinged; a client silent for three is dropped (and a client notices a frozen server as soon)")
	fs.IntVar(&c.UnauthLimit, "conn-limit-unauthenticated", c.UnauthLimit, "connections without a valid token per address (env COCMD_CONN_LIMIT_UNAUTHENTICATED)")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", c.TrustedProxies, "comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client (env COCMD_TRUSTED_PROXIES)")
	fs.StringVar(&c.NATS, "nats", c.NATS, "cluster mode: keep the state in this NATS cluster's JetStream (comma-separated URLs) instead of SQLite (env COCMD_NATS)")
	fs.StringVar(&c.ClusterListen, "cluster-listen", c.ClusterListen, "cluster mode with an embedded NATS server: its routes listen here (host:port) (env COCMD_CLUSTER_LISTEN)")
	fs.StringVar(&c.ClusterRoutes, "cluster-routes", c.ClusterRoutes, "the embedded NATS servers' route addresses (comma-separated host:port, this node's may be among them) (env COCMD_CLUSTER_ROUTES)")
	fs.StringVar(&c.ClusterSecret, "cluster-secret-file", c.ClusterSecret, "a file holding the secret the embedded NATS servers require of each other and of clients; required when -cluster-listen is not loopback (env COCMD_CLUSTER_SECRET_FILE)")
	fs.StringVar(&c.NATSListen, "nats-listen", c.NATSListen, "the embedded NATS server's client address; default 127.0.0.1 on a free port (env COCMD_NATS_LISTEN)")
	fs.StringVar(&c.Node, "node", c.Node, "this node's name in the cluster, unique and stable across restarts; default host name and HTTP port (env COCMD_NODE)")
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "cluster mode: replicas of the state; 0: 3 with three NATS servers or more, else 1")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "cluster mode: how long a dead node's meetings wait before another node takes them over")
	fs.StringVar(&c.Dev, "dev", c.Dev, "development mode: the demo app can make demo webinars without the API key; auto: on when listening on loopback (env COCMD_DEV)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if ds := c.domains(); len(ds) > 0 {
		// A server with a name of its own: HTTPS on 443, and 80 for the
		// HTTP-01 challenge and redirects, unless told otherwise.
		if c.Listen == defaults().Listen {
			c.Listen = ":443"
		}
		if c.RedirectHTTP == "" {
			c.RedirectHTTP = ":80"
		}
		if c.PublicURL == "" {
			_, port, _ := net.SplitHostPort(c.Listen)
			c.PublicURL = "https://" + ds[0]
			if port != "443" {
				c.PublicURL = "https://" + net.JoinHostPort(ds[0], port)
			}
		}
	}
	if host, _, _ := net.SplitHostPort(c.Listen); c.PublicURL == "" && host != "" {
		c.PublicURL = c.scheme() + "://" + c.Listen
	}
	if c.APIKeyFile != "" {
		if c.APIKey != "" {
			return c, errors.New("give the API key in a file or directly, not both")
		}
		b, err := os.ReadFile(c.APIKeyFile)
		if err != nil {
			return c, fmt.Errorf("API key file: %w", err)
		}
		c.APIKey = strings.TrimSpace(string(b))
	}
	return c, c.Validate()
}

func serve(args []string) error {
	cfg, err := parseConfig(args, os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("TLS certificate %s and key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	}
	// Whatever the umask, what cocmd creates is its user's alone.
	syscall.Umask(0o077)
	dir, err := datadir.Open(cfg.DataDir)
	if err != nil {
		return err
	}
	defer dir.Close()
	// The state of record: SQLite in the data directory, or, in cluster
	// mode, JetStream, shared with the other nodes.
	var (
		st    store.Store
		db    *sqlite.DB
		cn    *clusterNode
		owner meeting.Ownership
		keys  server.Keys
	)
	if cfg.clustered() {
		if cn, err = joinCluster(ctx, cfg, cfg.DataDir, log); err != nil {
			return err
		}
		defer cn.close()
		st, owner = cn.store, cn.node
		if keys, err = server.Bootstrap(ctx, st, cfg.APIKey, true); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		if keys.Keyring, err = server.OpenSharedKeyring(ctx, st); err != nil {
			return err
		}
	} else {
		if db, err = sqlite.Open(ctx, dir.DBPath()); err != nil {
			return err
		}
		defer db.Close()
		st = db
		if keys, err = server.Bootstrap(ctx, db, cfg.APIKey, dir.New); err != nil {
			return fmt.Errorf("data directory %s: %w", cfg.DataDir, err)
		}
		if keys.Keyring, err = server.OpenKeyring(ctx, dir.KeysPath(), db); err != nil {
			return err
		}
	}
	if err := dir.Secure(); err != nil {
		return err
	}
	switch {
	case keys.Generated:
		fmt.Printf("New data directory %s.\nAPI key (shown once; keep it): %s\n", cfg.DataDir, keys.NewAPIKey)
	case dir.New && !cfg.clustered():
		fmt.Printf("New data directory %s, with the API key you gave.\n", cfg.DataDir)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	udp, err := net.ListenUDP("udp", udpAddr(cfg.mediaAddr()))
	if err != nil {
		ln.Close()
		return fmt.Errorf("media: %w", err)
	}
	publicIPs := cfg.publicIPs()
	if cfg.MediaPublicIP == "auto" {
		ip, err := media.DiscoverPublicIP(udp, cfg.STUN, 5*time.Second)
		if err != nil {
			ln.Close()
			udp.Close()
			return fmt.Errorf("-media-public-ip auto: %w", err)
		}
		log.Info("public address learned over STUN", "ip", ip, "stun", cfg.STUN)
		publicIPs = []string{ip.String()}
	}
	ice, secret, err := cfg.iceServers(ln, udp, tlsCfg != nil || len(cfg.domains()) > 0)
	if err != nil {
		ln.Close()
		udp.Close()
		return err
	}
	if len(ice.URLs) == 0 {
		// The embedded server relays only to this node's media: its URLs
		// name this node.
		ice.Host = cfg.NodeHost
		if ice.Host == "" && len(publicIPs) > 0 {
			ice.Host = publicIPs[0]
		}
		if u, err := url.Parse(cfg.PublicURL); ice.Secret != nil && ice.Host == "" && cfg.clustered() && err == nil && !isLoopback(u.Hostname()) {
			log.Warn("in a cluster, TURN URLs name the public URL's host, which may reach another node than the client's: set -node-host (or -media-public-ip)")
		}
	}
	var turnSrv *relay.Server
	if cfg.TURN && len(cfg.turnURLs()) == 0 {
		// Made before the SFU, which hands it the TURN datagrams of the
		// socket they share; fed its TCP connections once the port is
		// split, below.
		turnSrv, err = newRelay(secret, udp, publicIPs, log)
		if err != nil {
			ln.Close()
			udp.Close()
			return err
		}
		defer turnSrv.Close()
	}
	// The HTTP(S) port carries ICE-TCP and TURN over TCP too, for clients
	// whose networks let no UDP through: told apart by their first bytes.
	webLn, iceLn := net.Listener(ln), net.Listener(nil)
	if cfg.MediaTCP || turnSrv != nil {
		routes := server.SplitTCP(ln, 10*time.Second)
		webLn = routes.Web
		if cfg.MediaTCP {
			iceLn = routes.ICE
		} else {
			go dropAll(routes.ICE)
		}
		if turnSrv != nil {
			go turnSrv.ServeTCP(routes.TURN)
		} else {
			routes.TURN.Close()
		}
	}
	mcfg := media.Config{Conn: udp, TCP: iceLn, PublicIPs: publicIPs, Loopback: cfg.MediaLoopback, Logger: log}
	if cn != nil {
		mcfg.Relay = cn.node
	}
	if turnSrv != nil {
		mcfg.Divert = turnSrv
	}
	sfu, err := media.New(mcfg)
	if err != nil {
		ln.Close()
		udp.Close()
		return err
	}
	defer sfu.Close()
	mtc := meeting.Config{Grace: cfg.ReconnectGrace, Logger: log, Media: sfu, Ownership: owner}
	if cn != nil {
		mtc.Bus = cn.node
	}
	reg := meeting.NewRegistry(st, mtc)
	// 256 KiB of kernel buffer per connection is hundreds of events; past
	// that, the meeting's queue limit decides, instead of the kernel
	// growing its buffer to megabytes for a client that does not read.
	web, err := iofs.Sub(cocmd.Web, "web")
	if err != nil {
		return err
	}
	proxies, _ := cfg.trustedProxies() // checked by Validate
	deliverer := webhook.NewDeliverer(webhook.Config{Store: st, Body: server.WebhookBody, ID: server.WebhookID,
		Client: webhook.NewClient(10*time.Second, cfg.WebhooksAllowPrivate), Logger: log})
	whctx, stopWebhooks := context.WithCancel(context.Background())
	whDone := make(chan struct{})
	go func() {
		defer close(whDone)
		if cn != nil {
			// One node of the cluster delivers at a time.
			cn.node.Exclusive(whctx, "webhooks", deliverer.Run)
			return
		}
		deliverer.Run(whctx)
	}()
	defer func() { stopWebhooks(); <-whDone }()
	if db != nil {
		go prune(whctx, db, cfg.AuditRetention, log)
	}
	var ready, cutOff func() error
	var forward func(ctx context.Context, node string, r *http.Request, body []byte, w http.ResponseWriter) error
	var metrics func(w io.Writer) error
	if cn != nil {
		ready, cutOff, forward, metrics = cn.ready, cn.node.Ready, cn.node.Forward, cn.node.WriteMetrics
		// Cut off, the node's connections to other nodes' meetings are
		// dropped by their owners: their clients reconnect elsewhere.
		cn.node.OnCutOff(func() { reg.DropRemote("this node lost touch with the cluster: reconnect through another") })
	}
	srv := server.New(server.Config{OpenAPI: cocmd.OpenAPI, Logger: log, SendBuffer: 256 << 10, Media: sfu, Ready: ready, CutOff: cutOff, Forward: forward, Metrics: metrics, MaxConnections: cfg.MaxConns, PingInterval: cfg.PingInterval,
		Webhooks: deliverer, WebhooksAllowPrivate: cfg.WebhooksAllowPrivate,
		Limits: server.ConnLimits{Authenticated: cfg.ConnLimit, Unauthenticated: cfg.UnauthLimit, TrustedProxies: proxies}, HSTS: cfg.scheme() == "https",
		Web: web, Dev: cfg.dev(), PublicURL: strings.TrimSuffix(cfg.PublicURL, "/"), ICE: ice, TURN: turnSrv}, st, reg, keys)
	if cfg.DebugAddr != "" {
		go func() {
			// net/http/pprof registers on http.DefaultServeMux.
			log.Info("debug server", "addr", cfg.DebugAddr, "err", http.ListenAndServe(cfg.DebugAddr, nil))
		}()
	}
	var acme *server.ACME
	if ds := cfg.domains(); len(ds) > 0 {
		var roots *x509.CertPool
		if cfg.ACMECARoot != "" {
			pem, err := os.ReadFile(cfg.ACMECARoot)
			if err != nil {
				ln.Close()
				reg.Close()
				return fmt.Errorf("ACME CA roots: %w", err)
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				ln.Close()
				reg.Close()
				return fmt.Errorf("ACME CA roots %s: no PEM certificate in it", cfg.ACMECARoot)
			}
		}
		var storage certmagic.Storage
		if cn != nil {
			// Every node serves the same certificates: one obtains and
			// renews them for all, any answers the CA's challenges.
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			storage, err = cn.store.CertStorage(sctx)
			cancel()
			if err != nil {
				ln.Close()
				reg.Close()
				return fmt.Errorf("ACME storage in the cluster: %w", err)
			}
		}
		if acme, err = server.NewACME(server.ACMEConfig{Domains: ds, Dir: filepath.Join(cfg.DataDir, "acme"), Storage: storage, CA: cfg.ACMECA,
			Email: cfg.ACMEEmail, Roots: roots, RenewCheck: cfg.ACMERenewCheck, Logger: log}); err != nil {
			ln.Close()
			reg.Close()
			return err
		}
		defer acme.Stop()
		tlsCfg = acme.TLSConfig()
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	handler := srv.Handler()
	if cn != nil {
		stopForwarded, err := cn.node.ServeForwarded(handler)
		if err != nil {
			ln.Close()
			reg.Close()
			return err
		}
		defer stopForwarded()
	}
	hs := server.HTTPServer(handler, server.HTTPTimeouts{}, errLog)
	served := make(chan error, 2)
	httpLn, turnTLS := srv.WebListener(webLn, tlsCfg)
	hs.TLSConfig = tlsCfg
	go func() { served <- hs.Serve(httpLn) }()
	if turnTLS != nil {
		if turnSrv != nil {
			go turnSrv.ServeTCP(turnTLS)
		} else {
			turnTLS.Close()
		}
	}
	var redirect *http.Server
	if cfg.RedirectHTTP != "" {
		rln, err := net.Listen("tcp", cfg.RedirectHTTP)
		if err != nil {
			hs.Close()
			reg.Close()
			return fmt.Errorf("redirect listener: %w", err)
		}
		_, tlsPort, _ := net.SplitHostPort(ln.Addr().String())
		h := server.RedirectToHTTPS(tlsPort)
		if acme != nil {
			h = acme.HTTPHandler(h) // the HTTP-01 challenge comes here
		}
		redirect = server.HTTPServer(h, server.HTTPTimeouts{}, errLog)
		go func() { served <- redirect.Serve(rln) }()
	}
	if acme != nil {
		// The listeners are up: the CA's challenges can reach them.
		mctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		err := acme.Manage(mctx)
		cancel()
		if err != nil {
			hs.Close()
			if redirect != nil {
				redirect.Close()
			}
			reg.Close()
			srv.Wait()
			return fmt.Errorf("HTTPS for %s: %w", cfg.Domain, err)
		}
	}
	addr := cfg.scheme() + "://" + ln.Addr().String()
	log.Info("cocmd serving", "addr", addr, "public_url", strings.TrimSuffix(cfg.PublicURL, "/"), "data", cfg.DataDir, "cluster", cfg.clustered())
	fmt.Printf("cocmd listening on %s (media on udp %s)\n", addr, udp.LocalAddr())
	if turnSrv != nil {
		log.Info("TURN server", "udp", udp.LocalAddr(), "tcp", ln.Addr(), "tls", tlsCfg != nil)
	}
	if cfg.dev() {
		fmt.Printf("Development mode: open %s/ to start a demo webinar.\n", addr)
	}

	select {
	case err = <-served:
	case <-ctx.Done():
		log.Info("shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- hs.Shutdown(sctx) }()
	if redirect != nil {
		redirect.Close()
	}
	reg.Close() // closes every realtime client with "going away"
	srv.Wait()
	if serr := <-shut; serr != nil && err == nil {
		err = serr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// udpAddr resolves a UDP listen address checked by Validate; an
// unresolvable name leaves it to ListenUDP's error.
func udpAddr(addr string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return &net.UDPAddr{}
	}
	return a
}

// iceServers is what the server tells clients about TURN, and the shared
// secret of the credentials: the external server's URLs and secret, or the
// embedded server's ports and a secret of the data directory's.
func (c config) iceServers(ln net.Listener, udp *net.UDPConn, tls bool) (server.ICEServers, []byte, error) {
	if urls := c.turnURLs(); len(urls) > 0 {
		secret, err := relay.LoadSecret(c.TURNSecretFile, false)
		return server.ICEServers{Secret: secret, URLs: urls}, secret, err
	}
	if !c.TURN {
		return server.ICEServers{}, nil, nil
	}
	path := c.TURNSecretFile
	if path == "" {
		path = filepath.Join(c.DataDir, "turn-secret")
	}
	secret, err := relay.LoadSecret(path, c.TURNSecretFile == "")
	if err != nil {
		return server.ICEServers{}, nil, err
	}
	offer, err := c.turnOffer(tls)
	if err != nil {
		return server.ICEServers{}, nil, err
	}
	if offer["tls"] && !tls {
		return server.ICEServers{}, nil, errors.New("-turn-offer tls needs HTTPS (-tls-cert and -tls-key, or -domain)")
	}
	ice := server.ICEServers{Secret: secret}
	port := ln.Addr().(*net.TCPAddr).Port
	if offer["udp"] {
		ice.UDPPort = udp.LocalAddr().(*net.UDPAddr).Port
	}
	if offer["tcp"] {
		ice.TCPPort = port
	}
	if offer["tls"] {
		ice.TLSPort = port
	}
	return ice, secret, nil
}

// newRelay starts the embedded TURN server on the SFU's socket: it may
// relay to the socket's addresses (the public ones, and every interface's
// when it listens on all) and to nothing else.
func newRelay(secret []byte, udp *net.UDPConn, publicIPs []string, log *slog.Logger) (*relay.Server, error) {
	local := udp.LocalAddr().(*net.UDPAddr).AddrPort()
	bind := local.Addr().Unmap()
	var ips []netip.Addr
	if bind.IsUnspecified() {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return nil, fmt.Errorf("TURN: the machine's addresses: %w", err)
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				ips = append(ips, p.Addr())
			}
		}
	} else {
		ips = append(ips, bind)
	}
	var relayIP netip.Addr
	for _, s := range publicIPs {
		if ip, err := netip.ParseAddr(s); err == nil {
			ips = append(ips, ip)
			if !relayIP.IsValid() {
				relayIP = ip
			}
		}
	}
	return relay.New(relay.Config{Secret: secret, UDP: udp, MediaPort: int(local.Port()), MediaBind: bind,
		MediaIPs: ips, RelayIP: relayIP, Logger: log.With("component", "turn")})
}

// dropAll closes every connection ln accepts, until it is closed.
func dropAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// attemptRetention is how long webhook delivery attempts are kept.
const attemptRetention = 30 * 24 * time.Hour

// prune deletes, every hour until ctx ends, the log entries older than
// retention (none if it is 0) and the webhook attempts older than
// attemptRetention.
func prune(ctx context.Context, db *sqlite.DB, retention time.Duration, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		var logBefore time.Time
		if retention > 0 {
			logBefore = now.Add(-retention)
		}
		entries, attempts, err := db.Prune(ctx, logBefore, now.Add(-attemptRetention))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("pruning the audit log", "err", err)
		case entries+attempts > 0:
			log.Info("pruned the audit log", "entries", entries, "webhook_attempts", attempts)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
