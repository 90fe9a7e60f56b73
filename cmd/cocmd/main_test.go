package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cocmd-test-")
	if err != nil {
		panic(err)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// pebble's validation authority (the ACME test server) has
		// no way to stop its worker.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks")); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

// TestBinary_bench runs a small stage benchmark end to end, so the bench
// command cannot rot: it starts its own server and prints its table.
func TestBinary_bench(t *testing.T) {
	bin := binary(t)
	out, err := exec.Command(bin, "bench", "stage", "-n", "40", "-rounds", "2", "-server-cpu", "-1", "-load-cpu", "-1").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var row string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "| 40 |") {
			row = line
		}
	}
	if cells := strings.Split(row, "|"); len(cells) != 13 || !strings.Contains(cells[2], "ms") {
		t.Fatalf("no result row for 40 viewers:\n%s", out)
	}
}

// TestBinary_benchMedia runs a small media benchmark end to end: a
// publisher of the test clips, three subscribers in two load processes, a
// kick; over UDP, then relayed over TURN/TLS (a CA of the run's own).
func TestBinary_benchMedia(t *testing.T) {
	bin := binary(t)
	out, err := exec.Command(bin, "bench", "media", "-n", "3", "-window", "1s", "-procs", "2", "-server-cpu", "-1", "-load-cpu", "-1",
		"-paths", "udp,turn-tls", "-media", filepath.Join("..", "..", "..", "shared", "media")).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, path := range []string{benchPaths["udp"], benchPaths["turn-tls"]} {
		var row string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "| "+path+" | 3 |") {
				row = line
			}
		}
		if cells := strings.Split(row, "|"); len(cells) != 15 || !strings.Contains(cells[3], "µs") {
			t.Fatalf("no result row for 3 subscribers over %s:\n%s", path, out)
		}
	}
}
