package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/stage"
)

// dialIdle opens a TCP connection that sends one request and then sits
// idle, keeping it alive.
func dialIdle(t *testing.T, ts *testServer) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closes c (within 10 s).
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	return err == nil // EOF: the server closed it; a timeout is an error
}

// Idle connections are closed after the idle timeout: many clients that
// each sent one request hold nothing for long.
func TestHTTP_idleConnectionsClosed(t *testing.T) {
	ts := startServer(t, testOptions{idle: 300 * time.Millisecond, limits: server.ConnLimits{Unauthenticated: 1000}})
	const n = 300
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dialIdle(t, ts)
		if _, err := io.WriteString(conns[i], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conns[i]), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
	}
	for i, c := range conns {
		if !closedByServer(c) {
			t.Fatalf("idle connection %d is still open", i)
		}
	}
}

// One address may hold only a few connections without a valid token, and
// a bounded number of realtime connections; behind a trusted proxy, the
// client is the address X-Forwarded-For names, and nobody else's header is
// believed.
func TestHTTP_connectionLimits(t *testing.T) {
	ts := startServer(t, testOptions{limits: server.ConnLimits{Unauthenticated: 4, Authenticated: 3}})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ws := strings.Replace(ts.URL, "http", "ws", 1) + "/v1/realtime"
	var live []*websocket.Conn
	for i := range 3 {
		c, _, err := websocket.DefaultDialer.Dial(ws, bearer(ts.participant(mid, uid(i), "webinar_viewer")))
		if err != nil {
			t.Fatalf("realtime connection %d: %v", i, err)
		}
		defer c.Close()
		live = append(live, c)
	}
	fourth := ts.participant(mid, uid(3), "webinar_viewer")
	_, resp, err := websocket.DefaultDialer.Dial(ws, bearer(fourth))
	if err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a fourth realtime connection: %v", err)
	}
	// Upgraded connections do not count as unauthenticated: of eight idle
	// connections, some are kept (the realtime ones take no place), and
	// never more than four.
	var idle []net.Conn
	for range 8 {
		idle = append(idle, dialIdle(t, ts))
	}
	open := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		var ne net.Error
		if _, err := c.Read(make([]byte, 1)); errors.As(err, &ne) && ne.Timeout() {
			open++ // still open: the server kept it
		}
	}
	if open < 1 || open > 4 {
		t.Fatalf("%d of 8 unauthenticated connections from one address were kept; the limit is 4", open)
	}
	for _, c := range idle { // (or the header timeout closes them)
		c.Close()
	}
	// A realtime connection that ends frees its place.
	live[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, _, err := websocket.DefaultDialer.Dial(ws, bearer(fourth))
		if err == nil {
			defer c.Close() // three again
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the place was never freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// X-Forwarded-For from an untrusted peer changes nothing.
	h := bearer(ts.participant(mid, uid(5), "webinar_viewer"))
	h.Set("X-Forwarded-For", "203.0.113.9")
	if _, resp, err := websocket.DefaultDialer.Dial(ws, h); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("an untrusted X-Forwarded-For: %v", err)
	}
}

// Behind a trusted proxy, each client has its own limit.
func TestHTTP_trustedProxy(t *testing.T) {
	ts := startServer(t, testOptions{limits: server.ConnLimits{Authenticated: 2,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ws := strings.Replace(ts.URL, "http", "ws", 1) + "/v1/realtime"
	n := 0
	dial := func(client string) error {
		h := bearer(ts.participant(mid, uid(n), "webinar_viewer"))
		n++
		h.Set("X-Forwarded-For", "198.51.100.1, "+client) // the proxy appends the client it saw
		c, resp, err := websocket.DefaultDialer.Dial(ws, h)
		if err != nil {
			if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
				return errLimited
			}
			return err
		}
		t.Cleanup(func() { c.Close() })
		return nil
	}
	for _, client := range []string{"203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.2"} {
		if err := dial(client); err != nil {
			t.Fatalf("%s: %v", client, err)
		}
	}
	if err := dial("203.0.113.1"); !errors.Is(err, errLimited) {
		t.Fatalf("a third from one client: %v", err)
	}
}

var errLimited = errors.New("limited")

// A node that holds -max-connections realtime connections says it is not
// ready and refuses the next with UNAVAILABLE, so that a balancer sends it
// elsewhere; when one leaves, it takes connections again.
func TestServer_maxConnections(t *testing.T) {
	ts := startServer(t, testOptions{maxConns: 2})
	mid := ts.meeting(map[string]any{"title": "Full", "type": "WEBINAR"})
	ready := func() int {
		resp, err := http.Get(ts.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := ready(); got != http.StatusOK {
		t.Fatalf("empty node: /readyz %d", got)
	}
	a := ts.join(ts.participant(mid, "a", "webinar_viewer"))
	ts.join(ts.participant(mid, "b", "webinar_viewer"))
	if got := ready(); got != http.StatusServiceUnavailable {
		t.Fatalf("full node: /readyz %d", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Join(ctx, ts.URL, ts.participant(mid, "c", "webinar_viewer"), nil)
	if !errors.Is(err, stage.ErrUnavailable) {
		t.Fatalf("a connection past the limit: %v", err)
	}
	a.Close()
	deadline := time.Now().Add(10 * time.Second)
	for ready() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("still not ready after a connection left")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
