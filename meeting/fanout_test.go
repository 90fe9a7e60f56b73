package meeting

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// A broadcast to a big audience on several cores reaches every connection
// once, and two broadcasts arrive in order everywhere.
func TestBroadcast_parallel(t *testing.T) {
	defer goleak.VerifyNone(t)
	if runtime.GOMAXPROCS(0) < 2 {
		t.Fatal("this test needs GOMAXPROCS >= 2 to take the parallel path")
	}
	const n = parallelFanOut + 100
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar}}
	s.parts = append(s.parts, store.Participant{ID: "host", UserID: "host", Preset: "webinar_host"})
	for i := range n {
		s.parts = append(s.parts, store.Participant{ID: fmt.Sprint("p", i), UserID: fmt.Sprint("u", i), Preset: "webinar_viewer"})
	}
	reg := NewRegistry(s, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer reg.Close()
	ctx := context.Background()
	clients := make([]*Client, 0, n)
	for _, p := range s.parts[1:] {
		c, err := reg.Connect(ctx, "m", p.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetWriter(func() {}, nil)
		c.Take(nil) // the welcome
		clients = append(clients, c)
	}
	for _, uid := range []string{"u1", "u2"} {
		if _, err := reg.GrantAccess(ctx, "m", []string{uid}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range clients {
		b := c.Take(nil)
		var peers []string
		for _, m := range b.Messages {
			msg, _ := protocol.DecodeMessage(m.Data)
			if msg.Event == protocol.EventPeerStageStatusUpdate {
				peers = append(peers, string(msg.Data))
			}
		}
		want := 2
		if i == 1 || i == 2 {
			want = 1 // its own change comes as stageStatusUpdate
		}
		if len(peers) != want {
			t.Fatalf("client %d got %d peer updates, want %d", i, len(peers), want)
		}
		if want == 2 && !(strings.Contains(peers[0], `"u1"`) && strings.Contains(peers[1], `"u2"`)) {
			t.Fatalf("client %d: out of order: %v", i, peers)
		}
	}
	if s.saved != 2 {
		t.Fatalf("%d saves for two grants", s.saved)
	}
}
