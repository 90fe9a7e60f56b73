package meeting

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// webinar returns a registry with one webinar "m": a host h (user hu) and
// viewers v1, v2 (users u1, u2), all connected, welcomes taken. The caller
// closes the registry.
func webinar(t *testing.T) (*Registry, *memStore, map[string]*Client) {
	t.Helper()
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar}, parts: []store.Participant{
		{ID: "h", UserID: "hu", Preset: "webinar_host"},
		{ID: "v1", UserID: "u1", Preset: "webinar_viewer"},
		{ID: "v2", UserID: "u2", Preset: "webinar_viewer"},
	}}
	reg := NewRegistry(s, Config{Logger: quiet(), Grace: time.Minute})
	cs := map[string]*Client{}
	for _, p := range s.parts {
		c, err := reg.Connect(context.Background(), "m", p.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetWriter(func() {}, nil)
		cs[p.ID] = c
	}
	for _, c := range cs {
		c.Take(nil)
	}
	return reg, s, cs
}

// events returns the names of the events queued for c since the last call.
func events(t *testing.T, c *Client) []string {
	t.Helper()
	var out []string
	for _, m := range c.Take(nil).Messages {
		msg, err := protocol.DecodeMessage(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Type == protocol.TypeEvent && msg.Event != protocol.EventParticipantCount {
			out = append(out, msg.Event)
		}
	}
	return out
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// The stage methods, called on clients: each returns its typed result and
// the events it caused are queued before it returns.
func TestClient_stageMethods(t *testing.T) {
	defer goleak.VerifyNone(t)
	reg, s, cs := webinar(t)
	defer reg.Close()
	h, v1 := cs["h"], cs["v1"]
	if st, err := v1.RequestAccess(ctx(t)); err != nil || st != stage.Requested {
		t.Fatalf("requestAccess: %v %v", st, err)
	}
	if got := events(t, h); !slices.Equal(got, []string{protocol.EventPeerStageStatusUpdate, protocol.EventNewStageRequest, protocol.EventStageAccessRequestUpdate}) {
		t.Errorf("host got %v", got)
	}
	reqs, err := h.AccessRequests(ctx(t))
	if err != nil || len(reqs) != 1 || reqs[0].UserID != "u1" {
		t.Fatalf("accessRequests: %v %v", reqs, err)
	}
	if _, err := v1.AccessRequests(ctx(t)); !errors.Is(err, stage.ErrPermissionDenied) {
		t.Errorf("a viewer read the requests: %v", err)
	}
	if _, err := v1.GrantAccess(ctx(t), []string{"u2"}); !errors.Is(err, stage.ErrPermissionDenied) {
		t.Errorf("a viewer granted: %v", err)
	}
	res, err := h.GrantAccess(ctx(t), []string{"u1", "nobody"})
	if err != nil || len(res) != 2 || res[0].Err != nil || !errors.Is(res[1].Err, stage.ErrNotFound) {
		t.Fatalf("grant: %v %v", res, err)
	}
	events(t, v1)
	if st, err := v1.JoinStage(ctx(t)); err != nil || st != stage.OnStage {
		t.Fatalf("join: %v %v", st, err)
	}
	if st, _ := s.status("v1"); st.Status != stage.OnStage {
		t.Errorf("stored %v after join", st.Status)
	}
	if st, err := v1.LeaveStage(ctx(t)); err != nil || st != stage.OffStage {
		t.Fatalf("leave: %v %v", st, err)
	}
	if _, err := v1.CancelRequestAccess(ctx(t)); !errors.Is(err, stage.ErrNoRequestToCancel) {
		t.Errorf("cancel with no request: %v", err)
	}
	if err := h.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// Every successful kick tells its target removedFromStage, whether it was
// on stage or only invited.
func TestKick_removedFromStage(t *testing.T) {
	defer goleak.VerifyNone(t)
	reg, _, cs := webinar(t)
	defer reg.Close()
	for _, onStage := range []bool{false, true} {
		if _, err := reg.GrantAccess(ctx(t), "m", []string{"u1"}); err != nil {
			t.Fatal(err)
		}
		if onStage {
			if _, err := cs["v1"].JoinStage(ctx(t)); err != nil {
				t.Fatal(err)
			}
		}
		events(t, cs["v1"])
		res, err := reg.Kick(ctx(t), "m", []string{"u1"})
		if err != nil || res[0].Err != nil {
			t.Fatalf("kick: %v %v", res, err)
		}
		if got := events(t, cs["v1"]); !slices.Contains(got, protocol.EventRemovedFromStage) {
			t.Errorf("on stage %v: the kicked participant got %v", onStage, got)
		}
	}
}

// A command whose change the store cannot make durable fails with
// UNAVAILABLE and changes nothing: not the stage, not the store, and no
// client hears of it. Once the store works again, so does the command.
func TestMeeting_storeFailureChangesNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	reg, s, cs := webinar(t)
	defer reg.Close()
	h, v1 := cs["h"], cs["v1"]
	if _, err := v1.RequestAccess(ctx(t)); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		events(t, c)
	}
	before, _ := reg.Live(ctx(t), "m")
	s.setFail(errDiskFull)
	calls := map[string]func() error{
		"grant (client)": func() error { _, err := h.GrantAccess(ctx(t), []string{"u1", "u2"}); return err },
		"grant (REST)":   func() error { _, err := reg.GrantAccess(ctx(t), "m", []string{"u1"}); return err },
		"deny":           func() error { _, err := reg.DenyAccess(ctx(t), "m", []string{"u1"}); return err },
		"cancel":         func() error { _, err := v1.CancelRequestAccess(ctx(t)); return err },
		"request":        func() error { _, err := cs["v2"].RequestAccess(ctx(t)); return err },
		"preset":         func() error { return reg.SetPreset(ctx(t), "m", "v1", "webinar_host") },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, stage.ErrUnavailable) {
			t.Errorf("%s with a failing store: %v", name, err)
		}
		for id, c := range cs {
			if got := events(t, c); len(got) != 0 {
				t.Errorf("%s: %s was told %v", name, id, got)
			}
		}
	}
	after, _ := reg.Live(ctx(t), "m")
	if !slices.Equal(after.Requests, before.Requests) || after.Seq != before.Seq {
		t.Errorf("the live state changed:\n%+v\n%+v", before, after)
	}
	for _, p := range after.Participants {
		want := stage.OffStage
		if p.ID == "v1" {
			want = stage.Requested
		}
		if p.Status != want || p.Preset == "webinar_host" && p.ID != "h" {
			t.Errorf("%s is %v, preset %s", p.ID, p.Status, p.Preset)
		}
	}
	if st, _ := s.status("v1"); st.Status != stage.Requested {
		t.Errorf("stored %v", st.Status)
	}
	s.setFail(nil)
	if res, err := h.GrantAccess(ctx(t), []string{"u1"}); err != nil || res[0].Err != nil {
		t.Fatalf("grant once the store works: %v %v", res, err)
	}
	if st, _ := s.status("v1"); st.Status != stage.Accepted {
		t.Errorf("stored %v after the grant", st.Status)
	}
	if got := events(t, v1); !slices.Contains(got, protocol.EventStageRequestApproved) {
		t.Errorf("the viewer got %v", got)
	}
}

// A request that expires while the store fails expires once it works
// again, and is never told before.
func TestMeeting_expiryRetriesAfterStoreFailure(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar, StageRequestTTL: 50 * time.Millisecond}, parts: []store.Participant{
		{ID: "v1", UserID: "u1", Preset: "webinar_viewer"},
	}}
	reg := NewRegistry(s, Config{Logger: quiet(), Grace: time.Minute})
	defer reg.Close()
	v1, err := reg.Connect(ctx(t), "m", "v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	v1.SetWriter(func() {}, nil)
	s.setFail(errDiskFull)
	if _, err := v1.RequestAccess(ctx(t)); !errors.Is(err, stage.ErrUnavailable) {
		t.Fatalf("request with a failing store: %v", err)
	}
	s.setFail(nil)
	if _, err := v1.RequestAccess(ctx(t)); err != nil {
		t.Fatal(err)
	}
	s.setFail(errDiskFull)
	time.Sleep(200 * time.Millisecond) // past the TTL: the expiry fails now
	if ls, _ := reg.Live(ctx(t), "m"); len(ls.Requests) != 1 {
		t.Fatalf("the request expired although the store failed: %+v", ls)
	}
	s.setFail(nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ls, _ := reg.Live(ctx(t), "m"); len(ls.Requests) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request never expired once the store worked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, _ := s.status("v1"); st.Status != stage.OffStage {
		t.Errorf("stored %v after the expiry", st.Status)
	}
}

// A call made on a connection that a newer one replaced is refused.
func TestClient_replacedConnection(t *testing.T) {
	defer goleak.VerifyNone(t)
	reg, _, cs := webinar(t)
	defer reg.Close()
	if _, err := reg.Connect(ctx(t), "m", "v1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cs["v1"].RequestAccess(ctx(t)); !errors.Is(err, stage.ErrNotFound) {
		t.Errorf("a replaced connection's call: %v", err)
	}
}
