package server_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/stage"
)

// observer records, for one client, every stage change it is told about, in
// the order it is told: its own (stageStatusUpdate) and everyone else's
// (peerStageStatusUpdate).
type observer struct {
	uid  string
	mu   sync.Mutex
	seen []string // "user:OLD>NEW"
	evs  []client.Event
	done chan struct{}
}

func observe(uid string, m *client.Meeting) *observer {
	o := &observer{uid: uid, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for e := range m.Events() {
			o.mu.Lock()
			o.evs = append(o.evs, e)
			switch e := e.(type) {
			case client.StageStatusUpdate:
				o.seen = append(o.seen, fmt.Sprintf("%s:%v>%v", uid, e.Old, e.New))
			case client.PeerStageStatusUpdate:
				o.seen = append(o.seen, fmt.Sprintf("%s:%v>%v", e.Participant.UserID, e.Old, e.New))
			}
			o.mu.Unlock()
		}
	}()
	return o
}

func (o *observer) changes() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.seen)
}

func (o *observer) count(name string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, e := range o.evs {
		if e.Name() == name {
			n++
		}
	}
	return n
}

// waitChanges waits until every observer has seen n changes.
func waitChanges(t *testing.T, obs []*observer, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, o := range obs {
		for len(o.changes()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s saw %d of %d changes: %v", o.uid, len(o.changes()), n, o.changes())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// sameOrder checks that every observer saw the same changes in the same order.
func sameOrder(t *testing.T, obs []*observer) []string {
	t.Helper()
	want := obs[0].changes()
	for _, o := range obs[1:] {
		if got := o.changes(); !slices.Equal(got, want) {
			t.Fatalf("%s saw\n%v\n%s saw\n%v", obs[0].uid, want, o.uid, got)
		}
	}
	return want
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWebinarStory is the story: a host and a hundred viewers;
// requests in arrival order, grants, denials, a cancel, a direct invite,
// joins, a kick and a leave, seen by everyone in one order.
func TestWebinarStory(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "Launch", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	obs := []*observer{observe("host", host)}
	viewers := make([]*client.Meeting, 100)
	for i := range viewers {
		viewers[i] = ts.join(ts.participant(mid, uid(i), "webinar_viewer"))
		obs = append(obs, observe(uid(i), viewers[i]))
	}

	for i := range 10 {
		must(t, viewers[i].Stage.RequestAccess(ctx))
	}
	must(t, viewers[3].Stage.RequestAccess(ctx)) // again: nothing changes, nobody is told
	reqs, err := host.Stage.GetAccessRequests(ctx)
	must(t, err)
	var order []string
	for _, r := range reqs {
		order = append(order, r.UserID)
	}
	if want := []string{uid(0), uid(1), uid(2), uid(3), uid(4), uid(5), uid(6), uid(7), uid(8), uid(9)}; !slices.Equal(order, want) {
		t.Fatalf("requests in order %v, want %v", order, want)
	}
	if err := viewers[0].Stage.GrantAccess(ctx, uid(5)); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("a viewer granting: %v", err)
	}

	must(t, host.Stage.GrantAccess(ctx, uid(0), uid(1), uid(2)))
	must(t, host.Stage.DenyAccess(ctx, uid(3), uid(4)))
	must(t, viewers[5].Stage.CancelRequestAccess(ctx))
	must(t, host.Stage.GrantAccess(ctx, uid(50))) // a direct invite
	for _, i := range []int{0, 1, 2, 50} {
		must(t, viewers[i].Stage.Join(ctx))
	}
	must(t, host.Stage.Join(ctx))
	must(t, host.Stage.Kick(ctx, uid(1)))
	must(t, viewers[2].Stage.Leave(ctx))

	const total = 10 + 3 + 2 + 1 + 1 + 4 + 1 + 1 + 1
	waitChanges(t, obs, total)
	seen := sameOrder(t, obs)
	if len(seen) != total {
		t.Fatalf("saw %d changes, want %d: %v", len(seen), total, seen)
	}
	if seen[0] != uid(0)+":OFF_STAGE>REQUESTED_TO_JOIN_STAGE" || seen[total-1] != uid(2)+":ON_STAGE>OFF_STAGE" {
		t.Fatalf("first/last change: %s, %s", seen[0], seen[total-1])
	}

	want := map[string]stage.Status{"host": stage.OnStage, uid(0): stage.OnStage, uid(50): stage.OnStage,
		uid(6): stage.Requested, uid(7): stage.Requested, uid(8): stage.Requested, uid(9): stage.Requested}
	for i, v := range viewers {
		if got := v.Stage.Status(); got != want[uid(i)] {
			t.Errorf("%s status %v, want %v", uid(i), got, want[uid(i)])
		}
	}
	// The REST view agrees.
	var list server.List[server.Participant]
	ts.mustAPI("GET", "/v1/meetings/"+mid+"/participants?limit=500", nil, &list)
	for _, p := range list.Data {
		if p.StageStatus != want[p.UserID] {
			t.Errorf("REST: %s %v, want %v", p.UserID, p.StageStatus, want[p.UserID])
		}
	}
	var live server.Live
	ts.mustAPI("GET", "/v1/meetings/"+mid+"/live", nil, &live)
	if len(live.Participants) != 101 || len(live.Requests) != 4 || live.Requests[0].UserID != uid(6) {
		t.Fatalf("live: %d participants, requests %+v", len(live.Participants), live.Requests)
	}

	// The events each party gets.
	if n := obs[0].count("newStageRequest"); n != 10 {
		t.Errorf("host got %d newStageRequest, want 10", n)
	}
	if n := obs[1].count("stageRequestApproved"); n != 1 {
		t.Errorf("viewer 0 got %d stageRequestApproved", n)
	}
	if n := obs[4].count("stageRequestRejected"); n != 1 {
		t.Errorf("viewer 3 got %d stageRequestRejected", n)
	}
	if n := obs[2].count("removedFromStage"); n != 1 {
		t.Errorf("viewer 1 got %d removedFromStage", n)
	}
	if n := obs[20].count("stageAccessRequestUpdate"); n != 0 {
		t.Errorf("a viewer got %d stageAccessRequestUpdate", n)
	}
	if got := host.Stage.Requests(); len(got) != 4 || got[0].UserID != uid(6) {
		t.Errorf("host's pending list %+v", got)
	}
}

// TestStageRace: grants, cancels, requests, joins and kicks race each other;
// every participant ends up with the same history and the same final state.
func TestStageRace(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "Race", "type": "WEBINAR", "max_on_stage": 12})
	ctx := ctxT(t)
	hosts := []*client.Meeting{
		ts.join(ts.participant(mid, "host-a", "webinar_host")),
		ts.join(ts.participant(mid, "host-b", "webinar_host")),
	}
	obs := []*observer{observe("host-a", hosts[0]), observe("host-b", hosts[1])}
	const n = 30
	viewers := make([]*client.Meeting, n)
	ids := make([]string, n)
	for i := range viewers {
		ids[i] = uid(i)
		viewers[i] = ts.join(ts.participant(mid, ids[i], "webinar_viewer"))
		obs = append(obs, observe(ids[i], viewers[i]))
	}
	var wg sync.WaitGroup
	for i, v := range viewers {
		wg.Go(func() {
			for range 5 {
				v.Stage.RequestAccess(ctx)
				if i%3 == 0 {
					v.Stage.CancelRequestAccess(ctx)
				}
				v.Stage.Join(ctx)
				if i%4 == 0 {
					v.Stage.Leave(ctx)
				}
			}
		})
	}
	for h, host := range hosts {
		wg.Go(func() {
			for r := range 5 {
				host.Stage.GrantAccess(ctx, ids...)
				if (r+h)%2 == 0 {
					host.Stage.Kick(ctx, ids[h*10:h*10+10]...)
				} else {
					host.Stage.DenyAccess(ctx, ids...)
				}
			}
		})
	}
	wg.Wait()
	// A marker after the race: a participant nobody raced with asks for
	// the stage. Every observer sees every change in one order, so one
	// that has the marker has everything before it, however slow.
	marker := ts.join(ts.participant(mid, "marker", "webinar_viewer"))
	must(t, marker.Stage.RequestAccess(ctx))
	for _, o := range obs {
		deadline := time.Now().Add(15 * time.Second)
		for !slices.ContainsFunc(o.changes(), func(c string) bool { return strings.HasPrefix(c, "marker:") }) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never saw the marker", o.uid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var list server.List[server.Participant]
	ts.mustAPI("GET", "/v1/meetings/"+mid+"/participants?limit=500", nil, &list)
	final := map[string]stage.Status{}
	occupied := 0
	for _, p := range list.Data {
		final[p.UserID] = p.StageStatus
		if p.StageStatus == stage.OnStage || p.StageStatus == stage.Accepted {
			occupied++
		}
	}
	if occupied > 12 {
		t.Fatalf("max_on_stage 12 exceeded: %d", occupied)
	}
	// Replaying each observer's history from all-OFF gives the stored state.
	seen := sameOrder(t, obs)
	if len(seen) < 2*n {
		t.Fatalf("only %d changes: the race did not race", len(seen))
	}
	replay := map[string]stage.Status{}
	for _, c := range seen {
		var u, from, to string
		fmt.Sscanf(replaceSep(c), "%s %s %s", &u, &from, &to)
		replay[u], _ = stage.ParseStatus(to)
	}
	for u, st := range final {
		if replay[u] != st {
			t.Errorf("%s: replayed %v, stored %v", u, replay[u], st)
		}
	}
	for i, v := range viewers {
		if v.Stage.Status() != final[ids[i]] {
			t.Errorf("%s: client %v, stored %v", ids[i], v.Stage.Status(), final[ids[i]])
		}
	}
}

func replaceSep(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == ':' || c == '>' {
			b[i] = ' '
		}
	}
	return string(b)
}
