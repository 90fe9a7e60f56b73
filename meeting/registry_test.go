package meeting

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A meeting nobody uses is unloaded, and loaded again by the next call,
// however the two race.
func TestRegistry_idleUnloadAndReload(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar}, parts: []store.Participant{
		{ID: "p", UserID: "u", Preset: "webinar_viewer"},
	}}
	reg := NewRegistry(s, Config{Logger: quiet(), Grace: 5 * time.Millisecond, Idle: time.Millisecond})
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := reg.Connect(ctx, "m", "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetWriter(func() {}, nil)
	reg.Disconnect(c)
	deadline := time.Now().Add(5 * time.Second)
	for reg.Loaded() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle meeting was not unloaded")
		}
		time.Sleep(time.Millisecond)
	}
	// Calls racing with unloads: every one is served.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := reg.GrantAccess(ctx, "m", []string{"u"}); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(time.Now().UnixNano()%3) * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if _, err := reg.Live(ctx, "m"); err != nil {
		t.Fatal(err)
	}
}

// Closing the registry stops every meeting and their clients.
func TestRegistry_close(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar}, parts: []store.Participant{
		{ID: "p", UserID: "u", Preset: "webinar_viewer"},
	}}
	reg := NewRegistry(s, Config{Logger: quiet()})
	c, err := reg.Connect(context.Background(), "m", "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetWriter(func() {}, nil)
	reg.Close()
	b := c.Take(nil)
	if !b.Closed || b.Code != protocol.CloseGoingAway {
		t.Fatalf("client after Close: %+v", b)
	}
	if _, err := reg.Connect(context.Background(), "m", "p", nil); err == nil {
		t.Fatal("a closed registry accepted a connection")
	}
}
