package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

func userIDs(rs []stage.Request) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.UserID)
	}
	return out
}

// TestRestart_clientsResume: the server stops and starts again on the same
// address; every client reconnects by itself and finds the stage as it was.
func TestRestart_clientsResume(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	vs := make([]*client.Meeting, 6)
	for i := range vs {
		vs[i] = ts.join(ts.participant(mid, uid(i), "webinar_viewer"))
	}
	must(t, host.Stage.Join(ctx))
	for _, i := range []int{4, 1, 3, 0} {
		must(t, vs[i].Stage.RequestAccess(ctx))
	}
	must(t, host.Stage.GrantAccess(ctx, uid(1)))
	must(t, vs[1].Stage.Join(ctx))
	must(t, host.Stage.GrantAccess(ctx, uid(5)))
	before, _ := host.Stage.GetAccessRequests(ctx)

	ts.stop()
	ts.start()

	for _, m := range append([]*client.Meeting{host}, vs...) {
		waitFor(t, m, "reconnected", named("reconnected"))
	}
	want := []stage.Status{stage.Requested, stage.OnStage, stage.OffStage, stage.Requested, stage.Requested, stage.Accepted}
	for i, v := range vs {
		if v.Stage.Status() != want[i] {
			t.Errorf("%s: %v after restart, want %v", uid(i), v.Stage.Status(), want[i])
		}
	}
	if host.Stage.Status() != stage.OnStage {
		t.Errorf("host: %v", host.Stage.Status())
	}
	after, err := host.Stage.GetAccessRequests(ctx)
	must(t, err)
	if !slices.Equal(userIDs(after), userIDs(before)) || !after[0].RequestedAt.Equal(before[0].RequestedAt) {
		t.Fatalf("requests after restart %+v, before %+v", after, before)
	}
	// The meeting goes on.
	must(t, host.Stage.GrantAccess(ctx, uid(4)))
	waitFor(t, vs[4], "approval", named("stageRequestApproved"))
}

// TestRequesterLeaves: a requester who leaves the meeting loses its
// request, and the hosts are told.
func TestRequesterLeaves(t *testing.T) {
	ts := startServer(t, testOptions{grace: time.Hour})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	ann := ts.join(ts.participant(mid, "ann", "webinar_viewer"))
	bob := ts.join(ts.participant(mid, "bob", "webinar_viewer"))
	must(t, ann.Stage.RequestAccess(ctx))
	must(t, bob.Stage.RequestAccess(ctx))
	ann.Close()
	e := waitFor(t, host, "ann's departure", func(e client.Event) bool {
		p, ok := e.(client.PeerStageStatusUpdate)
		return ok && p.Participant.UserID == "ann" && p.New == stage.OffStage
	}).(client.PeerStageStatusUpdate)
	if e.Reason != stage.CauseDepart {
		t.Fatalf("departure %+v", e)
	}
	u := waitFor(t, host, "request update", named("stageAccessRequestUpdate")).(client.StageAccessRequestUpdate)
	if len(u.Requests) != 1 || u.Requests[0].UserID != "bob" {
		t.Fatalf("pending after departure %+v", u.Requests)
	}
	waitFor(t, host, "ann left", named("participantLeft"))
}

// TestExpiry: an unanswered request expires after the meeting's TTL.
func TestExpiry(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR", "stage_request_ttl": 1})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	ann := ts.join(ts.participant(mid, "ann", "webinar_viewer"))
	must(t, ann.Stage.RequestAccess(ctx))
	e := waitFor(t, ann, "rejection", named("stageRequestRejected")).(client.StageRequestRejected)
	if e.Reason != stage.CauseExpire || ann.Stage.Status() != stage.OffStage {
		t.Fatalf("expiry %+v, status %v", e, ann.Stage.Status())
	}
	waitFor(t, host, "empty pending list", func(e client.Event) bool {
		u, ok := e.(client.StageAccessRequestUpdate)
		return ok && len(u.Requests) == 0
	})
}

// TestExpiry_acrossRestart: a request made before a restart expires on time
// after it.
func TestExpiry_acrossRestart(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR", "stage_request_ttl": 2})
	ctx := ctxT(t)
	ann := ts.join(ts.participant(mid, "ann", "webinar_viewer"))
	must(t, ann.Stage.RequestAccess(ctx))
	start := time.Now()
	ts.stop()
	ts.start()
	waitFor(t, ann, "reconnected", named("reconnected"))
	if ann.Stage.Status() != stage.Requested {
		t.Fatalf("status after restart %v", ann.Stage.Status())
	}
	waitFor(t, ann, "rejection", named("stageRequestRejected"))
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("expired after %v, TTL 2s", el)
	}
}

// TestPresetChange: a preset change that forbids the stage takes the
// participant off it.
func TestPresetChange(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	var added struct {
		Participant struct{ ID string } `json:"participant"`
		Token       string              `json:"token"`
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "P", "user_id": "pan", "preset": "webinar_panelist"}, &added)
	pan := ts.join(added.Token)
	bob := ts.join(ts.participant(mid, "bob", "webinar_viewer"))
	must(t, pan.Stage.Join(ctx))
	waitFor(t, bob, "pan on stage", named("peerStageStatusUpdate"))
	ts.mustAPI("PATCH", "/v1/meetings/"+mid+"/participants/"+added.Participant.ID, map[string]any{"preset": "webinar_audience"}, nil)
	e := waitFor(t, bob, "pan off stage", named("peerStageStatusUpdate")).(client.PeerStageStatusUpdate)
	if e.New != stage.OffStage || e.Reason != stage.CausePermissions {
		t.Fatalf("%+v", e)
	}
	waitFor(t, pan, "permissions", named("permissionsUpdate"))
	waitFor(t, pan, "own status", named("stageStatusUpdate"))
	if pan.Permissions().StageAccess != stage.NotAllowed || pan.Stage.Status() != stage.OffStage {
		t.Fatalf("pan: %+v %v", pan.Permissions(), pan.Stage.Status())
	}
}

// TestGrantWhileAway: a grant to a participant who is not connected takes
// effect, and the participant finds it when it comes back.
func TestGrantWhileAway(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	tok := ts.participant(mid, "ann", "webinar_viewer")
	ts.participant(mid, "bob", "webinar_viewer") // never connects
	ann := ts.join(tok)
	must(t, ann.Stage.RequestAccess(ctx))
	ann.Close()
	var res struct {
		Results []struct {
			UserID string          `json:"user_id"`
			Error  json.RawMessage `json:"error"`
		} `json:"results"`
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/stage/grant", map[string]any{"user_ids": []string{"ann", "bob"}}, &res)
	if len(res.Results) != 2 || res.Results[0].Error != nil || res.Results[1].Error != nil {
		t.Fatalf("grant results %+v", res)
	}
	ann = ts.join(tok)
	if ann.Stage.Status() != stage.Accepted {
		t.Fatalf("ann came back %v", ann.Stage.Status())
	}
	must(t, ann.Stage.Join(ctx))
	bob := ts.join(ts.participant(mid, "carl", "webinar_viewer"))
	if p, ok := bob.Participant("bob"); !ok || p.Status != stage.Accepted || p.Connected {
		t.Fatalf("carl sees bob as %+v %v", p, ok)
	}
}

// TestParticipantCount: viewers are not told of each other one by one, but
// learn how many are connected every few seconds.
func TestParticipantCount(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	a := ts.join(ts.participant(mid, "a", "webinar_viewer"))
	b := ts.join(ts.participant(mid, "b", "webinar_viewer"))
	ts.join(ts.participant(mid, "c", "webinar_viewer"))
	waitCount := func(m *client.Meeting, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for m.ParticipantCount() != want {
			if time.Now().After(deadline) {
				t.Fatalf("count %d, want %d", m.ParticipantCount(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCount(a, 3)
	if len(a.Participants()) != 0 {
		t.Fatalf("a viewer was told of other viewers: %+v", a.Participants())
	}
	b.Close()
	waitCount(a, 2)
}

// TestGrace_dropAndReturn: a connection that drops (no close handshake)
// keeps the participant's place for the grace period: it comes back with its
// request; one that stays away past the grace period loses it.
func TestGrace_dropAndReturn(t *testing.T) {
	ts := startServer(t, testOptions{grace: 500 * time.Millisecond})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	tok := ts.participant(mid, "ann", "webinar_viewer")
	c := rawConn(t, ts, tok)
	c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"method":"stage.requestAccess"}`))
	response(t, c, 1)
	c.NetConn().Close() // dropped, not closed
	// Nobody is told of a drop within the grace: wait until the server
	// has noticed it (ann no longer connected), so the join below is a
	// return, not a replacement.
	waitLive(t, ts, mid, func(l live) bool { return !l.connected("ann") })
	ann := ts.join(tok)
	if ann.Stage.Status() != stage.Requested {
		t.Fatalf("back within grace as %v", ann.Stage.Status())
	}
	reqs, err := host.Stage.GetAccessRequests(ctx)
	if err != nil || len(reqs) != 1 {
		t.Fatalf("requests %+v %v", reqs, err)
	}
	// Dropped again, and away past the grace period.
	c2 := rawConn(t, ts, tok)
	c2.NetConn().Close()
	waitFor(t, host, "ann's departure", func(e client.Event) bool {
		p, ok := e.(client.PeerStageStatusUpdate)
		return ok && p.Participant.UserID == "ann" && p.Reason == stage.CauseDepart
	})
}

// live is GET /v1/meetings/{id}/live.
type live struct {
	Participants []struct {
		UserID string `json:"user_id"`
	}
}

func (l live) connected(uid string) bool {
	for _, p := range l.Participants {
		if p.UserID == uid {
			return true
		}
	}
	return false
}

// waitLive polls the meeting's live state until ok says so.
func waitLive(t *testing.T, ts *testServer, mid string, ok func(live) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var l live
		ts.mustAPI("GET", "/v1/meetings/"+mid+"/live", nil, &l)
		if ok(l) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live state never became what was awaited: %+v", l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSeq_growsAcrossRestart: event sequence numbers keep growing when the
// meeting is loaded again.
func TestSeq_growsAcrossRestart(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	c := rawConn(t, ts, ts.participant(mid, "ann", "webinar_viewer"))
	c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"method":"stage.requestAccess"}`))
	var before uint64
	for before == 0 {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if m, _ := protocol.DecodeMessage(b); m.Type == protocol.TypeEvent {
			before = m.Seq
		}
	}
	ts.stop()
	// Sequence numbers start from the load time in milliseconds: the
	// property under test needs the clock to have moved past the first
	// load's millisecond, which a fast restart can beat.
	for loaded := time.UnixMilli(int64(before / 1000)); !time.Now().After(loaded.Add(time.Millisecond)); {
		runtime.Gosched()
	}
	ts.start()
	c2, _, err := websocket.DefaultDialer.Dial(strings.Replace(ts.URL, "http", "ws", 1)+"/v1/realtime", bearer(ts.participant(mid, "bob", "webinar_viewer")))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, b, err := c2.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := protocol.DecodeMessage(b); w.Type != protocol.TypeWelcome || w.Seq <= before {
		t.Fatalf("welcome seq %d after an event at %d", w.Seq, before)
	}
}

// TestHiddenParticipant: a hidden participant is listed to nobody, counted
// by nobody, and can never be on stage.
func TestHiddenParticipant(t *testing.T) {
	ts := startServer(t, testOptions{})
	ts.mustAPI("POST", "/v1/presets", map[string]any{"name": "recorder", "permissions": map[string]any{
		"stage_enabled": true, "stage_access": "ALLOWED", "hidden_participant": true}}, nil)
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	rec := ts.join(ts.participant(mid, "rec", "recorder"))
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	if _, ok := host.Participant("rec"); ok || host.ParticipantCount() != 1 {
		t.Fatalf("the host sees the recorder: count %d", host.ParticipantCount())
	}
	if err := rec.Stage.Join(ctx); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("hidden join: %v", err)
	}
	if err := host.Stage.GrantAccess(ctx, "rec"); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("granting the hidden: %v", err)
	}
	// The recorder still sees the stage.
	must(t, host.Stage.Join(ctx))
	waitFor(t, rec, "the host on stage", named("peerStageStatusUpdate"))
}

// TestTokenRefresh: a client whose token expired while it was connected gets
// a fresh one from RefreshToken when it has to reconnect.
func TestTokenRefresh(t *testing.T) {
	var clk clock
	ts := startServer(t, testOptions{now: clk.now})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	var added struct {
		Participant struct{ ID string } `json:"participant"`
		Token       string              `json:"token"`
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "A", "user_id": "ann", "preset": "webinar_viewer", "token_ttl": 60}, &added)
	refreshes := 0
	ann, err := client.Join(ctx, ts.URL, added.Token, &client.Options{ReconnectMin: 20 * time.Millisecond,
		RefreshToken: func(context.Context) (string, error) {
			refreshes++
			var fresh struct{ Token string }
			ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants/"+added.Participant.ID+"/token", nil, &fresh)
			return fresh.Token, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer ann.Close()
	must(t, ann.Stage.RequestAccess(ctx))
	clk.advance(2 * time.Minute) // the token expires
	ts.stop()
	ts.start()
	waitFor(t, ann, "reconnected", named("reconnected"))
	if refreshes != 1 || ann.Stage.Status() != stage.Requested {
		t.Fatalf("%d refreshes, status %v", refreshes, ann.Stage.Status())
	}
}

// A write deadline left by an earlier blocking write or a ping must not
// fail the writes that come long after it (a regression: connections were
// dropped on the first event more than the write timeout after a ping).
func TestWriteDeadlineDoesNotLinger(t *testing.T) {
	ts := startServer(t, testOptions{writeTimeout: 50 * time.Millisecond, ping: time.Second})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	v := ts.join(ts.participant(mid, "v", "webinar_viewer"))
	ho, vo := observe("host", host), observe("v", v)
	for round := range 3 {
		// Past the deadline of the welcome's write, then of a ping's.
		time.Sleep([]time.Duration{300 * time.Millisecond, 1100 * time.Millisecond, 300 * time.Millisecond}[round])
		if round%2 == 0 {
			must(t, v.Stage.RequestAccess(ctx))
		} else {
			must(t, v.Stage.CancelRequestAccess(ctx))
		}
		deadline := time.Now().Add(10 * time.Second)
		for ho.count("stageAccessRequestUpdate") < round+1 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the host was not told", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, o := range []*observer{ho, vo} {
		if n := o.count("disconnected"); n > 0 {
			t.Errorf("%s was disconnected %d times", o.uid, n)
		}
	}
}
