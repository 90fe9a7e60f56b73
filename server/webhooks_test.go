package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/webhook"
)

// receiver is an application's back end on loopback: it verifies each
// delivery with the webhook package's helper and keeps what it took.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret atomic.Pointer[string]
	// answer, if set, says how to answer the n-th request (from 0):
	// a status, or 0 to take it.
	answer func(n int, w http.ResponseWriter, r *http.Request) int

	mu       sync.Mutex
	n        int
	got      []server.WebhookEvent // taken (2xx), in order of arrival
	unsigned int
}

func newReceiver(t *testing.T) *receiver {
	rx := &receiver{t: t}
	rx.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rx.mu.Lock()
		n := rx.n
		rx.n++
		rx.mu.Unlock()
		if rx.answer != nil {
			if code := rx.answer(n, w, r); code != 0 {
				if code > 0 {
					w.WriteHeader(code)
				}
				return
			}
		}
		secret := rx.secret.Load()
		var ev server.WebhookEvent
		if secret == nil || webhook.Verify(*secret, r.Header, body, time.Now()) != nil || json.Unmarshal(body, &ev) != nil ||
			r.Header.Get(webhook.HeaderID) != ev.ID {
			rx.mu.Lock()
			rx.unsigned++
			rx.mu.Unlock()
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rx.mu.Lock()
		rx.got = append(rx.got, ev)
		rx.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rx.srv.Close)
	return rx
}

func (rx *receiver) taken() []server.WebhookEvent {
	rx.mu.Lock()
	defer rx.mu.Unlock()
	return slices.Clone(rx.got)
}

// register registers rx with the server, for types (none: all).
func (rx *receiver) register(ts *testServer, types ...string) server.Endpoint {
	rx.t.Helper()
	var ep server.Endpoint
	ts.mustAPI("POST", "/v1/webhooks", map[string]any{"url": rx.srv.URL + "/hooks", "event_types": types}, &ep)
	if !strings.HasPrefix(ep.Secret, "whsec_") || ep.Status != store.EndpointActive {
		rx.t.Fatalf("registered %+v", ep)
	}
	rx.secret.Store(&ep.Secret)
	return ep
}

// waitFor waits until rx took n deliveries.
func (rx *receiver) waitFor(n int, within time.Duration) []server.WebhookEvent {
	rx.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := rx.taken()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			rx.t.Fatalf("%d deliveries taken within %v, want %d: %v", len(got), within, n, types(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func types(evs []server.WebhookEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// script runs a small webinar: ann requests, the host grants, ann joins,
// the back end kicks her, bob requests and cancels.
func script(t *testing.T, ts *testServer, mid string) {
	t.Helper()
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	ann := ts.join(ts.participant(mid, "ann", "webinar_viewer"))
	bob := ts.join(ts.participant(mid, "bob", "webinar_viewer"))
	for _, step := range []func() error{
		func() error { return ann.Stage.RequestAccess(ctx) },
		func() error { return host.Stage.GrantAccess(ctx, "ann") },
		func() error { return ann.Stage.Join(ctx) },
		func() error {
			ts.mustAPI("POST", "/v1/meetings/"+mid+"/stage/kick", map[string]any{"user_ids": []string{"ann"}}, nil)
			return nil
		},
		func() error { return bob.Stage.RequestAccess(ctx) },
		func() error { return bob.Stage.CancelRequestAccess(ctx) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
}

var scripted = []string{"participant.joined", "participant.joined", "participant.joined",
	"stage.requested", "stage.granted", "stage.joined", "stage.kicked", "stage.requested", "stage.cancelled"}

// Every entry of a scripted webinar reaches the receiver signed (verified
// by the webhook package's helper), in order, with the id and seq the
// audit log shows; an endpoint for some types gets those only; the
// attempts are logged; the metrics count them.
func TestWebhooks_deliveredSignedInOrder(t *testing.T) {
	ts := startServer(t, testOptions{webhooks: &webhook.Config{Poll: 20 * time.Millisecond}})
	all, some := newReceiver(t), newReceiver(t)
	epAll := all.register(ts)
	some.register(ts, "stage.kicked", "stage.granted")
	mid := ts.meeting(map[string]any{"title": "hooks", "type": "WEBINAR"})
	script(t, ts, mid)
	got := all.waitFor(len(scripted)+1, 10*time.Second)
	if want := append([]string{"meeting.started"}, scripted...); !slices.Equal(types(got), want) {
		t.Fatalf("delivered %v, want %v", types(got), want)
	}
	var audit server.List[server.AuditEntry]
	ts.mustAPI("GET", "/v1/meetings/"+mid+"/audit", nil, &audit)
	for i, e := range got {
		if e.ID != audit.Data[i].ID || e.Seq != audit.Data[i].Seq || e.MeetingID != mid || (i > 0 && e.Seq <= got[i-1].Seq) {
			t.Errorf("delivery %d: %+v, audit %+v", i, e, audit.Data[i])
		}
	}
	if got := types(some.waitFor(2, 10*time.Second)); !slices.Equal(got, []string{"stage.granted", "stage.kicked"}) {
		t.Errorf("the endpoint for grants and kicks got %v", got)
	}
	if all.unsigned+some.unsigned != 0 {
		t.Errorf("%d deliveries failed verification", all.unsigned+some.unsigned)
	}
	var attempts server.List[server.Attempt]
	ts.mustAPI("GET", "/v1/webhooks/"+epAll.ID+"/attempts?limit=3", nil, &attempts)
	if len(attempts.Data) != 3 || attempts.NextCursor == "" || attempts.Data[0].Status != 204 || attempts.Data[0].Error != "" || attempts.Data[0].Seq <= attempts.Data[1].Seq {
		t.Errorf("attempts, newest first: %+v", attempts)
	}
	metrics := ts.metrics()
	if !strings.Contains(metrics, `cocmd_webhook_deliveries_total{endpoint="`+epAll.ID+`"} 10`) {
		t.Errorf("metrics:\n%s", metrics)
	}
	// A test event, on demand.
	var a server.Attempt
	ts.mustAPI("POST", "/v1/webhooks/"+epAll.ID+"/test", nil, &a)
	if a.Status != 204 || a.Error != "" {
		t.Errorf("test event: %+v", a)
	}
	if last := all.waitFor(len(scripted)+2, time.Second); last[len(last)-1].Type != "webhook.test" {
		t.Errorf("test event delivered as %v", types(last))
	}
}

// A receiver that fails — 500s, a redirect (not followed), a connection
// closed mid-answer, an answer too slow — holds back its meeting's later
// entries, none skipped and none out of order, while other meetings go on;
// once it recovers, everything arrives, in order. A slow receiver never
// slows a grant: the grant returns while the receiver still holds a
// delivery.
func TestWebhooks_failingReceiverCatchesUp(t *testing.T) {
	ts := startServer(t, testOptions{webhooks: &webhook.Config{Poll: 20 * time.Millisecond, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		Client: webhook.NewClient(500*time.Millisecond, true)}})
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("a redirect was followed") }))
	defer other.Close()
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	rx := newReceiver(t)
	rx.answer = func(n int, w http.ResponseWriter, r *http.Request) int {
		switch n {
		case 0:
			// The first delivery is held until the grants below are done.
			held <- struct{}{}
			<-release
			return http.StatusInternalServerError
		case 1:
			return http.StatusServiceUnavailable
		case 2:
			w.Header().Set("Location", other.URL)
			return http.StatusFound
		case 3: // the connection closed mid-answer
			c, buf, _ := w.(http.Hijacker).Hijack()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nten bytes.")
			buf.Flush()
			c.Close()
			return -1
		case 4: // slower than the client's timeout
			time.Sleep(700 * time.Millisecond)
			return http.StatusOK
		}
		return 0
	}
	ep := rx.register(ts)
	mid := ts.meeting(map[string]any{"title": "hooks", "type": "WEBINAR"})
	<-held
	script(t, ts, mid) // a grant and a kick among them: they return with the receiver stuck
	close(release)
	got := rx.waitFor(len(scripted)+1, 15*time.Second)
	if want := append([]string{"meeting.started"}, scripted...); !slices.Equal(types(got), want) {
		t.Fatalf("delivered %v, want %v", types(got), want)
	}
	var attempts server.List[server.Attempt]
	ts.mustAPI("GET", "/v1/webhooks/"+ep.ID+"/attempts?limit=100", nil, &attempts)
	var failures []string
	for _, a := range attempts.Data {
		if a.Error != "" {
			failures = append(failures, a.Error)
			if a.EventID != got[0].ID {
				t.Errorf("a later entry was tried while the first failed: %+v", a)
			}
		}
	}
	slices.Reverse(failures)
	if len(failures) != 5 || !strings.Contains(failures[0], "500") || !strings.Contains(failures[2], "302") {
		t.Errorf("failures logged: %q", failures)
	}
}

// An entry failing for longer than GiveUpAfter (a day passes on the
// deliverer's clock) stops the endpoint: failing, with why; nothing is
// delivered meanwhile, and a replay delivers everything it missed, in
// order. A 410 Gone stops an endpoint at once.
func TestWebhooks_giveUpAndReplay(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	ts := startServer(t, testOptions{webhooks: &webhook.Config{Poll: 20 * time.Millisecond, RetryMin: time.Hour, RetryMax: 4 * time.Hour,
		GiveUpAfter: 24 * time.Hour, Now: now}})
	var down atomic.Bool
	down.Store(true)
	rx := newReceiver(t)
	rx.answer = func(int, http.ResponseWriter, *http.Request) int {
		if down.Load() {
			return http.StatusInternalServerError
		}
		return 0
	}
	ep := rx.register(ts)
	mid := ts.meeting(map[string]any{"title": "hooks", "type": "WEBINAR"})
	script(t, ts, mid)
	status := func() server.Endpoint {
		var e server.Endpoint
		ts.mustAPI("GET", "/v1/webhooks/"+ep.ID, nil, &e)
		return e
	}
	// Days pass, an hour or four at a time: the first entry is tried again
	// each time, and after 24 hours the endpoint stops.
	deadline := time.Now().Add(10 * time.Second)
	for status().Status == store.EndpointActive {
		if time.Now().After(deadline) {
			t.Fatal("never stopped")
		}
		clock.Add(int64(5 * time.Hour))
		time.Sleep(60 * time.Millisecond)
	}
	if e := status(); e.Status != store.EndpointFailing || !strings.Contains(e.Note, "500") || e.StatusAt == nil {
		t.Fatalf("stopped as %+v", e)
	}
	if len(rx.taken()) != 0 {
		t.Fatal("delivered while failing")
	}
	down.Store(false)
	ts.mustAPI("POST", "/v1/webhooks/"+ep.ID+"/replay", nil, nil)
	got := rx.waitFor(len(scripted)+1, 10*time.Second)
	if want := append([]string{"meeting.started"}, scripted...); !slices.Equal(types(got), want) {
		t.Fatalf("after the replay: %v, want %v", types(got), want)
	}

	gone := newReceiver(t)
	gone.answer = func(int, http.ResponseWriter, *http.Request) int { return http.StatusGone }
	gep := gone.register(ts)
	ts.mustAPI("PATCH", "/v1/meetings/"+mid, map[string]any{"title": "again"}, nil)
	deadline = time.Now().Add(10 * time.Second)
	for {
		var e server.Endpoint
		ts.mustAPI("GET", "/v1/webhooks/"+gep.ID, nil, &e)
		if e.Status == store.EndpointGone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("410 did not stop the endpoint: %+v", e)
		}
		time.Sleep(20 * time.Millisecond)
	}
	gone.mu.Lock()
	n := gone.n
	gone.mu.Unlock()
	ts.mustAPI("PATCH", "/v1/meetings/"+mid, map[string]any{"title": "and again"}, nil)
	time.Sleep(200 * time.Millisecond)
	gone.mu.Lock()
	defer gone.mu.Unlock()
	if gone.n != n {
		t.Errorf("%d more deliveries to a gone endpoint", gone.n-n)
	}
}

// Registrations and updates that would not work, or would reach inside
// the network, are refused, each with its reason; unknown endpoints are
// 404; a rotated secret comes back once, and both sign for a day.
func TestWebhooks_badRegistration(t *testing.T) {
	ts := startServer(t, testOptions{}) // private addresses refused
	for _, c := range []struct{ name, url string }{
		{"malformed", "https://exa mple.com/x"},
		{"relative", "/hooks"},
		{"another scheme", "ftp://example.com/hooks"},
		{"credentials", "https://user:pw@example.com/hooks"},
		{"loopback", "http://127.0.0.1:8080/hooks"},
		{"localhost", "http://localhost:8080/hooks"},
		{"private", "https://10.1.2.3/hooks"},
		{"cloud metadata", "http://169.254.169.254/latest/meta-data"},
		{"IPv4-mapped loopback", "http://[::ffff:127.0.0.1]/hooks"},
		{"IPv6 loopback", "http://[::1]/hooks"},
		{"too long", "https://example.com/" + strings.Repeat("a", 3000)},
	} {
		var e struct{ Error struct{ Code stage.Code } }
		if code := ts.api("POST", "/v1/webhooks", map[string]any{"url": c.url}, &e); code != 400 || e.Error.Code != stage.CodeBadRequest {
			t.Errorf("%s: %d %+v", c.name, code, e)
		}
	}
	var e struct{ Error struct{ Message string } }
	if code := ts.api("POST", "/v1/webhooks", map[string]any{"url": "https://example.com/h", "event_types": []string{"stage.teleported"}}, &e); code != 400 || !strings.Contains(e.Error.Message, "stage.granted") {
		t.Errorf("an unknown event type: %d %+v", code, e)
	}
	if code := ts.api("POST", "/v1/webhooks", `{"url":"https://example.com/h","colour":"red"}`, nil); code != 400 {
		t.Errorf("an unknown field: %d", code)
	}
	var ep server.Endpoint
	ts.mustAPI("POST", "/v1/webhooks", map[string]any{"url": "https://example.com/h"}, &ep)
	var list server.List[server.Endpoint]
	ts.mustAPI("GET", "/v1/webhooks", nil, &list)
	if len(list.Data) != 1 || list.Data[0].Secret != "" {
		t.Errorf("the list shows a secret, or not the endpoint: %+v", list)
	}
	var rotated server.Endpoint
	ts.mustAPI("PATCH", "/v1/webhooks/"+ep.ID, map[string]any{"rotate_secret": true}, &rotated)
	if !webhook.ValidSecret(rotated.Secret) || rotated.Secret == ep.Secret {
		t.Errorf("rotation: %+v", rotated)
	}
	if code := ts.api("PATCH", "/v1/webhooks/"+ep.ID, map[string]any{"url": "http://127.0.0.1/x"}, nil); code != 400 {
		t.Errorf("an update to a loopback URL: %d", code)
	}
	for _, p := range []string{"GET /v1/webhooks/whk_nope", "DELETE /v1/webhooks/whk_nope", "GET /v1/webhooks/whk_nope/attempts", "POST /v1/webhooks/whk_nope/replay"} {
		m, path, _ := strings.Cut(p, " ")
		if code := ts.api(m, path, nil, nil); code != 404 {
			t.Errorf("%s: %d", p, code)
		}
	}
	if code := ts.api("DELETE", "/v1/webhooks/"+ep.ID, nil, nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
}

// A receiver that holds one meeting's delivery does not hold back another
// meeting's: the endpoint is sent several meetings at once, each in order.
func TestWebhooks_meetingsInParallel(t *testing.T) {
	// A timeout longer than the test: the held delivery stays held.
	ts := startServer(t, testOptions{webhooks: &webhook.Config{Poll: 20 * time.Millisecond, Client: webhook.NewClient(time.Minute, true)}})
	slowMeeting := ts.meeting(map[string]any{"title": "slow", "type": "WEBINAR"})
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	rx := newReceiver(t)
	t.Cleanup(free) // before the receiver closes: a failed test does not hang
	var held atomic.Int32
	slow := rx.srv.Config.Handler
	rx.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), slowMeeting) {
			held.Add(1)
			<-release
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		slow.ServeHTTP(w, r)
	})
	rx.register(ts)
	ts.mustAPI("PATCH", "/v1/meetings/"+slowMeeting, map[string]any{"title": "slow, still"}, nil)
	for held.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	fast := ts.meeting(map[string]any{"title": "fast", "type": "WEBINAR"})
	for i := range 3 {
		ts.mustAPI("PATCH", "/v1/meetings/"+fast, map[string]any{"title": fmt.Sprint("fast ", i)}, nil)
	}
	got := rx.waitFor(4, 5*time.Second) // the fast meeting's, while the slow one is held
	for _, e := range got {
		if e.MeetingID != fast {
			t.Errorf("delivered %s of %s while the slow meeting was held", e.Type, e.MeetingID)
		}
	}
	free()
	got = rx.waitFor(5, 10*time.Second)
	// The held delivery timed out and was made again: the receiver may
	// take it twice, with the same id (at least once).
	var slowIDs []string
	for _, e := range got {
		if e.MeetingID == slowMeeting && !slices.Contains(slowIDs, e.ID) {
			slowIDs = append(slowIDs, e.ID)
			if e.Type != "meeting.updated" {
				t.Errorf("the slow meeting's entry: %s", e.Type)
			}
		}
	}
	if len(slowIDs) != 1 {
		t.Errorf("the slow meeting's entries: %v", slowIDs)
	}
}
