package main

import (
	"bytes"
	"context"
	"database/sql"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// A second server on a data directory in use exits at once, naming the
// directory; the first one goes on serving.
func TestBinary_secondServerRefused(t *testing.T) {
	bin := binary(t)
	addr, dir := freeAddr(t), t.TempDir()
	first := startBinary(t, bin, addr, dir)
	defer func() { first.Process.Kill(); first.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "-listen", freeAddr(t), "-data", dir, "-api-key", testKey).CombinedOutput()
	if err == nil || !strings.Contains(string(out), dir) || !strings.Contains(string(out), "another cocmd") {
		t.Fatalf("second server: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, bin, "rotate-api-key", "-data", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another cocmd") {
		t.Fatalf("rotate-api-key beside a running server: %v\n%s", err, out)
	}
	rest(t, "http://"+addr, "GET", "/v1/meetings", nil, nil) // the first still serves
	// A backup needs no lock: it runs beside the server.
	bak := filepath.Join(t.TempDir(), "cocmd-backup.db")
	if out, err := exec.CommandContext(ctx, bin, "backup", "-data", dir, "-out", bak).CombinedOutput(); err != nil {
		t.Fatalf("backup beside a running server: %v\n%s", err, out)
	}
	if head, _ := os.ReadFile(bak); !strings.HasPrefix(string(head), "SQLite format 3") {
		t.Fatal("the backup is not a database")
	}

	// Once it has stopped, the signing key can be rotated offline; with
	// no grace, the old key's tokens are refused from the next start.
	var m struct{ ID string }
	rest(t, "http://"+addr, "POST", "/v1/meetings", map[string]any{"title": "T", "type": "WEBINAR"}, &m)
	var p struct{ Token string }
	rest(t, "http://"+addr, "POST", "/v1/meetings/"+m.ID+"/participants", map[string]any{"name": "V", "user_id": "v", "preset": "webinar_viewer"}, &p)
	first.Process.Signal(syscall.SIGTERM)
	first.Wait()
	if out, err := exec.CommandContext(ctx, bin, "rotate-signing-key", "-data", dir, "-retire-after", "0s").CombinedOutput(); err != nil {
		t.Fatalf("rotate-signing-key: %v\n%s", err, out)
	}
	first = startBinary(t, bin, addr, dir)
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/token", nil)
	req.Header.Set("Authorization", "Bearer "+p.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a token of the retired key: %d", resp.StatusCode)
	}
}

// While another process holds the database's write lock, a grant is
// refused with UNAVAILABLE (503) and changes nothing, not even after a
// restart; once the lock is gone, grants are acknowledged and survive a
// SIGKILL. The data directory is 0700 and its files 0600 though it
// existed with other modes, and a key the operator gave is never printed.
func TestBinary_lockedStoreAndModes(t *testing.T) {
	bin := binary(t)
	addr, dir := freeAddr(t), filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	stdout, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	cmd := exec.Command(bin, "serve", "-listen", addr, "-data", dir, "-api-key", testKey, "-log-level", "error")
	cmd.Stdout = stdout // a file: the child writes it directly
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitListening(t, base)
	if printed, _ := os.ReadFile(stdout.Name()); strings.Contains(string(printed), testKey) || len(printed) == 0 {
		t.Errorf("the given API key was printed (or nothing was):\n%s", printed)
	}
	var m struct{ ID string }
	rest(t, base, "POST", "/v1/meetings", map[string]any{"title": "T", "type": "WEBINAR"}, &m)
	rest(t, base, "POST", "/v1/meetings/"+m.ID+"/participants", map[string]any{"name": "V", "user_id": "v", "preset": "webinar_viewer"}, nil)
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", e.Name(), fi.Mode().Perm())
		}
	}

	// Another process's write lock, as the sqlite3 shell or a backup
	// takes it.
	other, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "cocmd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	status, body := post(t, base+"/v1/meetings/"+m.ID+"/stage/grant", `{"user_ids":["v"]}`)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "UNAVAILABLE") {
		t.Fatalf("grant under the lock: %d %s", status, body)
	}
	conn.ExecContext(context.Background(), "ROLLBACK")
	conn.Close()
	var live struct{ Requests []any }
	rest(t, base, "GET", "/v1/meetings/"+m.ID+"/live", nil, &live)

	restart := func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		cmd = startBinary(t, bin, addr, dir)
	}
	viewerStatus := func() string {
		var ps struct {
			Data []struct {
				StageStatus string `json:"stage_status"`
			}
		}
		rest(t, base, "GET", "/v1/meetings/"+m.ID+"/participants", nil, &ps)
		return ps.Data[0].StageStatus
	}
	restart()
	if st := viewerStatus(); st != "OFF_STAGE" {
		t.Fatalf("after a refused grant and a restart: %s", st)
	}
	status, body = post(t, base+"/v1/meetings/"+m.ID+"/stage/grant", `{"user_ids":["v"]}`)
	if status != http.StatusOK {
		t.Fatalf("grant: %d %s", status, body)
	}
	restart()
	if st := viewerStatus(); st != "ACCEPTED_TO_JOIN_STAGE" {
		t.Fatalf("an acknowledged grant after SIGKILL: %s", st)
	}
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func waitListening(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listened: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
