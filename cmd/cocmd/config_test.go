package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	env := map[string]string{"COCMD_LISTEN": "127.0.0.1:9000", "COCMD_RECONNECT_GRACE": "10s", "COCMD_DATA_DIR": "/tmp/x"}
	c, err := parseConfig([]string{"-listen", "127.0.0.1:9001"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9001" || c.ReconnectGrace != 10*time.Second || c.DataDir != "/tmp/x" || c.PublicURL != "http://127.0.0.1:9001" {
		t.Fatalf("%+v", c)
	}
	for _, bad := range [][]string{
		{"-listen", "nonsense"},
		{"-reconnect-grace", "1ms"},
		{"-log-level", "loud"},
		{"-api-key", "short"},
		{"-data", ""},
		{"-dev", "maybe"},
		{"-media-listen", "nowhere"},
		{"-media-public-ip", "not-an-ip"},
		{"-debug-addr", ":6060"},
		{"-debug-addr", "0.0.0.0:6060"},
		{"-debug-addr", "10.0.0.5:6060"},
		{"-api-key-file", "/nonexistent/key"},
		{"-tls-cert", "cert.pem"},
		{"-tls-key", "key.pem"},
		{"-redirect-http", ":80"},
		{"-tls-cert", "c", "-tls-key", "k", "-redirect-http", "eighty"},
		{"-domain", "meet.example.com", "-tls-cert", "c", "-tls-key", "k"},
		{"-domain", "203.0.113.7"},
		{"-domain", "meet.example.com:443"},
		{"-domain", "meet.example.com", "-acme-renew-check", "1ms"},
		{"-media-public-ip", "auto"},
		{"-api-key-file", "/etc/hostname", "-api-key", "ck_0123456789abcdef"},
		{"-turn-offer", "udp,sctp"},
		{"-turn-urls", "turn:turn.example.com:3478"},                                       // no secret
		{"-turn-urls", "stun:stun.example.com:3478", "-turn-secret-file", "/etc/hostname"}, // not TURN
		{"-audit-retention", "1h"},                                                         // shorter than webhooks' retries
		{"-audit-retention", "a while"},
	} {
		if _, err := parseConfig(bad, func(string) string { return "" }); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := parseConfig(nil, func(k string) string {
		if k == "COCMD_RECONNECT_GRACE" {
			return "soon"
		}
		return ""
	}); err == nil {
		t.Error("bad COCMD_RECONNECT_GRACE accepted")
	}
	c, err = parseConfig([]string{"-audit-retention", "2160h", "-webhooks-allow-private"}, func(string) string { return "" })
	if err != nil || c.AuditRetention != 90*24*time.Hour || !c.WebhooksAllowPrivate {
		t.Errorf("audit retention and private webhooks: %+v %v", c, err)
	}
	if _, err := parseConfig(nil, func(k string) string {
		if k == "COCMD_AUDIT_RETENTION" {
			return "forever"
		}
		return ""
	}); err == nil {
		t.Error("bad COCMD_AUDIT_RETENTION accepted")
	}
}

// Development mode is on by default on loopback only; the media port
// follows the HTTP one unless set.
func TestParseConfig_devAndMedia(t *testing.T) {
	none := func(string) string { return "" }
	for _, c := range []struct {
		args []string
		dev  bool
	}{
		{nil, true}, // localhost:8080
		{[]string{"-listen", "127.0.0.1:1"}, true},
		{[]string{"-listen", "[::1]:1"}, true},
		{[]string{"-listen", ":8080"}, false},
		{[]string{"-listen", "10.0.0.5:8080"}, false},
		{[]string{"-listen", ":8080", "-dev", "true"}, true},
		{[]string{"-dev", "false"}, false},
		// Behind a reverse proxy under a public name: not development.
		{[]string{"-public-url", "https://meet.example.com"}, false},
		{[]string{"-public-url", "http://127.0.0.1:8080"}, true},
		{[]string{"-public-url", "https://meet.example.com", "-dev", "true"}, true},
	} {
		cfg, err := parseConfig(c.args, none)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.dev() != c.dev {
			t.Errorf("%v: dev %v", c.args, cfg.dev())
		}
	}
	cfg, _ := parseConfig([]string{"-listen", "127.0.0.1:9002"}, none)
	if cfg.mediaAddr() != ":9002" || !cfg.MediaLoopback {
		t.Errorf("media %q loopback %v", cfg.mediaAddr(), cfg.MediaLoopback)
	}
	cfg, _ = parseConfig(nil, func(k string) string {
		return map[string]string{"COCMD_MEDIA_LISTEN": "0.0.0.0:7000", "COCMD_MEDIA_PUBLIC_IP": "203.0.113.1, 203.0.113.2", "COCMD_MEDIA_LOOPBACK": "false"}[k]
	})
	if cfg.mediaAddr() != "0.0.0.0:7000" || len(cfg.publicIPs()) != 2 || cfg.MediaLoopback {
		t.Errorf("from the environment: %+v", cfg)
	}
}

// The API key can come from a file, so that it never shows in a process
// listing; the debug listener is loopback only.
func TestParseConfig_keyFileAndDebug(t *testing.T) {
	f := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(f, []byte("ck_from_a_file_0123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig([]string{"-api-key-file", f, "-debug-addr", "127.0.0.1:6060"}, func(string) string { return "" })
	if err != nil || c.APIKey != "ck_from_a_file_0123456" {
		t.Fatalf("%q %v", c.APIKey, err)
	}
}

// A server with a name serves HTTPS on 443 and redirects 80, and its links
// say https and the name, unless told otherwise.
func TestParseConfig_domain(t *testing.T) {
	none := func(string) string { return "" }
	c, err := parseConfig([]string{"-domain", "Meet.Example.com,www.example.com"}, none)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":443" || c.RedirectHTTP != ":80" || c.PublicURL != "https://meet.example.com" || c.scheme() != "https" || c.dev() {
		t.Fatalf("%+v", c)
	}
	if d := c.domains(); len(d) != 2 || d[0] != "meet.example.com" {
		t.Fatalf("domains %v", d)
	}
	c, err = parseConfig([]string{"-domain", "meet.example.com", "-listen", ":8443", "-redirect-http", ":8080"}, none)
	if err != nil || c.PublicURL != "https://meet.example.com:8443" || c.RedirectHTTP != ":8080" {
		t.Fatalf("%+v %v", c, err)
	}
}

// The public address can be learned at start, from a STUN server.
func TestParseConfig_publicIPAuto(t *testing.T) {
	c, err := parseConfig([]string{"-media-public-ip", "auto", "-stun", "stun.example.com:3478"}, func(string) string { return "" })
	if err != nil || c.publicIPs() != nil || c.STUN != "stun.example.com:3478" {
		t.Fatalf("%+v %v", c, err)
	}
}

// Cluster flags: the modes exclude each other, an embedded server off
// loopback needs its secret, and the rest is checked.
func TestParseConfig_cluster(t *testing.T) {
	none := func(string) string { return "" }
	for _, bad := range [][]string{
		{"-nats", "nats://a:4222", "-cluster-listen", "127.0.0.1:6222"},
		{"-cluster-routes", "127.0.0.1:6222"}, // without -cluster-listen
		{"-cluster-listen", "10.0.0.1:6222"},  // off loopback, no secret
		{"-cluster-listen", "127.0.0.1:6222", "-nats-listen", "0.0.0.0:4222"},
		{"-cluster-listen", "nowhere"},
		{"-nats", "nats://a:4222", "-node", "has space"},
		{"-nats", "nats://a:4222", "-replicas", "7"},
		{"-nats", "nats://a:4222", "-lease-ttl", "10ms"},
		{"-nats", "nats://a:4222", "-audit-retention", "72h"},
		{"-ping-interval", "1ms"},
		{"-max-connections", "-1"},
		{"-node-host", "n1.example.com:3478"},
		{"-node-host", "https://n1.example.com"},
	} {
		if _, err := parseConfig(bad, none); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	for _, good := range []string{"n1.example.com", "203.0.113.7", "2001:db8::7"} {
		if _, err := parseConfig([]string{"-node-host", good}, none); err != nil {
			t.Errorf("-node-host %s: %v", good, err)
		}
	}
	c, err := parseConfig([]string{"-cluster-listen", "10.0.0.1:6222", "-cluster-secret-file", "/etc/secret",
		"-cluster-routes", "10.0.0.1:6222,10.0.0.2:6222,10.0.0.3:6222", "-node", "n1"}, none)
	if err != nil {
		t.Fatal(err)
	}
	if !c.clustered() || c.replicas() != 3 || c.nodeID() != "n1" {
		t.Fatalf("%+v: replicas %d", c, c.replicas())
	}
	if c, _ := parseConfig([]string{"-nats", "nats://a:4222"}, none); c.replicas() != 1 {
		t.Fatalf("one NATS URL: replicas %d", c.replicas())
	}
}
