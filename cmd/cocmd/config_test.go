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
