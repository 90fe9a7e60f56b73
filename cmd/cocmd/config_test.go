package main

import (
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
