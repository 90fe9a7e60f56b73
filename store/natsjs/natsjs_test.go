package natsjs

import (
	"errors"
	"time"

	"context"
	"fmt"
	"github.com/cocmd/cocmd/stage"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cocmd/cocmd/internal/natstest"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/store/storetest"
)

var prefixes atomic.Int64

// opener opens stores with a fresh prefix on the cluster, each reopen
// through the next server's connection.
func opener(conns []*nats.Conn, replicas int) storetest.Opener {
	return func(t *testing.T) (store.Store, func() store.Store) {
		cfg := Config{Prefix: fmt.Sprint("t", prefixes.Add(1)), Replicas: replicas, Node: "a"}
		i := 0
		open := func() *Store {
			s, err := Open(context.Background(), conns[i%len(conns)], cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		s := open()
		return s, func() store.Store {
			s.Close()
			i++
			s = open()
			return s
		}
	}
}

func TestStore_conformance(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		c := natstest.Start(t, 1)
		storetest.Run(t, opener([]*nats.Conn{natstest.Connect(t, c.URL(0))}, 1))
	})
	t.Run("cluster", func(t *testing.T) {
		c := natstest.Start(t, 3)
		var conns []*nats.Conn
		for i := range 3 {
			conns = append(conns, natstest.Connect(t, c.URL(i)))
		}
		storetest.Run(t, opener(conns, 3))
	})
}

// A node that claimed a meeting and then lost it to another (it paused,
// or was cut off, past its lease) cannot commit anything after the other
// node's claim: its write is refused, it is told once, and every node's
// view has only the new owner's writes.
func TestStore_fencing(t *testing.T) {
	ctx := context.Background()
	c := natstest.Start(t, 3)
	open := func(i int, node string) *Store {
		s, err := Open(ctx, natstest.Connect(t, c.URL(i)), Config{Prefix: "f", Replicas: 3, Node: node})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(0, "a"), open(1, "b")
	if err := a.Claim(ctx, "m1", 1, nil); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("claim of an unknown meeting: %v", err)
	}
	now := time.Now().UTC()
	if err := a.CreateMeeting(ctx, store.Meeting{ID: "m1", Type: stage.Webinar, CreatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range stage.BuiltinPresets() {
		if err := a.CreatePreset(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	var fencedA atomic.Int32
	if err := a.Claim(ctx, "m1", 1, func() { fencedA.Add(1) }); err != nil {
		t.Fatal(err)
	}
	add := func(s *Store, id string) error {
		return s.AddParticipant(ctx, store.Participant{ID: id, MeetingID: "m1", UserID: "u" + id, Preset: "webinar_viewer", CreatedAt: now})
	}
	if err := add(a, "p1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, "m1", 2, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Participant(ctx, "m1", "p1"); err != nil {
		t.Fatalf("the new owner does not see the old one's write: %v", err)
	}
	if err := add(a, "p2"); !errors.Is(err, ErrFenced) || !errors.Is(err, stage.ErrUnavailable) {
		t.Fatalf("the old owner wrote after the new one's claim: %v", err)
	}
	if err := a.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p1", Status: stage.Requested}}, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("the old owner's next write: %v", err)
	}
	if n := fencedA.Load(); n != 1 {
		t.Fatalf("the old owner was told %d times", n)
	}
	if err := add(b, "p3"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{a, b, open(2, "c")} {
		if err := s.sync(ctx); err != nil {
			t.Fatal(err)
		}
		ps, _ := s.AllParticipants(ctx, "m1")
		var ids []string
		for _, p := range ps {
			ids = append(ids, p.ID+":"+p.Status.String())
		}
		if fmt.Sprint(ids) != "[p1:OFF_STAGE p3:OFF_STAGE]" {
			t.Fatalf("%s's view: %v", s.cfg.Node, ids)
		}
		if owner, epoch := s.Owner("m1"); owner != "b" || epoch != 2 {
			t.Fatalf("%s's view of the owner: %s %d", s.cfg.Node, owner, epoch)
		}
	}
	// The old owner may claim again (it got the lease back): its writes
	// work from then on.
	if err := a.Claim(ctx, "m1", 3, nil); err != nil {
		t.Fatal(err)
	}
	if err := add(a, "p4"); err != nil {
		t.Fatal(err)
	}
	if err := add(b, "p5"); !errors.Is(err, ErrFenced) {
		t.Fatalf("b after a's new claim: %v", err)
	}
}

// TestStore_viewStalled: the view's consumer goes silent behind nats.go's
// back (as one on a server cut off from the others did): a commit that
// waits for the view gets a new consumer made from where the view was,
// and completes, with nothing applied twice or missed.
func TestStore_viewStalled(t *testing.T) {
	ctx := context.Background()
	c := natstest.Start(t, 1)
	s, err := Open(ctx, natstest.Connect(t, c.URL(0)), Config{Prefix: "v", Replicas: 1, Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Now().UTC()
	if err := s.CreateMeeting(ctx, store.Meeting{ID: "m1", Type: stage.Webinar, CreatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
	// Silence the meetings stream's consumer: it delivers nothing more.
	s.mu.Lock()
	f := s.followers[0]
	s.mu.Unlock()
	if f.p != &s.applied {
		t.Fatal("the first follower is not the meetings stream's")
	}
	f.mu.Lock()
	f.cc.Stop()
	f.mu.Unlock()
	if err := s.CreateMeeting(ctx, store.Meeting{ID: "m2", Type: stage.Webinar, CreatedAt: now}, nil); err != nil {
		t.Fatalf("a commit with the view's consumer silent: %v", err)
	}
	if err := s.CreateMeeting(ctx, store.Meeting{ID: "m3", Type: stage.Webinar, CreatedAt: now}, nil); err != nil {
		t.Fatalf("the next commit: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.meetings) != 3 || len(s.order) != 3 {
		t.Fatalf("the view holds %d meetings (%d in order), want 3", len(s.meetings), len(s.order))
	}
}
