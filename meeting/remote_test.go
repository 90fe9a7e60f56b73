package meeting

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// hub is an in-memory Bus between registries, as NATS is between nodes.
type hub struct {
	mu    sync.Mutex
	serve map[string]func([]byte) []byte
	subs  map[string][]chan []byte
	dead  map[string]bool          // nodes Alive says are dead
	held  map[string]chan struct{} // nodes whose frames wait until it closes
}

// hold keeps node's frames from it until the returned func is called.
func (h *hub) hold(node string) (release func()) {
	g := make(chan struct{})
	h.mu.Lock()
	if h.held == nil {
		h.held = map[string]chan struct{}{}
	}
	h.held[node] = g
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		delete(h.held, node)
		h.mu.Unlock()
		close(g)
	}
}

// gate returns what node's frames wait for, nil if nothing.
func (h *hub) gate(node string) chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held[node]
}

type memBus struct {
	h    *hub
	node string
}

func (b memBus) Node() string { return b.node }
func (b memBus) Serve(id string, handle func([]byte) []byte) (func(), error) {
	b.h.mu.Lock()
	b.h.serve[id] = handle
	b.h.mu.Unlock()
	return func() { b.h.mu.Lock(); delete(b.h.serve, id); b.h.mu.Unlock() }, nil
}
func (b memBus) Call(ctx context.Context, id string, req []byte) ([]byte, error) {
	b.h.mu.Lock()
	handle := b.h.serve[id]
	b.h.mu.Unlock()
	if handle == nil {
		return nil, errors.New("no responders")
	}
	return handle(req), nil
}
func (b memBus) Publish(id string, frame []byte) error {
	b.h.mu.Lock()
	defer b.h.mu.Unlock()
	for _, ch := range b.h.subs[id] {
		ch <- frame
	}
	return nil
}
func (b memBus) Subscribe(id string, fn func([]byte)) (func(), error) {
	ch := make(chan []byte, 4096)
	b.h.mu.Lock()
	b.h.subs[id] = append(b.h.subs[id], ch)
	b.h.mu.Unlock()
	go func() {
		for f := range ch {
			if g := b.h.gate(b.node); g != nil {
				<-g
			}
			fn(f)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.h.mu.Lock()
			b.h.subs[id] = slices.DeleteFunc(b.h.subs[id], func(c chan []byte) bool { return c == ch })
			b.h.mu.Unlock()
			close(ch)
		})
	}, nil
}
func (b memBus) Alive(_ context.Context, node string) (bool, error) {
	b.h.mu.Lock()
	defer b.h.mu.Unlock()
	return !b.h.dead[node], nil
}

// owns grants every meeting to its node; elsewhere says node A owns it.
type owns struct{}

func (owns) Acquire(context.Context, string) (<-chan struct{}, error) {
	return make(chan struct{}), nil
}
func (owns) Release(string) {}

type elsewhere struct{}

func (elsewhere) Acquire(context.Context, string) (<-chan struct{}, error) {
	return nil, elsewhereErr{}
}
func (elsewhere) Release(string) {}

type elsewhereErr struct{}

func (elsewhereErr) Error() string     { return "served by node A" }
func (elsewhereErr) OwnerNode() string { return "A" }

// twoNodes returns the registries of node A, which owns meeting m (the
// host h connected there), and node B, where v1 and v2 connect.
func twoNodes(t *testing.T) (a, b *Registry, cs map[string]*Client) {
	t.Helper()
	a, b, cs, _ = twoNodesGrace(t, time.Minute)
	return a, b, cs
}

// twoNodesGrace is twoNodes with a reconnect grace of its own, and the
// hub.
func twoNodesGrace(t *testing.T, grace time.Duration) (a, b *Registry, cs map[string]*Client, h *hub) {
	t.Helper()
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar}, parts: []store.Participant{
		{ID: "h", UserID: "hu", Preset: "webinar_host"},
		{ID: "v1", UserID: "u1", Preset: "webinar_viewer"},
		{ID: "v2", UserID: "u2", Preset: "webinar_viewer"},
	}}
	h = &hub{serve: map[string]func([]byte) []byte{}, subs: map[string][]chan []byte{}, dead: map[string]bool{}}
	a = NewRegistry(s, Config{Logger: quiet(), Grace: grace, Ownership: owns{}, Bus: memBus{h, "A"}})
	b = NewRegistry(s, Config{Logger: quiet(), Grace: grace, Ownership: elsewhere{}, Bus: memBus{h, "B"}})
	t.Cleanup(func() { b.Close(); a.Close() })
	cs = map[string]*Client{}
	for _, x := range []struct {
		reg *Registry
		pid string
	}{{a, "h"}, {b, "v1"}, {b, "v2"}} {
		c, err := x.reg.Connect(ctx(t), "m", x.pid, nil)
		if err != nil {
			t.Fatalf("%s: %v", x.pid, err)
		}
		c.SetWriter(func() {}, nil)
		cs[x.pid] = c
	}
	return a, b, cs, h
}

// eventually waits for c to have been sent the events want, in order,
// among others.
func eventually(t *testing.T, c *Client, want ...string) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		got = append(got, events(t, c)...)
		rest := want
		for _, e := range got {
			if len(rest) > 0 && e == rest[0] {
				rest = rest[1:]
			}
		}
		if len(rest) == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s got %v, want %v among them", c.ParticipantID, got, want)
}

// The stage across two nodes: calls made on node B run on the owner, A;
// the events they cause reach the connections of both nodes, each call's
// before its answer; a viewer's host method is refused through B as on A.
func TestRemote_stageAcrossNodes(t *testing.T) {
	_, _, cs := twoNodes(t)
	if cs["v1"].proxy == nil || cs["h"].proxy != nil {
		t.Fatal("v1 should go through node B's proxy, h not")
	}
	st, err := cs["v1"].RequestAccess(ctx(t))
	if err != nil || st != stage.Requested {
		t.Fatalf("request through B: %v %v", st, err)
	}
	eventually(t, cs["h"], protocol.EventNewStageRequest)
	if _, err := cs["v2"].GrantAccess(ctx(t), []string{"u1"}); !errors.Is(err, stage.ErrPermissionDenied) {
		t.Fatalf("a viewer granting through B: %v", err)
	}
	if _, err := cs["h"].GrantAccess(ctx(t), []string{"u1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, cs["v1"], protocol.EventStageStatusUpdate, protocol.EventStageRequestApproved)
	if _, err := cs["v1"].JoinStage(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// v2, on B too, hears of it from one frame; h, on A, directly.
	eventually(t, cs["v2"], protocol.EventPeerStageStatusUpdate)
	eventually(t, cs["h"], protocol.EventPeerStageStatusUpdate)
	reqs, err := cs["h"].AccessRequests(ctx(t))
	if err != nil || len(reqs) != 0 {
		t.Fatalf("requests %v %v", reqs, err)
	}
}

// A node speaking a version two apart is refused, saying which versions
// this one speaks; a frame of such a version restarts the proxy's
// connections instead of being guessed at.
func TestRemote_versions(t *testing.T) {
	a, b, cs := twoNodes(t)
	m, err := a.get(ctx(t), "m")
	if err != nil {
		t.Fatal(err)
	}
	out := m.serveRemote([]byte(`{"v":3,"op":"call","node":"B","pid":"v1","method":"ping"}`))
	var resp remoteResp
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if err := resp.Error.err(); !errors.Is(err, stage.ErrUnavailable) || !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("a request of version 3: %v", err)
	}
	if resp := m.serveRemote([]byte(`{"v":0,"op":"call","node":"B","pid":"h","c":"x","method":"ping"}`)); strings.Contains(string(resp), "version") {
		t.Fatalf("the previous version is accepted: %s", resp)
	}
	b.mu.Lock()
	p := b.proxies["m"]
	b.mu.Unlock()
	p.onFrame([]byte(`{"v":3,"owner":"A","n":99,"k":"all","data":{}}`))
	if !cs["v1"].closed || cs["v1"].code != protocol.CloseGoingAway {
		t.Fatalf("v1 after a frame of version 3: closed %v code %d", cs["v1"].closed, cs["v1"].code)
	}
}

// A node that dies takes its connections with it: the owner, told by the
// node's liveness, gives their participants the reconnect grace, after
// which they have left.
func TestRemote_deadNode(t *testing.T) {
	a, _, cs, h := twoNodesGrace(t, 300*time.Millisecond)
	cs["v1"].RequestAccess(ctx(t)) // a pending request goes when v1 leaves
	eventually(t, cs["h"], protocol.EventNewStageRequest)
	h.mu.Lock()
	h.dead["B"] = true
	h.mu.Unlock()
	eventually(t, cs["h"], protocol.EventStageAccessRequestUpdate)
	ls, err := a.Live(ctx(t), "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Participants) != 1 || ls.Participants[0].ID != "h" || len(ls.Requests) != 0 {
		t.Fatalf("live after node B died: %+v", ls)
	}
}

// leases is one lease per meeting shared by the test's registries, as the
// cluster's bucket is.
type leases struct {
	mu   sync.Mutex
	held map[string]string
}

// memOwner is a node's view of the leases.
type memOwner struct {
	l    *leases
	node string
}

func (o memOwner) Acquire(_ context.Context, id string) (<-chan struct{}, error) {
	o.l.mu.Lock()
	defer o.l.mu.Unlock()
	if n, ok := o.l.held[id]; ok && n != o.node {
		return nil, ownerErr(n)
	}
	o.l.held[id] = o.node
	return make(chan struct{}), nil
}

func (o memOwner) Release(id string) {
	o.l.mu.Lock()
	defer o.l.mu.Unlock()
	if o.l.held[id] == o.node {
		delete(o.l.held, id)
	}
}

type ownerErr string

func (e ownerErr) Error() string     { return "served by node " + string(e) }
func (e ownerErr) OwnerNode() string { return string(e) }

// drain takes what c was sent: its events, and whether it was closed.
func drain(t *testing.T, c *Client) (evs []string, closed bool) {
	t.Helper()
	b := c.Take(nil)
	for _, m := range b.Messages {
		msg, err := protocol.DecodeMessage(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Type == protocol.TypeEvent && msg.Event != protocol.EventParticipantCount {
			evs = append(evs, msg.Event)
		}
	}
	return evs, b.Closed
}

// A connection through a node whose proxy has not yet heard of the
// hand-off (its frames late) waits for the proxy to hear it, and does not
// take the proxy's connections down with the old owner: they go on with
// the next owner, and the new connection with them.
func TestRemote_handOffHeardLate(t *testing.T) {
	h, l, regs := threeNodes(t)
	connect := func(node, pid string) *Client { return connectAt(t, regs, node, pid) }
	host, v1, v2 := connect("A", "h"), connect("B", "v1"), connect("C", "v2")
	if _, err := v2.RequestAccess(ctx(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, host, protocol.EventNewStageRequest)
	drain(t, v1)
	drain(t, v2)

	release := h.hold("C") // C hears nothing of what follows, for now
	regs["A"].Close()
	// B, which heard the move, takes the meeting over.
	if next, ok := l.waitHeld("m", func(n string) bool { return n == "B" }); !ok {
		t.Fatalf("the meeting is held by %q, want B", next)
	}
	// h comes back through C, whose proxy still thinks A owns it.
	got := make(chan *Client, 1)
	go func() {
		c, err := regs["C"].Connect(ctx(t), "m", "h", nil)
		if err != nil {
			t.Error("h through C:", err)
		}
		got <- c
	}()
	time.Sleep(50 * time.Millisecond) // let the connect find C's proxy unaware (it waits either way)
	release()
	host = <-got
	if host == nil {
		t.FailNow()
	}
	host.SetWriter(func() {}, nil)
	if rs, err := host.GrantAccess(ctx(t), []string{"u2"}); err != nil || rs[0].Err != nil {
		t.Fatalf("granting through C: %v %+v", err, rs)
	}
	eventually(t, v2, protocol.EventStageRequestApproved)
	if _, closed := drain(t, v2); closed {
		t.Fatal("v2's connection through C was closed")
	}
}

// A node that stops hands its meeting over without a pause: the other
// nodes' connections stay open and go on with the next owner (one of
// those nodes), missing no event and told of no one joining; the stopping
// node's own participant reconnects through another node within the
// grace, as a resumption.
func TestRemote_handOff(t *testing.T) {
	_, l, regs := threeNodes(t)
	cs := map[string]*Client{}
	connect := func(node, pid string) *Client { return connectAt(t, regs, node, pid) }
	cs["h"], cs["v1"], cs["v2"] = connect("A", "h"), connect("B", "v1"), connect("C", "v2")
	if _, err := cs["v1"].RequestAccess(ctx(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, cs["h"], protocol.EventNewStageRequest)
	drain(t, cs["v1"])
	drain(t, cs["v2"])

	regs["A"].Close() // SIGTERM: A hands the meeting over
	if _, closed := drain(t, cs["h"]); !closed {
		t.Fatal("the stopping node's own connection stays open")
	}
	next, ok := l.waitHeld("m", func(n string) bool { return n != "" && n != "A" })
	if !ok {
		t.Fatal("nobody took the meeting over")
	}
	// h comes back through the other node: a resumption.
	other := map[string]string{"B": "C", "C": "B"}[next]
	cs["h"] = connect(other, "h")
	if rs, err := cs["h"].GrantAccess(ctx(t), []string{"u1"}); err != nil || rs[0].Err != nil {
		t.Fatalf("granting through %s after the hand-off to %s: %v %+v", other, next, err, rs)
	}
	// A result's error crosses nodes as what it is.
	if rs, err := cs["h"].GrantAccess(ctx(t), []string{"nobody"}); err != nil || stage.CodeOf(rs[0].Err) != stage.CodeNotFound {
		t.Fatalf("granting an unknown user through %s: %v %+v", other, err, rs)
	}
	// v1's connection, kept all along, hears of it.
	eventually(t, cs["v1"], protocol.EventStageRequestApproved)
	for _, pid := range []string{"v1", "v2"} {
		evs, closed := drain(t, cs[pid])
		if closed {
			t.Fatalf("%s's connection was closed by the hand-off", pid)
		}
		if slices.Contains(evs, protocol.EventParticipantJoined) {
			t.Fatalf("%s was told someone joined: %v", pid, evs)
		}
	}
	if _, err := cs["v2"].RequestAccess(ctx(t)); err != nil {
		t.Fatalf("v2 calling through its kept connection: %v", err)
	}
	ls, err := regs[next].Live(ctx(t), "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Participants) != 3 || len(ls.Requests) != 1 || ls.Requests[0].ParticipantID != "v2" {
		t.Fatalf("live after the hand-off: %+v", ls)
	}
}

// threeNodes is a webinar "m" (a host h, viewers v1 and v2) served by
// three registries A, B and C over one in-memory bus and leases; A is
// left for the test to close.
func threeNodes(t *testing.T) (*hub, *leases, map[string]*Registry) {
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar}, parts: []store.Participant{
		{ID: "h", UserID: "hu", Preset: "webinar_host"},
		{ID: "v1", UserID: "u1", Preset: "webinar_viewer"},
		{ID: "v2", UserID: "u2", Preset: "webinar_viewer"},
	}}
	h := &hub{serve: map[string]func([]byte) []byte{}, subs: map[string][]chan []byte{}, dead: map[string]bool{}}
	l := &leases{held: map[string]string{}}
	regs := map[string]*Registry{}
	for _, n := range []string{"A", "B", "C"} {
		regs[n] = NewRegistry(s, Config{Logger: quiet(), Grace: time.Minute, Ownership: memOwner{l, n}, Bus: memBus{h, n}})
	}
	t.Cleanup(func() { regs["B"].Close(); regs["C"].Close() })
	return h, l, regs
}

// connectAt connects participant pid to "m" through node's registry, its
// writer a no-op.
func connectAt(t *testing.T, regs map[string]*Registry, node, pid string) *Client {
	t.Helper()
	c, err := regs[node].Connect(ctx(t), "m", pid, nil)
	if err != nil {
		t.Fatalf("%s at %s: %v", pid, node, err)
	}
	c.SetWriter(func() {}, nil)
	return c
}

// waitHeld waits up to 5 s for the lease of meeting id to be held by a
// node want accepts, and returns the holder, and whether want accepted it.
func (l *leases) waitHeld(id string, want func(node string) bool) (string, bool) {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		n := l.held[id]
		l.mu.Unlock()
		if want(n) {
			return n, true
		}
		if time.Now().After(deadline) {
			return n, false
		}
	}
}
