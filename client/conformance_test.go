package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// conformanceDoc is ../conformance/sdk.json; its format is in
// ../conformance/README.md.
type conformanceDoc struct {
	Token         string            `json:"token"`
	RefreshToken  string            `json:"refreshToken"`
	CallTimeoutMs int               `json:"callTimeoutMs"`
	Scripts       map[string][]step `json:"scripts"`
}

type step struct {
	Do       string           `json:"do"`
	Welcome  json.RawMessage  `json:"welcome"`
	Token    string           `json:"token"`
	Send     []wireEvent      `json:"send"`
	Call     string           `json:"call"`
	Args     []string         `json:"args"`
	Request  *wireRequest     `json:"request"`
	Response *wireResponse    `json:"response"`
	Result   any              `json:"result"`
	Events   []map[string]any `json:"events"`
	View     map[string]any   `json:"view"`
	Code     int              `json:"code"`
	Reason   string           `json:"reason"`
}

type wireEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

type wireRequest struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

type wireResponse struct {
	Data  json.RawMessage `json:"data"`
	Error *protocol.Error `json:"error"`
}

// TestConformance replays every script of the conformance document against
// the Go SDK. The browser SDK replays the same document
// (web/e2e/conformance.test.js).
func TestConformance(t *testing.T) {
	b, err := os.ReadFile("../conformance/sdk.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc conformanceDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Scripts) == 0 {
		t.Fatal("no scripts")
	}
	for name, steps := range doc.Scripts {
		t.Run(name, func(t *testing.T) { newReplay(t, &doc).run(steps) })
	}
}

// replay is a fake server following a script, and the SDK under test.
type replay struct {
	t      *testing.T
	doc    *conformanceDoc
	srv    *httptest.Server
	refuse atomic.Bool
	conns  chan *fakeConn

	conn *fakeConn
	seq  uint64
	m    *client.Meeting
	join chan joined

	mu     sync.Mutex
	events []map[string]any
	left   bool // leaveMeeting was called: the SDK's own events end
}

type joined struct {
	m   *client.Meeting
	err error
}

// fakeConn is one connection the SDK made, with what it sent.
type fakeConn struct {
	ws     *websocket.Conn
	token  string
	reqs   chan protocol.Request
	closed chan int // the close code the SDK sent
}

func newReplay(t *testing.T, doc *conformanceDoc) *replay {
	r := &replay{t: t, doc: doc, conns: make(chan *fakeConn, 4), join: make(chan joined, 1)}
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/realtime" {
			http.NotFound(w, req)
			return
		}
		if r.refuse.Load() {
			http.Error(w, `{"error":{"code":"UNAVAILABLE","message":"refused by the script"}}`, http.StatusServiceUnavailable)
			return
		}
		tok, _ := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		c := &fakeConn{ws: ws, token: tok, reqs: make(chan protocol.Request, 16), closed: make(chan int, 1)}
		ws.SetCloseHandler(func(code int, _ string) error { c.closed <- code; return nil })
		go func() {
			for {
				_, b, err := ws.ReadMessage()
				if err != nil {
					close(c.reqs)
					return
				}
				var q protocol.Request
				json.Unmarshal(b, &q)
				c.reqs <- q
			}
		}()
		r.conns <- c
	}))
	t.Cleanup(func() {
		if r.m != nil {
			r.m.Close()
		}
		r.srv.Close()
	})
	go func() {
		m, err := client.Join(context.Background(), r.srv.URL, doc.Token, &client.Options{
			CallTimeout:  time.Duration(doc.CallTimeoutMs) * time.Millisecond,
			ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
			RefreshToken: func(context.Context) (string, error) { return doc.RefreshToken, nil },
		})
		if err == nil {
			go r.collect(m)
		}
		r.join <- joined{m, err}
	}()
	return r
}

// collect keeps the SDK's events, in canonical form.
func (r *replay) collect(m *client.Meeting) {
	for e := range m.Events() {
		if c := canonical(e); c != nil {
			r.mu.Lock()
			r.events = append(r.events, c)
			r.mu.Unlock()
		}
	}
}

func (r *replay) run(steps []step) {
	t := r.t
	for i, s := range steps {
		where := fmt.Sprintf("step %d (%s)", i, s.Do)
		switch s.Do {
		case "welcome":
			r.welcome(where, s)
		case "send":
			for _, e := range s.Send {
				r.write(where, protocol.Message{Type: protocol.TypeEvent, Seq: r.next(), Event: e.Event, Data: e.Data})
			}
		case "call":
			r.call(where, s)
		case "expectRequest":
			r.serve(where, s)
		case "events":
			r.expectEvents(where, s.Events)
		case "view":
			r.expectView(where, s.View)
		case "drop":
			r.conn.ws.NetConn().Close()
		case "close":
			r.conn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(s.Code, s.Reason), time.Now().Add(time.Second))
		case "refuse":
			r.refuse.Store(true)
		case "accept":
			r.refuse.Store(false)
		case "expectClose":
			select {
			case code := <-r.conn.closed:
				if code != s.Code {
					t.Fatalf("%s: the SDK closed with %d, want %d", where, code, s.Code)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: the SDK did not close the connection", where)
			}
		default:
			t.Fatalf("%s: the Go SDK's replay cannot execute %q", where, s.Do)
		}
	}
	if !r.left { // nothing more than the script says
		time.Sleep(100 * time.Millisecond)
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.events) > 0 {
			t.Fatalf("events the script does not expect: %v", r.events)
		}
	}
}

func (r *replay) next() uint64 { r.seq++; return r.seq }

func (r *replay) write(where string, m protocol.Message) {
	b, _ := json.Marshal(m)
	if err := r.conn.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		r.t.Fatalf("%s: writing %s: %v", where, b, err)
	}
}

func (r *replay) welcome(where string, s step) {
	select {
	case r.conn = <-r.conns:
	case <-time.After(10 * time.Second):
		r.t.Fatalf("%s: the SDK did not connect", where)
	}
	if s.Token != "" && r.conn.token != s.Token {
		r.t.Fatalf("%s: connected with token %q, want %q", where, r.conn.token, s.Token)
	}
	r.write(where, protocol.Message{Type: protocol.TypeWelcome, Seq: r.next(), Data: s.Welcome})
	if r.m == nil {
		j := <-r.join
		if j.err != nil {
			r.t.Fatalf("%s: join: %v", where, j.err)
		}
		r.m = j.m
	}
}

// serve reads the SDK's next request, checks it, sends the step's events,
// then the response.
func (r *replay) serve(where string, s step) {
	var q protocol.Request
	select {
	case got, ok := <-r.conn.reqs:
		if !ok {
			r.t.Fatalf("%s: the connection ended before the request", where)
		}
		q = got
	case <-time.After(10 * time.Second):
		r.t.Fatalf("%s: no request %s", where, s.Request.Method)
	}
	if q.Method != s.Request.Method || !sameJSON(q.Params, s.Request.Params) {
		r.t.Fatalf("%s: request %s %s, want %s %s", where, q.Method, q.Params, s.Request.Method, s.Request.Params)
	}
	for _, e := range s.Send {
		r.write(where, protocol.Message{Type: protocol.TypeEvent, Seq: r.next(), Event: e.Event, Data: e.Data})
	}
	resp := protocol.Message{Type: protocol.TypeResponse, ID: q.ID, Data: s.Response.Data, Error: s.Response.Error}
	if resp.Error == nil && resp.Data == nil {
		resp.Data = json.RawMessage(`{}`)
	}
	r.write(where, resp)
}

func (r *replay) call(where string, s step) {
	m := r.m
	ctx := context.Background()
	if s.Call == "leaveMeeting" {
		r.left = true
	}
	done := make(chan any, 1)
	go func() {
		var err error
		switch s.Call {
		case "getAccessRequests":
			var reqs []stage.Request
			if reqs, err = m.Stage.GetAccessRequests(ctx); err == nil {
				ids := []any{}
				for _, q := range reqs {
					ids = append(ids, q.UserID)
				}
				done <- map[string]any{"userIds": ids}
				return
			}
		case "requestAccess":
			err = m.Stage.RequestAccess(ctx)
		case "cancelRequestAccess":
			err = m.Stage.CancelRequestAccess(ctx)
		case "join":
			err = m.Stage.Join(ctx)
		case "leave":
			err = m.Stage.Leave(ctx)
		case "grantAccess":
			err = m.Stage.GrantAccess(ctx, s.Args...)
		case "denyAccess":
			err = m.Stage.DenyAccess(ctx, s.Args...)
		case "kick":
			err = m.Stage.Kick(ctx, s.Args...)
		case "leaveMeeting":
			err = m.Close()
		default:
			done <- fmt.Errorf("the Go SDK's replay has no call %q", s.Call)
			return
		}
		done <- outcome(err)
	}()
	if s.Request != nil {
		r.serve(where, s)
	}
	var got any
	select {
	case got = <-done:
	case <-time.After(10 * time.Second):
		r.t.Fatalf("%s: %s did not return", where, s.Call)
	}
	if err, ok := got.(error); ok {
		r.t.Fatalf("%s: %v", where, err)
	}
	if !sameValue(got, s.Result) {
		r.t.Fatalf("%s: %s returned %v, want %v", where, s.Call, got, s.Result)
	}
}

// outcome is a call's error in canonical form.
func outcome(err error) any {
	if err == nil {
		return "ok"
	}
	var be *client.BatchError
	if errors.As(err, &be) {
		failed := []any{}
		for _, f := range be.Failed {
			failed = append(failed, f.UserID)
		}
		return map[string]any{"error": string(stage.CodeOf(be.Failed[0].Err)), "failed": failed}
	}
	return map[string]any{"error": string(stage.CodeOf(err))}
}

func (r *replay) expectEvents(where string, want []map[string]any) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.events)
		r.mu.Unlock()
		if n >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.events[:min(len(want), len(r.events))]
	if !sameValue(got, want) {
		r.t.Fatalf("%s: events\n got %v\nwant %v", where, got, want)
	}
	r.events = r.events[len(got):]
}

func (r *replay) expectView(where string, want map[string]any) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := r.view(want)
		if sameValue(got, want) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: view\n got %v\nwant %v", where, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// view is the SDK's view, in canonical form, for the keys of want.
func (r *replay) view(want map[string]any) map[string]any {
	m := r.m
	all := map[string]any{
		"status": m.Stage.Status().String(),
		"preset": m.Self().Preset,
		"title":  m.Info().Title,
		"count":  m.ParticipantCount(),
	}
	reqs := []any{}
	for _, q := range m.Stage.Requests() {
		reqs = append(reqs, q.UserID)
	}
	all["requests"] = reqs
	parts := map[string]any{}
	for _, p := range m.Participants() {
		parts[p.UserID] = map[string]any{"status": p.Status.String(), "connected": p.Connected}
	}
	all["participants"] = parts
	out := map[string]any{}
	for k := range want {
		out[k] = all[k]
	}
	return out
}

// canonical is an SDK event in the conformance document's form, or nil for
// one it does not script.
func canonical(e client.Event) map[string]any {
	c := map[string]any{"name": e.Name()}
	missed := func(m bool) {
		if m {
			c["missed"] = true
		}
	}
	switch e := e.(type) {
	case client.StageStatusUpdate:
		c["status"], c["oldStatus"] = e.New.String(), e.Old.String()
		missed(e.Missed)
	case client.PeerStageStatusUpdate:
		c["userId"], c["status"], c["oldStatus"] = e.Participant.UserID, e.New.String(), e.Old.String()
		missed(e.Missed)
	case client.StageRequestApproved, client.RemovedFromStage, client.Disconnected:
	case client.StageRequestRejected:
		c["reason"] = e.Reason.String()
	case client.NewStageRequest:
		c["count"], c["userId"] = e.Count, e.Request.UserID
	case client.StageAccessRequestUpdate:
		ids := []any{}
		for _, q := range e.Requests {
			ids = append(ids, q.UserID)
		}
		c["userIds"] = ids
		missed(e.Missed)
	case client.ParticipantJoined:
		c["userId"] = e.Participant.UserID
	case client.ParticipantLeft:
		c["userId"] = e.UserID
	case client.PermissionsUpdate:
		c["preset"], c["acceptStageRequests"] = e.Preset, e.Permissions.AcceptStageRequests
	case client.MeetingUpdate:
		c["title"] = e.Info.Title
	case client.Reconnected:
		c["resumed"] = e.Resumed
	case client.PublishingStopped:
		srcs := []any{}
		for _, src := range e.Sources {
			srcs = append(srcs, string(src))
		}
		c["reason"], c["sources"] = e.Reason, srcs
	case client.Closed:
		switch {
		case e.Err == nil:
			c["code"] = "CLOSED"
		case errors.Is(e.Err, client.ErrRemoved):
			c["code"] = "REMOVED"
		case errors.Is(e.Err, client.ErrReplaced):
			c["code"] = "REPLACED"
		case errors.Is(e.Err, client.ErrMeetingEnded):
			c["code"] = "MEETING_ENDED"
		default:
			c["code"] = string(stage.CodeOf(e.Err))
		}
	default:
		return nil
	}
	return c
}

// sameValue compares a and b as JSON would: numbers as numbers, whatever
// their Go type.
func sameValue(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return sameJSON(ja, jb)
}

func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}
