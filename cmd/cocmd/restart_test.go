package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
	"github.com/cocmd/cocmd/stage"
)

const testKey = "ck_restart_test_key_42"

// binary builds cocmd once for the package's tests.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		builtBin = filepath.Join(buildDir, "cocmd")
		cmd := exec.Command("go", "build", "-race", "-o", builtBin, ".")
		cmd.Stderr = os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		t.Fatalf("building cocmd: %v", buildErr)
	}
	return builtBin
}

var (
	buildDir  string // made by TestMain
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startBinary runs cocmd serve and waits until it listens.
func startBinary(t *testing.T, bin, addr, dir string) *exec.Cmd {
	t.Helper()
	cmd, err := startServe([]string{bin, "serve", "-listen", addr, "-data", dir, "-api-key", testKey, "-log-level", "warn"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// joinAs adds participant uid to meeting mid and joins as it, with an SDK
// client that reconnects quickly (closed when the test ends).
func joinAs(ctx context.Context, t *testing.T, base, mid, uid, preset string) *client.Meeting {
	t.Helper()
	return joinAt(ctx, t, base, base, mid, uid, preset, &client.Options{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond})
}

// joinAt adds participant uid to meeting mid through the REST API at
// restBase and joins as it at joinBase with opts (closed when the test
// ends).
func joinAt(ctx context.Context, t *testing.T, restBase, joinBase, mid, uid, preset string, opts *client.Options) *client.Meeting {
	t.Helper()
	var p struct{ Token string }
	rest(t, restBase, "POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": uid, "user_id": uid, "preset": preset}, &p)
	c, err := client.Join(ctx, joinBase, p.Token, opts)
	if err != nil {
		t.Fatalf("%s joining at %s: %v", uid, joinBase, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// publishCamera puts host on stage and has it publish synthetic camera
// video until ctx ends.
func publishCamera(ctx context.Context, t *testing.T, host *client.Meeting) {
	t.Helper()
	if err := host.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	src, err := mediasource.Synthetic(30, 500_000)
	if err != nil {
		t.Fatal(err)
	}
	go src.Play(ctx, true)
	if err := host.Media.Publish(ctx, src.LocalTrack(client.SourceCamera)); err != nil {
		t.Fatal(err)
	}
}

func rest(t *testing.T, base, method, path string, in, out any) {
	t.Helper()
	b, _ := json.Marshal(in)
	var body io.Reader
	if in != nil {
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, body)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		json.Unmarshal(raw, out)
	}
}

func waitEvent(t *testing.T, m *client.Meeting, name string) {
	t.Helper()
	waitEventWithin(t, m, name, 30*time.Second)
}

// waitEventWithin waits for event name on m for at most d.
func waitEventWithin(t *testing.T, m *client.Meeting, name string, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-m.Events():
			if !ok {
				t.Fatalf("waiting for %s: client stopped: %v", name, m.Err())
			}
			if e.Name() == name {
				return
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", name)
		}
	}
}

// TestBinary_killAndRestart SIGKILLs the real binary mid-meeting and starts
// it again: statuses and the request order come back, and the SDK clients
// resume by themselves. Then SIGTERM stops it cleanly.
func TestBinary_killAndRestart(t *testing.T) {
	bin := binary(t)
	addr, dir := freeAddr(t), t.TempDir()
	base := "http://" + addr
	cmd := startBinary(t, bin, addr, dir)
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var m struct{ ID string }
	rest(t, base, "POST", "/v1/meetings", map[string]any{"title": "Kill me", "type": "WEBINAR"}, &m)
	join := func(uid, preset string) *client.Meeting { return joinAs(ctx, t, base, m.ID, uid, preset) }
	host := join("host", "webinar_host")
	names := []string{"v0", "v1", "v2", "v3", "v4"}
	vs := map[string]*client.Meeting{}
	for _, n := range names {
		vs[n] = join(n, "webinar_viewer")
	}
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check(host.Stage.Join(ctx))
	for _, n := range []string{"v3", "v0", "v4", "v2"} {
		check(vs[n].Stage.RequestAccess(ctx))
	}
	check(host.Stage.GrantAccess(ctx, "v0"))
	check(vs["v0"].Stage.Join(ctx))
	check(host.Stage.GrantAccess(ctx, "v1")) // invited, not yet joined
	before, err := host.Stage.GetAccessRequests(ctx)
	check(err)

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	cmd = startBinary(t, bin, addr, dir)

	for _, c := range append([]*client.Meeting{host}, vs["v0"], vs["v1"], vs["v2"], vs["v3"], vs["v4"]) {
		waitEvent(t, c, "reconnected")
	}
	want := map[string]stage.Status{"v0": stage.OnStage, "v1": stage.Accepted, "v2": stage.Requested, "v3": stage.Requested, "v4": stage.Requested}
	for n, c := range vs {
		if c.Stage.Status() != want[n] {
			t.Errorf("%s: %v after the restart, want %v", n, c.Stage.Status(), want[n])
		}
	}
	if host.Stage.Status() != stage.OnStage {
		t.Errorf("host: %v", host.Stage.Status())
	}
	after, err := host.Stage.GetAccessRequests(ctx)
	check(err)
	ids := func(rs []stage.Request) (out []string) {
		for _, r := range rs {
			out = append(out, r.UserID+"@"+r.RequestedAt.String())
		}
		return out
	}
	if !slices.Equal(ids(after), ids(before)) {
		t.Fatalf("requests after the restart\n%v\nbefore\n%v", ids(after), ids(before))
	}
	// The meeting goes on, seen by everyone.
	check(host.Stage.Kick(ctx, "v0"))
	waitEvent(t, vs["v0"], "removedFromStage")

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("cocmd did not stop on SIGTERM")
	}
	waitEvent(t, host, "disconnected")
}

// TestBinary_mediaDefaults runs the binary with its default media settings
// (the HTTP port, UDP, on every interface, IPv4 and IPv6): a host on stage
// publishes, a viewer receives.
func TestBinary_mediaDefaults(t *testing.T) {
	bin := binary(t)
	addr, dir := freeAddr(t), t.TempDir()
	base := "http://" + addr
	cmd := startBinary(t, bin, addr, dir)
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var m struct{ ID string }
	rest(t, base, "POST", "/v1/meetings", map[string]any{"title": "Media", "type": "WEBINAR"}, &m)
	join := func(uid, preset string) *client.Meeting { return joinAt(ctx, t, base, base, m.ID, uid, preset, nil) }
	host, viewer := join("host", "webinar_host"), join("viewer", "webinar_viewer")
	publishCamera(ctx, t, host)
	if err := viewer.Media.Subscribe(ctx); err != nil {
		t.Fatal(err)
	}
	for e := range viewer.Events() {
		ta, ok := e.(client.TrackAdded)
		if !ok {
			continue
		}
		if ta.Track.UserID != "host" || ta.Track.Source != client.SourceCamera {
			t.Fatalf("track of %s/%s", ta.Track.UserID, ta.Track.Source)
		}
		buf := make([]byte, 1500)
		for range 60 {
			if _, _, err := ta.Track.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	t.Fatalf("no track: %v", viewer.Err())
}
