package server_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/stage"
)

type apiError struct {
	Error protocol.Error `json:"error"`
}

func TestREST_badInput(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ts.participant(mid, "ann", "webinar_viewer")
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               stage.Code
	}{
		{"malformed JSON", "POST", "/v1/meetings", `{"title": "x", "type":`, 400, stage.CodeBadRequest},
		{"not an object", "POST", "/v1/meetings", `[1,2]`, 400, stage.CodeBadRequest},
		{"trailing data", "POST", "/v1/meetings", `{"title":"x","type":"WEBINAR"} {}`, 400, stage.CodeBadRequest},
		{"empty body", "POST", "/v1/meetings", ``, 400, stage.CodeBadRequest},
		{"unknown field", "POST", "/v1/meetings", `{"title":"x","type":"WEBINAR","max_on_stag":3}`, 400, stage.CodeBadRequest},
		{"unknown type", "POST", "/v1/meetings", `{"title":"x","type":"PARTY"}`, 400, stage.CodeBadRequest},
		{"missing title", "POST", "/v1/meetings", `{"type":"WEBINAR"}`, 400, stage.CodeBadRequest},
		{"negative max", "POST", "/v1/meetings", `{"title":"x","type":"WEBINAR","max_on_stage":-1}`, 400, stage.CodeBadRequest},
		{"oversized body", "POST", "/v1/meetings", `{"title":"` + strings.Repeat("x", 2<<20) + `","type":"WEBINAR"}`, 400, stage.CodeBadRequest},
		{"unknown meeting", "GET", "/v1/meetings/mtg_nope", nil, 404, stage.CodeNotFound},
		{"unknown meeting participants", "POST", "/v1/meetings/mtg_nope/participants", `{"name":"a","user_id":"a","preset":"webinar_viewer"}`, 404, stage.CodeNotFound},
		{"unknown participant", "GET", "/v1/meetings/" + mid + "/participants/prt_nope", nil, 404, stage.CodeNotFound},
		{"unknown preset", "POST", "/v1/meetings/" + mid + "/participants", `{"name":"b","user_id":"b","preset":"nope"}`, 404, stage.CodeNotFound},
		{"duplicate user", "POST", "/v1/meetings/" + mid + "/participants", `{"name":"a","user_id":"ann","preset":"webinar_viewer"}`, 409, stage.CodeBadRequest},
		{"unknown action", "POST", "/v1/meetings/" + mid + "/stage/promote", `{"user_ids":["ann"]}`, 404, stage.CodeNotFound},
		{"empty user ids", "POST", "/v1/meetings/" + mid + "/stage/grant", `{"user_ids":[]}`, 400, stage.CodeBadRequest},
		{"bad stage_access", "POST", "/v1/presets", `{"name":"p","permissions":{"stage_access":"SOMETIMES"}}`, 400, stage.CodeBadRequest},
		{"bad preset name", "POST", "/v1/presets", `{"name":"Bad Name","permissions":{}}`, 400, stage.CodeBadRequest},
		{"delete preset in use", "DELETE", "/v1/presets/webinar_viewer", nil, 409, stage.CodeBadRequest},
		{"bad limit", "GET", "/v1/meetings?limit=0", nil, 400, stage.CodeBadRequest},
		{"bad cursor", "GET", "/v1/meetings?cursor=abc", nil, 400, stage.CodeBadRequest},
		{"no endpoint", "GET", "/v1/nothing", nil, 404, stage.CodeNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before server.List[server.Meeting]
			ts.mustAPI("GET", "/v1/meetings?limit=500", nil, &before)
			var e apiError
			if got := ts.api(c.method, c.path, c.body, &e); got != c.status || e.Error.Code != c.code || e.Error.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", got, e, c.status, c.code)
			}
			var after server.List[server.Meeting]
			ts.mustAPI("GET", "/v1/meetings?limit=500", nil, &after)
			if len(after.Data) != len(before.Data) {
				t.Fatal("a refused request created a meeting")
			}
		})
	}
	// Without the API key.
	req, _ := http.NewRequest("GET", ts.URL+"/v1/meetings", nil)
	req.Header.Set("Authorization", "Bearer wrong-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e apiError
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 401 || e.Error.Code != stage.CodeUnauthenticated {
		t.Fatalf("wrong key: %d %+v", resp.StatusCode, e)
	}
	// Moderation: one bad id does not block the others.
	var res protocol.BatchResult
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/stage/grant", map[string]any{"user_ids": []string{"ghost", "ann"}}, &res)
	if res.Results[0].Error == nil || res.Results[0].Error.Code != stage.CodeNotFound || res.Results[1].Error != nil {
		t.Fatalf("grant results %+v", res)
	}
}

// clock is a settable clock for tests.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

func TestRealtime_badTokens(t *testing.T) {
	var clk clock
	ts := startServer(t, testOptions{now: clk.now})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	other := ts.meeting(map[string]any{"title": "Other", "type": "WEBINAR"})
	tok := ts.participant(mid, "ann", "webinar_viewer")
	forged := tok[:len(tok)-4] + "AAAA"
	// A token whose claims were edited keeps a signature that no longer fits.
	parts := strings.Split(tok, ".")
	edited := parts[0] + "." + strings.ToUpper(parts[1][:4]) + parts[1][4:] + "." + parts[2]
	ctx := ctxT(t)
	for name, token := range map[string]string{"forged": forged, "edited": edited, "garbage": "hello", "empty": ""} {
		if _, err := client.Join(ctx, ts.URL, token, nil); !errors.Is(err, client.ErrUnauthenticated) {
			t.Errorf("%s token: %v", name, err)
		}
	}
	// The token of another meeting.
	d := websocket.Dialer{}
	_, resp, err := d.Dial(strings.Replace(ts.URL, "http", "ws", 1)+"/v1/realtime?meeting="+other, bearer(tok))
	if err == nil || resp.StatusCode != 401 {
		t.Fatalf("other meeting's token: %v", err)
	}
	// An expired token.
	clk.advance(25 * time.Hour)
	if _, err := client.Join(ctx, ts.URL, tok, nil); !errors.Is(err, client.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
}

// bearer is the header that carries a participant token.
func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// rawConn is a WebSocket without the SDK, for input the SDK never sends.
func rawConn(t *testing.T, ts *testServer, token string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(strings.Replace(ts.URL, "http", "ws", 1)+"/v1/realtime", bearer(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.ReadMessage(); err != nil { // the welcome
		t.Fatal(err)
	}
	return c
}

// response reads until the response to id.
func response(t *testing.T, c *websocket.Conn, id uint64) protocol.Message {
	t.Helper()
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		m, _ := protocol.DecodeMessage(b)
		if m.Type == protocol.TypeResponse && m.ID == id {
			return m
		}
	}
}

func TestRealtime_badMessages(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	c := rawConn(t, ts, ts.participant(mid, "ann", "webinar_viewer"))
	for _, msg := range []string{
		`{"id":1,"method":"stage.join"`,                                 // malformed
		`{"id":2,"method":"stage.fly"}`,                                 // unknown method
		`{"id":3,"method":"stage.kick","params":{"userIds":["x"]}}`,     // unknown field
		`{"id":4,"method":"stage.requestAccess","params":{"now":true}}`, // unknown param
		`{"id":0,"method":"stage.requestAccess"}`,                       // no id
	} {
		c.WriteMessage(websocket.TextMessage, []byte(msg))
	}
	for _, id := range []uint64{0, 2, 3, 4, 0} {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		m, _ := protocol.DecodeMessage(b)
		if m.Type != protocol.TypeResponse || m.ID != id || m.Error == nil || m.Error.Code != stage.CodeBadRequest {
			t.Fatalf("got %s, want BAD_REQUEST for id %d", b, id)
		}
	}
	// Nothing changed, and the connection still works.
	c.WriteMessage(websocket.TextMessage, []byte(`{"id":9,"method":"ping"}`))
	if m := response(t, c, 9); m.Error != nil {
		t.Fatal(m.Error)
	}
	var p server.Participant
	var list server.List[server.Participant]
	ts.mustAPI("GET", "/v1/meetings/"+mid+"/participants", nil, &list)
	p = list.Data[0]
	if p.StageStatus != stage.OffStage {
		t.Fatalf("status %v", p.StageStatus)
	}

	// An oversized message closes the connection with 1009; the meeting
	// and the participant are unaffected.
	c.WriteMessage(websocket.TextMessage, []byte(`{"id":10,"method":"ping","params":{"x":"`+strings.Repeat("a", protocol.MaxMessageSize)+`"}}`))
	var ce *websocket.CloseError
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
				t.Fatalf("after an oversized message: %v", err)
			}
			break
		}
	}
	c2 := rawConn(t, ts, ts.participant(mid, "bob", "webinar_viewer"))
	c2.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"method":"stage.requestAccess"}`))
	if m := response(t, c2, 1); m.Error != nil {
		t.Fatal(m.Error)
	}
}

func TestRealtime_refusedStageCalls(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR", "max_on_stage": 1})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	ann := ts.join(ts.participant(mid, "ann", "webinar_viewer"))
	bob := ts.join(ts.participant(mid, "bob", "webinar_viewer"))
	aud := ts.join(ts.participant(mid, "aud", "webinar_audience"))
	must(t, bob.Stage.RequestAccess(ctx))

	check := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	check("viewer grantAccess", ann.Stage.GrantAccess(ctx, "bob"), client.ErrPermissionDenied)
	check("viewer denyAccess", ann.Stage.DenyAccess(ctx, "bob"), client.ErrPermissionDenied)
	check("viewer kick", ann.Stage.Kick(ctx, "host"), client.ErrPermissionDenied)
	_, err := ann.Stage.GetAccessRequests(ctx)
	check("viewer getAccessRequests", err, client.ErrPermissionDenied)
	check("cancel without a request", ann.Stage.CancelRequestAccess(ctx), client.ErrNoRequestToCancel)
	check("join without ALLOWED", ann.Stage.Join(ctx), client.ErrInvalidStageStatus)
	check("audience requestAccess", aud.Stage.RequestAccess(ctx), client.ErrPermissionDenied)
	check("grant unknown user", host.Stage.GrantAccess(ctx, "ghost"), client.ErrNotFound)
	check("deny an OFF_STAGE user", host.Stage.DenyAccess(ctx, "ann"), client.ErrInvalidStageStatus)
	check("kick a requester", host.Stage.Kick(ctx, "bob"), client.ErrInvalidStageStatus)
	must(t, host.Stage.Join(ctx))
	err = host.Stage.GrantAccess(ctx, "bob", "ann")
	check("grant past max_on_stage", err, client.ErrStageFull)
	var be *client.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 2 {
		t.Fatalf("batch error %v", err)
	}
	// Nothing changed.
	if ann.Stage.Status() != stage.OffStage || bob.Stage.Status() != stage.Requested {
		t.Fatalf("statuses changed: ann %v bob %v", ann.Stage.Status(), bob.Stage.Status())
	}
	reqs, err := host.Stage.GetAccessRequests(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].UserID != "bob" {
		t.Fatalf("requests %+v %v", reqs, err)
	}
	// A group call has no stage.
	gid := ts.meeting(map[string]any{"title": "G", "type": "GROUP_CALL"})
	g := ts.join(ts.participant(gid, "gina", "group_call_participant"))
	check("group call requestAccess", g.Stage.RequestAccess(ctx), client.ErrStageDisabled)
}

func TestRealtime_secondConnectionWins(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	tok := ts.participant(mid, "ann", "webinar_viewer")
	ctx := ctxT(t)
	first := ts.join(tok)
	must(t, first.Stage.RequestAccess(ctx))
	second := ts.join(tok)
	select {
	case <-first.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the older connection was not closed")
	}
	if !errors.Is(first.Err(), client.ErrReplaced) {
		t.Fatalf("older connection ended with %v", first.Err())
	}
	if err := first.Stage.CancelRequestAccess(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("call on the replaced client: %v", err)
	}
	if second.Stage.Status() != stage.Requested {
		t.Fatalf("newer connection resumed as %v", second.Stage.Status())
	}
	must(t, second.Stage.CancelRequestAccess(ctx))
}

func TestRealtime_rateLimited(t *testing.T) {
	ts := startServer(t, testOptions{rate: 10, burst: 20})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	c := rawConn(t, ts, ts.participant(mid, "flood", "webinar_viewer"))
	const n = 300
	for i := 1; i <= n; i++ {
		c.WriteMessage(websocket.TextMessage, []byte(`{"id":`+itoa(i)+`,"method":"stage.getAccessRequests"}`))
	}
	limited := 0
	for i := 0; i < n; i++ {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		m, _ := protocol.DecodeMessage(b)
		if m.Error != nil && m.Error.Code == stage.CodeRateLimited {
			limited++
		}
	}
	if limited < n/2 {
		t.Fatalf("%d of %d flooded requests limited", limited, n)
	}
	// The meeting is unaffected.
	var wg sync.WaitGroup
	wg.Go(func() { must(t, host.Stage.Join(ctx)) })
	wg.Wait()
	if host.Stage.Status() != stage.OnStage {
		t.Fatal("host could not join")
	}
}

// Messages that do not parse count against the rate limit too: a flood of
// them is answered RATE_LIMITED, not served one by one.
func TestRealtime_unparsableFloodLimited(t *testing.T) {
	ts := startServer(t, testOptions{rate: 10, burst: 20})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	c := rawConn(t, ts, ts.participant(mid, "flood", "webinar_viewer"))
	const n = 300
	garbage := []string{`{"id":1,"method":"no.such.method"}`, `not json at all`, `{"id":2}`, `{"id":3,"method":"stage.kick","params":{"user_ids":[]}}`}
	for i := range n {
		c.WriteMessage(websocket.TextMessage, []byte(garbage[i%len(garbage)]))
	}
	limited, bad := 0, 0
	for range n {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		m, _ := protocol.DecodeMessage(b)
		switch {
		case m.Error == nil:
			t.Fatalf("garbage answered with success: %s", b)
		case m.Error.Code == stage.CodeRateLimited:
			limited++
		case m.Error.Code == stage.CodeBadRequest:
			bad++
		}
	}
	if limited < n/2 || limited+bad != n {
		t.Fatalf("of %d unparsable messages %d were limited, %d refused as bad", n, limited, bad)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestRealtime_removedAndEnded(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	var added server.AddedParticipant
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "A", "user_id": "ann", "preset": "webinar_viewer"}, &added)
	ann := ts.join(added.Token)
	bob := ts.join(ts.participant(mid, "bob", "webinar_viewer"))
	ts.mustAPI("DELETE", "/v1/meetings/"+mid+"/participants/"+added.Participant.ID, nil, nil)
	<-ann.Done()
	if !errors.Is(ann.Err(), client.ErrRemoved) {
		t.Fatalf("removed participant: %v", ann.Err())
	}
	if _, err := client.Join(ctxT(t), ts.URL, added.Token, nil); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("removed participant's token: %v", err)
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/end", nil, nil)
	<-bob.Done()
	if !errors.Is(bob.Err(), client.ErrMeetingEnded) {
		t.Fatalf("ended meeting: %v", bob.Err())
	}
	var e apiError
	if code := ts.api("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "C", "user_id": "c", "preset": "webinar_viewer"}, &e); code != 404 {
		t.Fatalf("adding to an ended meeting: %d %+v", code, e)
	}
}

// TestRealtime_stageChangesLimited: a viewer toggling its request cannot make
// the meeting tell everyone about it more than its allowance.
func TestRealtime_stageChangesLimited(t *testing.T) {
	ts := startServer(t, testOptions{changes: 1})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	ctx := ctxT(t)
	other := ts.join(ts.participant(mid, "other", "webinar_viewer"))
	obs := observe("other", other)
	v := ts.join(ts.participant(mid, "toggler", "webinar_viewer"))
	marker := ts.join(ts.participant(mid, "marker", "webinar_viewer"))
	defer marker.Close()
	limited := 0
	for i := range 30 {
		var err error
		if i%2 == 0 {
			err = v.Stage.RequestAccess(ctx)
		} else {
			err = v.Stage.CancelRequestAccess(ctx)
		}
		if errors.Is(err, client.ErrRateLimited) {
			limited++
		}
	}
	if limited < 20 {
		t.Fatalf("only %d of 30 toggles limited", limited)
	}
	must(t, v.Ping(ctx)) // other requests still pass
	must(t, other.Ping(ctx))
	// A marker after the toggles: once the observer has it, it has every
	// change told before it (one order per meeting), however slow.
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/stage/grant", map[string]any{"user_ids": []string{"marker"}}, nil)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.ContainsFunc(obs.changes(), func(c string) bool { return strings.HasPrefix(c, "marker:") }) {
		if time.Now().After(deadline) {
			t.Fatal("the observer never saw the marker's change")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(obs.changes()) - 1; n > 10 {
		t.Fatalf("the others were told of %d changes", n)
	}
}

// TestRealtime_pingAnswered: a client's WebSocket ping gets a pong.
func TestRealtime_pingAnswered(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	c := rawConn(t, ts, ts.participant(mid, "ann", "webinar_viewer"))
	pong := make(chan string, 1)
	c.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("hello"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"method":"ping"}`))
	response(t, c, 1) // reading processes the control frames before it
	select {
	case got := <-pong:
		if got != "hello" {
			t.Fatalf("pong %q", got)
		}
	default:
		t.Fatal("no pong")
	}
}
