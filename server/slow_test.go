package server_test

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestSlowClientIsDropped: a client that stops reading is disconnected once
// its queue passes the limit, and the meeting goes on for everyone else.
func TestSlowClientIsDropped(t *testing.T) {
	ts := startServer(t, testOptions{queue: 16 << 10, sndbuf: 8 << 10})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	watcher := ts.join(ts.participant(mid, "watcher", "webinar_viewer"))

	// A raw client with a tiny receive buffer that never reads.
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}).DialContext}
	slow, _, err := d.Dial(strings.Replace(ts.URL, "http", "ws", 1)+"/v1/realtime", bearer(ts.participant(mid, "slow", "webinar_viewer")))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()

	// Every title change is a meetingUpdate to everyone.
	title := strings.Repeat("t", 190)
	const updates = 1000
	for i := range updates {
		ts.mustAPI("PATCH", "/v1/meetings/"+mid, map[string]any{"title": title[:100+i%90]}, nil)
	}
	// The slow client was cut off: reading what got through ends in an error.
	slow.SetReadDeadline(time.Now().Add(15 * time.Second))
	got := 0
	for {
		if _, _, err := slow.ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the slow client was never disconnected (read %d messages)", got)
			}
			break
		}
		got++
	}
	if got >= updates {
		t.Fatalf("the slow client got all %d updates", got)
	}
	// The others were not held back: the watcher still works.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	must(t, watcher.Ping(ctx))
	if !watcher.Connected() {
		t.Fatal("the watcher was disconnected too")
	}
}
