package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/protocol"
)

// closedWith reads c until the server closes it and returns the close code.
func closedWith(t *testing.T, c *websocket.Conn) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil {
			t.Fatalf("the connection ended without a close: %v", err)
		}
	}
}

// waitEventRaw reads c until event name arrives.
func waitEventRaw(t *testing.T, c *websocket.Conn, name string) protocol.Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", name, err)
		}
		if m, _ := protocol.DecodeMessage(b); m.Type == protocol.TypeEvent && m.Event == name {
			return m
		}
	}
}

// A connection does not outlive its token: it is told shortly before the
// token expires, can hand over a fresh one of its own participant, and is
// closed with 4005 (UNAUTHENTICATED) when the token expires unrefreshed or
// its signing key is retired.
func TestRealtime_tokenLifetime(t *testing.T) {
	var clk clock
	ts := startServer(t, testOptions{now: clk.now, ping: 50 * time.Millisecond, tokenTTL: 10 * time.Minute})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	var ann, bob struct {
		Participant struct{ ID string }
		Token       string
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "Ann", "user_id": "ann", "preset": "webinar_viewer"}, &ann)
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "Bob", "user_id": "bob", "preset": "webinar_viewer"}, &bob)
	a, b := rawConn(t, ts, ann.Token), rawConn(t, ts, bob.Token)

	clk.advance(9 * time.Minute)
	ev := waitEventRaw(t, a, protocol.EventTokenExpiring)
	var exp protocol.TokenExpiring
	if json.Unmarshal(ev.Data, &exp); exp.ExpiresAt.IsZero() {
		t.Fatalf("tokenExpiring %s", ev.Data)
	}
	// Bob's token is not Ann's to hand over.
	send := func(c *websocket.Conn, id int, method string, params any) protocol.Message {
		p, _ := json.Marshal(params)
		c.WriteJSON(map[string]any{"id": id, "method": method, "params": json.RawMessage(p)})
		return response(t, c, uint64(id))
	}
	if r := send(a, 1, protocol.MethodRefreshToken, map[string]string{"token": bob.Token}); r.Error == nil || r.Error.Code != "UNAUTHENTICATED" {
		t.Fatalf("refreshing with another participant's token: %+v", r)
	}
	var fresh struct{ Token string }
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants/"+ann.Participant.ID+"/token", map[string]any{"token_ttl": 3600}, &fresh)
	if r := send(a, 2, protocol.MethodRefreshToken, map[string]string{"token": fresh.Token}); r.Error != nil {
		t.Fatalf("refresh: %+v", r.Error)
	}
	clk.advance(2 * time.Minute) // Bob's token has expired; Ann's was refreshed
	if code := closedWith(t, b); code != protocol.CloseUnauthenticated {
		t.Fatalf("bob's connection closed with %d", code)
	}
	if r := send(a, 3, protocol.MethodPing, nil); r.Error != nil {
		t.Fatalf("ann after bob's token expired: %+v", r.Error)
	}

	// Retiring the key closes the connections of the tokens it signed,
	// and refuses them from then on.
	var keys struct {
		Data []struct {
			ID      string
			Current bool
		}
	}
	ts.mustAPI("GET", "/v1/signing-keys", nil, &keys)
	old := keys.Data[0].ID
	ts.mustAPI("POST", "/v1/signing-keys/rotate", map[string]any{"retire_after": 0}, &keys)
	if len(keys.Data) != 1 || keys.Data[0].ID == old || !keys.Data[0].Current {
		t.Fatalf("keys after retiring the old one at once: %+v", keys)
	}
	if code := closedWith(t, a); code != protocol.CloseUnauthenticated {
		t.Fatalf("ann's connection closed with %d", code)
	}
	d := websocket.Dialer{}
	_, resp, err := d.Dial(strings.Replace(ts.URL, "http", "ws", 1)+"/v1/realtime", bearer(fresh.Token))
	if err == nil || resp.StatusCode != 401 {
		t.Fatalf("a token of the retired key: %v", err)
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants/"+ann.Participant.ID+"/token", nil, &fresh)
	rawConn(t, ts, fresh.Token) // the new key's tokens work
}

// The Go SDK, given a way to get fresh tokens, refreshes its connection's
// token when the server says it expires soon, and stays connected past the
// old token's expiry.
func TestClient_refreshesToken(t *testing.T) {
	var clk clock
	ts := startServer(t, testOptions{now: clk.now, ping: 50 * time.Millisecond, tokenTTL: 10 * time.Minute})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	var ann struct {
		Participant struct{ ID string }
		Token       string
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "Ann", "user_id": "ann", "preset": "webinar_viewer"}, &ann)
	refreshed := make(chan struct{}, 10)
	m, err := client.Join(ctxT(t), ts.URL, ann.Token, &client.Options{RefreshToken: func(ctx context.Context) (string, error) {
		var fresh struct{ Token string }
		ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants/"+ann.Participant.ID+"/token", map[string]any{"token_ttl": 3600}, &fresh)
		refreshed <- struct{}{}
		return fresh.Token, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	clk.advance(9 * time.Minute)
	select {
	case <-refreshed:
	case <-time.After(10 * time.Second):
		t.Fatal("the SDK never refreshed its token")
	}
	if err := m.Stage.RequestAccess(ctxT(t)); err != nil { // the refresh call is in before this one
		t.Fatal(err)
	}
	clk.advance(2 * time.Minute) // the first token has expired
	time.Sleep(200 * time.Millisecond)
	for range 4 { // several sweeps later, still on the same connection
		if err := m.Stage.CancelRequestAccess(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if err := m.Stage.RequestAccess(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case e := <-m.Events():
		for e != nil {
			if _, ok := e.(client.Disconnected); ok {
				t.Fatal("the SDK was disconnected")
			}
			select {
			case e = <-m.Events():
			default:
				e = nil
			}
		}
	default:
	}
}

// Tokens never travel in a URL: the query string is not read; a browser
// offers its token as a subprotocol entry beside cocmd.v1, and is answered
// with cocmd.v1 only.
func TestRealtime_tokenNeverInURL(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	tok := ts.participant(mid, "ann", "webinar_viewer")
	ws := strings.Replace(ts.URL, "http", "ws", 1) + "/v1/realtime"
	d := websocket.Dialer{}
	if _, resp, err := d.Dial(ws+"?token="+tok, nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("a token in the query string: %v", err)
	}
	d.Subprotocols = []string{protocol.Subprotocol, protocol.TokenSubprotocolPrefix + tok}
	c, resp, err := d.Dial(ws, nil)
	if err != nil {
		t.Fatalf("a token as a subprotocol: %v", err)
	}
	defer c.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != protocol.Subprotocol {
		t.Errorf("answered subprotocol %q", got)
	}
	if code, _, _ := get(t, ts.URL+"/v1/token?token="+tok); code != 401 {
		t.Errorf("GET /v1/token?token=: %d", code)
	}
}

// Pages forbid inline script and framing, and leak no URL in a Referer.
func TestWeb_securityHeaders(t *testing.T) {
	ts := startServer(t, testOptions{})
	for _, path := range []string{"/", "/join", "/app/app.js", "/v1/demo"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: %v", path, h)
		}
	}
}

// A call made while the SDK is reconnecting waits for the connection up to
// its deadline, then fails with UNAVAILABLE; once the server is back, calls
// work again.
func TestClient_callWhileReconnecting(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	m, err := client.Join(ctxT(t), ts.URL, ts.participant(mid, "ann", "webinar_viewer"), &client.Options{CallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ts.stop()
	waitFor(t, m, "the drop", func(e client.Event) bool { _, ok := e.(client.Disconnected); return ok })
	if err := m.Stage.RequestAccess(context.Background()); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("a call while reconnecting: %v", err)
	}
	ts.start()
	if err := m.Stage.RequestAccess(ctxT(t)); err != nil {
		t.Fatalf("once the server is back: %v", err)
	}
}
