package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cocmd/cocmd/internal/natstest"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/store/natsjs"
)

// testNode joins a node named name through server i of c.
func testNode(t *testing.T, c *natstest.Cluster, i int, name string) (*Node, *nats.Conn) {
	t.Helper()
	ctx := context.Background()
	nc := natstest.Connect(t, c.URL(i))
	st, err := natsjs.Open(ctx, nc, natsjs.Config{Replicas: 3, Node: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n, err := Open(ctx, nc, st, Config{Node: name, Replicas: 3, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return n, nc
}

func TestNode_ownership(t *testing.T) {
	ctx := context.Background()
	c := natstest.Start(t, 3)
	a, ancon := testNode(t, c, 0, "a")
	b, _ := testNode(t, c, 1, "b")
	d, _ := testNode(t, c, 2, "d")
	defer b.Close()
	defer d.Close()
	if err := a.Store().CreateMeeting(ctx, store.Meeting{ID: "m1", Type: stage.Webinar, CreatedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Acquire(ctx, "nope"); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("acquire an unknown meeting: %v", err)
	}

	// Three nodes race for the meeting: exactly one wins, the others are
	// told which.
	var wg sync.WaitGroup
	nodes := []*Node{a, b, d}
	errs := make([]error, 3)
	for i, n := range nodes {
		wg.Go(func() { _, errs[i] = n.Acquire(ctx, "m1") })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		var ee *ElsewhereError
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			t.Fatalf("two owners: %s and %s", nodes[winner].Name(), nodes[i].Name())
		case !errors.As(err, &ee) || !errors.Is(err, stage.ErrUnavailable):
			t.Fatalf("%s: %v", nodes[i].Name(), err)
		}
	}
	if winner < 0 {
		t.Fatalf("nobody won: %v", errs)
	}
	for i, err := range errs {
		var ee *ElsewhereError
		if errors.As(err, &ee) && ee.Node != nodes[winner].Name() {
			t.Fatalf("%s was told %s owns it, not %s", nodes[i].Name(), ee.Node, nodes[winner].Name())
		}
	}

	// A graceful hand-off: released, taken at once by the next.
	w := nodes[winner]
	w.Release("m1") // the lease's deletion is sent on a goroutine of its own
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := a.Acquire(ctx, "m1")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a release: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if owner, _ := b.Store().Owner("m1"); owner != "a" {
		t.Logf("b's view lags: owner %q", owner)
	}

	// a is cut off from NATS: it learns it lost the meeting, and another
	// node takes it over once the lease lapsed, without anyone releasing.
	lost, _ := a.Acquire(ctx, "m1") // a holds it: the same channel
	cut := make(chan struct{}, 2)
	a.OnCutOff(func() { cut <- struct{}{} })
	ancon.Close()
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the node cut off from NATS still believes it owns the meeting")
	}
	// And it knows it is cut off: told, and not ready.
	select {
	case <-cut:
	case <-time.After(10 * time.Second):
		t.Fatal("the node cut off from NATS was not told")
	}
	if a.Ready() == nil {
		t.Fatal("the node cut off from NATS says it is ready")
	}
	// Until a's liveness lapses too, b is told a owns it (as a client
	// reconnecting to b would be, and retry).
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := b.Acquire(ctx, "m1")
		if err == nil {
			break
		}
		if !errors.As(err, new(*ElsewhereError)) || time.Now().After(deadline) {
			t.Fatalf("taking over from a dead node: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if owner, epoch := b.Store().Owner("m1"); owner != "b" || epoch == 0 {
		t.Fatalf("owner %s epoch %d", owner, epoch)
	}
	if _, err := d.Acquire(ctx, "m1"); !errors.As(err, new(*ElsewhereError)) {
		t.Fatalf("d while b owns it: %v", err)
	}
}

// NATS loses one of its three servers, the one the node is connected to:
// the node reconnects to another, everything acknowledged before is still
// there, writes and ownership work again once JetStream has re-elected
// the leaders the server held.
func TestNode_natsLosesAServer(t *testing.T) {
	ctx := context.Background()
	c := natstest.Start(t, 3)
	nc := natstest.Connect(t, c.URL(0)+","+c.URL(1)+","+c.URL(2))
	st, err := natsjs.Open(ctx, nc, natsjs.Config{Replicas: 3, Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := Open(ctx, nc, st, Config{Node: "a", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, p := range stage.BuiltinPresets() {
		if err := st.CreatePreset(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	if err := st.CreateMeeting(ctx, store.Meeting{ID: "m1", Type: stage.Webinar, CreatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Acquire(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	add := func(id string) error {
		return st.AddParticipant(ctx, store.Participant{ID: id, MeetingID: "m1", UserID: "u" + id, Preset: "webinar_viewer", CreatedAt: now})
	}
	if err := add("p1"); err != nil {
		t.Fatal(err)
	}
	// Stop the server the node is connected to.
	var connected int
	for i := range c.Servers {
		if nc.ConnectedUrl() == c.URL(i) {
			connected = i
		}
	}
	c.Servers[connected].Shutdown()
	c.Servers[connected].WaitForShutdown()
	c.Servers[connected] = nil
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		// The meeting may have been lost meanwhile (its lease unanswered
		// for half its TTL): take it again, then write.
		_, aerr := n.Acquire(ctx, "m1")
		werr := aerr
		if aerr == nil {
			werr = add("p2")
		}
		if werr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write 30 s after losing a NATS server: %v", werr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("writes work again %v after a NATS server stopped (reconnected to %s)", time.Since(start).Round(10*time.Millisecond), nc.ConnectedUrl())
	// The node's view may lag while its consumer, which lived on the
	// stopped server, is made again; the writes are durable meanwhile.
	for deadline := time.Now().Add(30 * time.Second); ; {
		ps, _ := st.AllParticipants(ctx, "m1")
		if len(ps) == 2 && ps[0].ID == "p1" && ps[1].ID == "p2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("participants %+v", ps)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
