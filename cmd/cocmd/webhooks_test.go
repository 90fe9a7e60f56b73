package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cocmd/cocmd/webhook"
)

// The real binary SIGKILLed with webhook deliveries pending: the receiver
// is down (503) while a webinar runs, the server is killed, started again,
// and the receiver comes back: every entry arrives, signed, in order, none
// lost; a duplicate may come, with the same id.
func TestBinary_webhooksSurviveKill(t *testing.T) {
	bin := binary(t)
	addr, dir := freeAddr(t), t.TempDir()
	base := "http://" + addr
	start := func() *exec.Cmd {
		cmd, err := startServe([]string{bin, "serve", "-listen", addr, "-data", dir, "-api-key", testKey, "-log-level", "error",
			"-webhooks-allow-private"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	cmd := start()

	var up atomic.Bool
	var secret atomic.Pointer[string]
	var mu sync.Mutex
	var ids []string
	var seqs []uint64
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var ev struct {
			ID  string `json:"id"`
			Seq uint64 `json:"seq"`
		}
		if s := secret.Load(); s == nil || webhook.Verify(*s, r.Header, body, time.Now()) != nil || json.Unmarshal(body, &ev) != nil {
			t.Errorf("a delivery that does not verify: %s", body)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		ids, seqs = append(ids, ev.ID), append(seqs, ev.Seq)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rx.Close()
	var ep struct{ ID, Secret string }
	rest(t, base, "POST", "/v1/webhooks", map[string]any{"url": rx.URL}, &ep)
	secret.Store(&ep.Secret)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var m struct{ ID string }
	rest(t, base, "POST", "/v1/meetings", map[string]any{"title": "hooks", "type": "WEBINAR"}, &m)
	host, ann := joinAs(ctx, t, base, m.ID, "host", "webinar_host"), joinAs(ctx, t, base, m.ID, "ann", "webinar_viewer")
	for _, step := range []func() error{
		func() error { return ann.Stage.RequestAccess(ctx) },
		func() error { return host.Stage.GrantAccess(ctx, "ann") },
		func() error { return ann.Stage.Join(ctx) },
		func() error { return host.Stage.Kick(ctx, "ann") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	var audit struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	rest(t, base, "GET", "/v1/meetings/"+m.ID+"/audit", nil, &audit)
	want := make([]string, len(audit.Data))
	for i, e := range audit.Data {
		want[i] = e.ID
	}
	if len(want) < 7 {
		t.Fatalf("the log: %v", want)
	}

	// Killed with all of it pending, then started again; the receiver
	// comes back.
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	start()
	up.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got, gotSeqs := slices.Clone(ids), slices.Clone(seqs)
		mu.Unlock()
		var firsts []string
		for _, id := range got {
			if !slices.Contains(firsts, id) {
				firsts = append(firsts, id)
			}
		}
		if len(firsts) >= len(want) {
			if !slices.Equal(firsts[:len(want)], want) {
				t.Fatalf("delivered %v\nwant %v", firsts, want)
			}
			for i := 1; i < len(gotSeqs); i++ {
				if gotSeqs[i] < gotSeqs[i-1] {
					t.Fatalf("out of order: %v", gotSeqs)
				}
			}
			t.Logf("%d entries delivered after the kill and restart, %d duplicates", len(want), len(got)-len(firsts))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v within 30 s, want %v", firsts, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
