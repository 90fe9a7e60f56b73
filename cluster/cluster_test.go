package cluster

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cocmd/cocmd/internal/natstest"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/store/natsjs"
)

func TestMain(m *testing.M) {
	natstest.RunChild()
	os.Exit(m.Run())
}

// createMeeting stores the built-in presets and webinar id, created at now.
func createMeeting(t *testing.T, st *natsjs.Store, id string, now time.Time) {
	t.Helper()
	ctx := context.Background()
	for _, p := range stage.BuiltinPresets() {
		if err := st.CreatePreset(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateMeeting(ctx, store.Meeting{ID: id, Type: stage.Webinar, CreatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
}

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
	now := time.Now().UTC()
	createMeeting(t, st, "m1", now)
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

// JetStream loses the server that leads the nodes' buckets and the
// meetings' stream — its process frozen, as a crashed or cut off one is
// to the others — and takes seconds to elect new leaders: no write works
// meanwhile, on any node. The nodes still hear each other, so
// neither takes itself for cut off: the meeting's owner keeps it (its
// lease made anew if it expired meanwhile), its connections stay, and its
// next write works without a new claim.
func TestNode_ridesOutAnElection(t *testing.T) {
	ctx := context.Background()
	c := natstest.StartWithChild(t, 3, 2)
	a, anc := testNode(t, c, 0, "a")
	b, _ := testNode(t, c, 1, "b")
	var cut sync.Map
	a.OnCutOff(func() { cut.Store("a", true) })
	b.OnCutOff(func() { cut.Store("b", true) })
	st := a.Store()
	now := time.Now().UTC()
	createMeeting(t, st, "m1", now)
	lost, err := a.Acquire(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	add := func(id string) error {
		return st.AddParticipant(ctx, store.Participant{ID: id, MeetingID: "m1", UserID: "u" + id, Preset: "webinar_viewer", CreatedAt: now})
	}
	if err := add("p1"); err != nil {
		t.Fatal(err)
	}

	// Server 2, which no node is connected to, leads every stream: it is
	// asked to until it does.
	js, err := jetstream.New(anc)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"KV_cocmd_owners", "KV_cocmd_nodes", "COCMD_MEETINGS"} {
		for try := 0; ; try++ {
			info, err := js.Stream(ctx, s)
			if err == nil && info.CachedInfo().Cluster != nil && info.CachedInfo().Cluster.Leader == c.Configs[2].Name {
				break
			}
			if try == 40 {
				t.Fatalf("server 2 does not lead %s after 40 step-downs", s)
			}
			if _, err := anc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+s, nil, 2*time.Second); err != nil {
				t.Logf("step-down of %s: %v", s, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	a.mu.Lock()
	l := a.held["m1"]
	a.mu.Unlock()
	c.Freeze(t)
	stopped := time.Now()

	// A write waits for JetStream to answer again (a write given up on
	// before its outcome is known fences the writer: the meeting would be
	// reloaded). Until it is answered nothing is lost, nobody is cut off,
	// both nodes stay ready.
	wrote := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		wrote <- st.AddParticipant(wctx, store.Participant{ID: "p2", MeetingID: "m1", UserID: "up2", Preset: "webinar_viewer", CreatedAt: now})
	}()
	var longest time.Duration // the longest the lease went unrenewed
	for done := false; !done; {
		select {
		case err := <-wrote:
			if err != nil {
				t.Fatalf("a write during the election: %v", err)
			}
			done = true
		case <-time.After(50 * time.Millisecond):
		}
		select {
		case <-lost:
			t.Fatalf("the meeting was lost %v after the leader's server stopped", time.Since(stopped).Round(time.Millisecond))
		default:
		}
		cut.Range(func(k, _ any) bool {
			t.Fatalf("node %v took itself for cut off during the election", k)
			return false
		})
		for _, n := range []*Node{a, b} {
			if err := n.Ready(); err != nil {
				t.Fatalf("node %s not ready during the election: %v", n.Name(), err)
			}
		}
		a.mu.Lock()
		longest = max(longest, time.Since(l.renewed))
		a.mu.Unlock()
	}
	t.Logf("JetStream wrote again %v after the leader's server stopped; the lease went %v unrenewed (TTL %v)",
		time.Since(stopped).Round(time.Millisecond), longest.Round(time.Millisecond), a.cfg.LeaseTTL)
	if longest < a.cfg.LeaseTTL {
		t.Fatalf("the lease went only %v unrenewed: no election to ride out, the test proves nothing", longest)
	}
	// The lease is renewed again, and still this node's.
	for deadline := time.Now().Add(10 * time.Second); ; {
		a.mu.Lock()
		fresh := time.Since(l.renewed) < a.cfg.LeaseTTL/2 && a.held["m1"] == l
		a.mu.Unlock()
		if fresh {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease is not renewed after the election")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-lost:
		t.Fatal("the meeting was lost after the election")
	default:
	}
	if err := add("p3"); err != nil {
		t.Fatalf("a write after the election: %v", err)
	}
}

// Whether a node whose JetStream writes fail rides it out as an election:
// only while it hears a majority of the nodes it knows, and for no longer
// than the grace; a node that hears nobody is the one cut off.
func TestNode_lapsed(t *testing.T) {
	const ttl, grace = time.Second, 12 * time.Second
	now := time.Now()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	for _, tc := range []struct {
		name   string
		heard  map[string]time.Time
		silent time.Duration
		want   bool
	}{
		{"written within the TTL", nil, 500 * time.Millisecond, false},
		{"alone, silent past the TTL", nil, 2 * time.Second, false}, // one node: its own majority
		{"hears both others", map[string]time.Time{"b": ago(0), "c": ago(100 * time.Millisecond)}, 5 * time.Second, false},
		{"hears one of two others", map[string]time.Time{"b": ago(0), "c": ago(5 * time.Second)}, 5 * time.Second, false},
		{"hears none of two others", map[string]time.Time{"b": ago(3 * time.Second), "c": ago(5 * time.Second)}, 2 * time.Second, true},
		{"heard two others, not lately", map[string]time.Time{"b": ago(time.Second), "c": ago(time.Second)}, 2 * time.Second, true},
		{"hears one of four others", map[string]time.Time{"b": ago(0), "c": ago(5 * time.Second), "d": ago(5 * time.Second), "e": ago(9 * time.Second)}, 2 * time.Second, true},
		{"hears both others, past the grace", map[string]time.Time{"b": ago(0), "c": ago(0)}, 13 * time.Second, true},
		{"the others gone for good", map[string]time.Time{"b": ago(2 * time.Minute)}, 2 * time.Second, false},
	} {
		n := &Node{cfg: Config{LeaseTTL: ttl, ElectionGrace: grace}, log: slog.New(slog.DiscardHandler), heard: map[string]time.Time{}}
		maps.Copy(n.heard, tc.heard)
		if got := n.lapsedLocked(ago(tc.silent), ttl); got != tc.want {
			t.Errorf("%s: lapsed %v, want %v", tc.name, got, tc.want)
		}
	}
}
