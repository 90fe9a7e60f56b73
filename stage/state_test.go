package stage

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

var short = map[string]Status{"OFF": OffStage, "REQ": Requested, "ACC": Accepted, "ON": OnStage}
var shortAccess = map[string]Access{"ALLOWED": Allowed, "CAN_REQUEST": CanRequest, "NOT_ALLOWED": NotAllowed}

func perms(a Access) Permissions {
	return Permissions{StageEnabled: true, StageAccess: a, Media: Media{Audio: true, Video: true}}
}

// newState returns a webinar with participant "p" (user "u") in status st
// with stage_access a, and a host "h" (user "hu").
func newState(t *testing.T, st Status, a Access) *State {
	t.Helper()
	s := New(Config{Type: Webinar})
	host := BuiltinPresets()[0].Permissions
	if err := s.Add(Participant{ID: "h", UserID: "hu", Name: "Host", Perms: host}); err != nil {
		t.Fatal(err)
	}
	p := Participant{ID: "p", UserID: "u", Name: "P", Perms: perms(a), Status: st}
	if st == Requested {
		p.RequestedAt = t0
	}
	if err := s.Add(p); err != nil {
		t.Fatal(err)
	}
	return s
}

// Every self method from every status under every stage_access.
// Columns: method, status before, stage_access, status after or error code.
const selfTable = `
requestAccess       OFF ALLOWED     ACC
requestAccess       OFF CAN_REQUEST REQ
requestAccess       OFF NOT_ALLOWED PERMISSION_DENIED
requestAccess       REQ ALLOWED     REQ
requestAccess       REQ CAN_REQUEST REQ
requestAccess       REQ NOT_ALLOWED PERMISSION_DENIED
requestAccess       ACC ALLOWED     INVALID_STAGE_STATUS
requestAccess       ACC CAN_REQUEST INVALID_STAGE_STATUS
requestAccess       ACC NOT_ALLOWED PERMISSION_DENIED
requestAccess       ON  ALLOWED     INVALID_STAGE_STATUS
requestAccess       ON  CAN_REQUEST INVALID_STAGE_STATUS
requestAccess       ON  NOT_ALLOWED PERMISSION_DENIED
cancelRequestAccess OFF ALLOWED     NO_REQUEST_TO_CANCEL
cancelRequestAccess OFF CAN_REQUEST NO_REQUEST_TO_CANCEL
cancelRequestAccess OFF NOT_ALLOWED NO_REQUEST_TO_CANCEL
cancelRequestAccess REQ ALLOWED     OFF
cancelRequestAccess REQ CAN_REQUEST OFF
cancelRequestAccess REQ NOT_ALLOWED NO_REQUEST_TO_CANCEL
cancelRequestAccess ACC ALLOWED     NO_REQUEST_TO_CANCEL
cancelRequestAccess ACC CAN_REQUEST NO_REQUEST_TO_CANCEL
cancelRequestAccess ACC NOT_ALLOWED NO_REQUEST_TO_CANCEL
cancelRequestAccess ON  ALLOWED     NO_REQUEST_TO_CANCEL
cancelRequestAccess ON  CAN_REQUEST NO_REQUEST_TO_CANCEL
cancelRequestAccess ON  NOT_ALLOWED NO_REQUEST_TO_CANCEL
join                OFF ALLOWED     ON
join                OFF CAN_REQUEST INVALID_STAGE_STATUS
join                OFF NOT_ALLOWED PERMISSION_DENIED
join                REQ ALLOWED     ON
join                REQ CAN_REQUEST INVALID_STAGE_STATUS
join                REQ NOT_ALLOWED PERMISSION_DENIED
join                ACC ALLOWED     ON
join                ACC CAN_REQUEST ON
join                ACC NOT_ALLOWED PERMISSION_DENIED
join                ON  ALLOWED     INVALID_STAGE_STATUS
join                ON  CAN_REQUEST INVALID_STAGE_STATUS
join                ON  NOT_ALLOWED PERMISSION_DENIED
leave               OFF ALLOWED     INVALID_STAGE_STATUS
leave               OFF CAN_REQUEST INVALID_STAGE_STATUS
leave               OFF NOT_ALLOWED INVALID_STAGE_STATUS
leave               REQ ALLOWED     INVALID_STAGE_STATUS
leave               REQ CAN_REQUEST INVALID_STAGE_STATUS
leave               REQ NOT_ALLOWED INVALID_STAGE_STATUS
leave               ACC ALLOWED     OFF
leave               ACC CAN_REQUEST OFF
leave               ACC NOT_ALLOWED INVALID_STAGE_STATUS
leave               ON  ALLOWED     OFF
leave               ON  CAN_REQUEST OFF
leave               ON  NOT_ALLOWED INVALID_STAGE_STATUS
`

// Rows with NOT_ALLOWED start OFF_STAGE whatever the column says: a stored
// status the preset forbids is dropped on Add. That is why cancel and leave
// report the OFF_STAGE error for them.

func callSelf(s *State, method string) (Outcome, error) {
	switch method {
	case "requestAccess":
		return s.RequestAccess("p", t0)
	case "cancelRequestAccess":
		return s.CancelRequestAccess("p")
	case "join":
		return s.Join("p")
	case "leave":
		return s.Leave("p")
	}
	panic(method)
}

func rows(table string) [][]string {
	var out [][]string
	for _, line := range strings.Split(strings.TrimSpace(table), "\n") {
		out = append(out, strings.Fields(line))
	}
	return out
}

func TestState_selfMethods(t *testing.T) {
	for _, r := range rows(selfTable) {
		t.Run(strings.Join(r[:3], "/"), func(t *testing.T) {
			from, access := short[r[1]], shortAccess[r[2]]
			s := newState(t, from, access)
			before, _ := s.Participant("p")
			beforeReq := len(s.Requests())
			o, err := callSelf(s, r[0])
			after, _ := s.Participant("p")
			if want, ok := short[r[3]]; ok {
				if err != nil {
					t.Fatalf("err = %v, want status %v", err, want)
				}
				if after.Status != want {
					t.Fatalf("status = %v, want %v", after.Status, want)
				}
				if before.Status == want && len(o.Changes) != 0 {
					t.Fatalf("no-op reported changes %+v", o.Changes)
				}
				if before.Status != want && (len(o.Changes) != 1 || o.Changes[0].From != before.Status || o.Changes[0].To != want) {
					t.Fatalf("changes = %+v", o.Changes)
				}
				if wantReq := want == Requested; (len(s.Requests()) == 1) != wantReq {
					t.Fatalf("pending = %v", s.Requests())
				}
				return
			}
			if CodeOf(err) != Code(r[3]) {
				t.Fatalf("err = %v (%s), want %s", err, CodeOf(err), r[3])
			}
			if after != before || len(s.Requests()) != beforeReq || len(o.Changes) != 0 {
				t.Fatalf("refused call changed state: %+v -> %+v", before, after)
			}
		})
	}
}

// Every batch method on a target in every status under every stage_access.
// Columns: method, target status, target stage_access, per-id result.
const batchTable = `
grantAccess OFF ALLOWED     ACC
grantAccess OFF CAN_REQUEST ACC
grantAccess OFF NOT_ALLOWED PERMISSION_DENIED
grantAccess REQ ALLOWED     ACC
grantAccess REQ CAN_REQUEST ACC
grantAccess ACC ALLOWED     ACC
grantAccess ACC CAN_REQUEST ACC
grantAccess ON  ALLOWED     ON
grantAccess ON  CAN_REQUEST ON
denyAccess  OFF ALLOWED     INVALID_STAGE_STATUS
denyAccess  OFF CAN_REQUEST INVALID_STAGE_STATUS
denyAccess  OFF NOT_ALLOWED PERMISSION_DENIED
denyAccess  REQ ALLOWED     OFF
denyAccess  REQ CAN_REQUEST OFF
denyAccess  ACC ALLOWED     OFF
denyAccess  ACC CAN_REQUEST OFF
denyAccess  ON  ALLOWED     INVALID_STAGE_STATUS
denyAccess  ON  CAN_REQUEST INVALID_STAGE_STATUS
kick        OFF ALLOWED     INVALID_STAGE_STATUS
kick        OFF CAN_REQUEST INVALID_STAGE_STATUS
kick        OFF NOT_ALLOWED PERMISSION_DENIED
kick        REQ ALLOWED     INVALID_STAGE_STATUS
kick        REQ CAN_REQUEST INVALID_STAGE_STATUS
kick        ACC ALLOWED     OFF
kick        ACC CAN_REQUEST OFF
kick        ON  ALLOWED     OFF
kick        ON  CAN_REQUEST OFF
`

func callBatch(s *State, method, caller string, uids ...string) (Outcome, error) {
	switch method {
	case "grantAccess":
		return s.GrantAccess(caller, uids)
	case "denyAccess":
		return s.DenyAccess(caller, uids)
	case "kick":
		return s.Kick(caller, uids)
	}
	panic(method)
}

func TestState_batchMethods(t *testing.T) {
	for _, r := range rows(batchTable) {
		for _, caller := range []string{"h", System} {
			t.Run(strings.Join(r[:3], "/")+"/by="+caller, func(t *testing.T) {
				s := newState(t, short[r[1]], shortAccess[r[2]])
				before, _ := s.Participant("p")
				o, err := callBatch(s, r[0], caller, "u")
				if err != nil {
					t.Fatal(err)
				}
				if len(o.Results) != 1 || o.Results[0].UserID != "u" {
					t.Fatalf("results = %+v", o.Results)
				}
				after, _ := s.Participant("p")
				if want, ok := short[r[3]]; ok {
					if o.Results[0].Err != nil || after.Status != want {
						t.Fatalf("result %v, status %v, want %v", o.Results[0].Err, after.Status, want)
					}
					if (before.Status != want) != (len(o.Changes) == 1) {
						t.Fatalf("changes = %+v", o.Changes)
					}
					return
				}
				if CodeOf(o.Results[0].Err) != Code(r[3]) {
					t.Fatalf("result = %v, want %s", o.Results[0].Err, r[3])
				}
				if after != before || len(o.Changes) != 0 {
					t.Fatalf("refused target changed: %+v -> %+v", before, after)
				}
			})
		}
	}
}

// A caller without the permission is refused whole, whatever the target.
func TestState_moderationNeedsPermission(t *testing.T) {
	viewer := perms(CanRequest)
	cases := []struct {
		perms  Permissions
		method string
		want   Code
	}{
		{viewer, "grantAccess", CodePermissionDenied},
		{viewer, "denyAccess", CodePermissionDenied},
		{viewer, "kick", CodePermissionDenied},
		{viewer, "getAccessRequests", CodePermissionDenied},
		{Permissions{StageEnabled: true, StageAccess: Allowed, KickParticipant: true}, "grantAccess", CodePermissionDenied},
		{Permissions{StageEnabled: true, StageAccess: Allowed, AcceptStageRequests: true}, "kick", CodePermissionDenied},
		{Permissions{StageEnabled: false, AcceptStageRequests: true, KickParticipant: true}, "grantAccess", CodeStageDisabled},
		{Permissions{StageEnabled: false, AcceptStageRequests: true, KickParticipant: true}, "kick", CodeStageDisabled},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%d/%s", i, c.method), func(t *testing.T) {
			s := newState(t, Requested, CanRequest)
			if err := s.Add(Participant{ID: "c", UserID: "cu", Perms: c.perms}); err != nil {
				t.Fatal(err)
			}
			var err error
			if c.method == "getAccessRequests" {
				_, err = s.AccessRequests("c")
			} else {
				_, err = callBatch(s, c.method, "c", "u")
			}
			if CodeOf(err) != c.want {
				t.Fatalf("err = %v, want %s", err, c.want)
			}
			if p, _ := s.Participant("p"); p.Status != Requested || len(s.Requests()) != 1 {
				t.Fatalf("state changed: %+v", p)
			}
		})
	}
}

func TestState_stageDisabled(t *testing.T) {
	for _, method := range []string{"requestAccess", "cancelRequestAccess", "join", "leave"} {
		// A preset without a stage.
		s := New(Config{Type: Webinar})
		s.Add(Participant{ID: "p", UserID: "u", Perms: Permissions{StageEnabled: false, StageAccess: Allowed}})
		if _, err := callSelf(s, method); !errors.Is(err, ErrStageDisabled) {
			t.Errorf("preset: %s err = %v", method, err)
		}
		// A meeting type without a stage.
		s = New(Config{Type: GroupCall})
		s.Add(Participant{ID: "p", UserID: "u", Perms: perms(Allowed)})
		if _, err := callSelf(s, method); !errors.Is(err, ErrStageDisabled) {
			t.Errorf("group call: %s err = %v", method, err)
		}
	}
	s := New(Config{Type: GroupCall})
	for _, m := range []string{"grantAccess", "denyAccess", "kick"} {
		if _, err := callBatch(s, m, System, "u"); !errors.Is(err, ErrStageDisabled) {
			t.Errorf("group call: %s err = %v", m, err)
		}
	}
}

func TestState_batchIsPerID(t *testing.T) {
	s := newState(t, Requested, CanRequest)
	s.Add(Participant{ID: "a", UserID: "audience", Perms: perms(NotAllowed)})
	s.Add(Participant{ID: "x", UserID: "hidden", Perms: Permissions{StageEnabled: true, StageAccess: Allowed, HiddenParticipant: true}})
	o, err := s.GrantAccess("h", []string{"nobody", "audience", "hidden", "u", "u"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Code{CodeNotFound, CodePermissionDenied, CodePermissionDenied, "", ""}
	for i, r := range o.Results {
		if got := Code(""); r.Err != nil {
			got = CodeOf(r.Err)
			if got != want[i] {
				t.Errorf("%s: %v, want %s", r.UserID, r.Err, want[i])
			}
		} else if want[i] != "" {
			t.Errorf("%s: ok, want %s", r.UserID, want[i])
		}
	}
	if len(o.Changes) != 1 || o.Changes[0].To != Accepted || o.Changes[0].Cause != CauseGrant || !o.RequestsChanged {
		t.Fatalf("outcome = %+v", o)
	}
}

func TestState_hostActsOnItself(t *testing.T) {
	s := newState(t, OffStage, CanRequest)
	if _, err := s.Join("h"); err != nil {
		t.Fatal(err)
	}
	o, err := s.Kick("h", []string{"hu"})
	if err != nil || o.Results[0].Err != nil {
		t.Fatal(err, o.Results)
	}
	if p, _ := s.Participant("h"); p.Status != OffStage {
		t.Fatalf("host status %v", p.Status)
	}
}

func TestState_maxOnStage(t *testing.T) {
	s := New(Config{Type: Webinar, MaxOnStage: 2})
	host := BuiltinPresets()[0].Permissions
	s.Add(Participant{ID: "h", UserID: "hu", Perms: host})
	for _, id := range []string{"a", "b", "c"} {
		s.Add(Participant{ID: id, UserID: id + "u", Perms: perms(CanRequest)})
	}
	if _, err := s.Join("h"); err != nil {
		t.Fatal(err)
	}
	o, _ := s.GrantAccess("h", []string{"au", "bu"})
	if o.Results[0].Err != nil || !errors.Is(o.Results[1].Err, ErrStageFull) {
		t.Fatalf("results = %+v", o.Results)
	}
	// A second grant of an accepted user is unchanged and does not count twice.
	o, _ = s.GrantAccess("h", []string{"au"})
	if o.Results[0].Err != nil {
		t.Fatal(o.Results[0].Err)
	}
	// Accepted -> on stage needs no room.
	if _, err := s.Join("a"); err != nil {
		t.Fatal(err)
	}
	// The host left; joining directly is checked against the limit.
	s.Leave("h")
	s.GrantAccess("h", []string{"bu"})
	if _, err := s.Join("h"); !errors.Is(err, ErrStageFull) {
		t.Fatalf("join past the limit: %v", err)
	}
	if _, err := s.RequestAccess("h", t0); !errors.Is(err, ErrStageFull) {
		t.Fatalf("auto-accept past the limit: %v", err)
	}
}

func TestState_requestsOrderAndExpiry(t *testing.T) {
	s := New(Config{Type: Webinar, RequestTTL: time.Minute})
	for i := range 5 {
		id := fmt.Sprint(i)
		s.Add(Participant{ID: id, UserID: "u" + id, Perms: perms(CanRequest)})
	}
	for i, id := range []string{"3", "1", "4", "0"} {
		o, err := s.RequestAccess(id, t0.Add(time.Duration(i)*10*time.Second))
		if err != nil || !o.NewRequest {
			t.Fatal(err, o)
		}
	}
	// A repeated request changes nothing and tells nobody.
	if o, err := s.RequestAccess("1", t0.Add(time.Hour)); err != nil || len(o.Changes) != 0 || o.NewRequest {
		t.Fatal(err, o)
	}
	s.CancelRequestAccess("4")
	got := ""
	for _, r := range s.Requests() {
		got += r.ParticipantID
	}
	if got != "310" {
		t.Fatalf("order = %s", got)
	}
	if at, ok := s.NextExpiry(); !ok || !at.Equal(t0.Add(time.Minute)) {
		t.Fatalf("next expiry %v %v", at, ok)
	}
	o := s.Expire(t0.Add(time.Minute + 10*time.Second))
	if len(o.Changes) != 2 || o.Changes[0].Cause != CauseExpire || o.Changes[1].ParticipantID != "1" {
		t.Fatalf("expired %+v", o.Changes)
	}
	if r := s.Requests(); len(r) != 1 || r[0].ParticipantID != "0" {
		t.Fatalf("left %+v", r)
	}
}

// Add restores stored requests in their stored order, whatever the order of
// the calls.
func TestState_addRestoresOrder(t *testing.T) {
	s := New(Config{Type: Webinar})
	for _, seq := range []uint64{7, 2, 9, 4} {
		id := fmt.Sprint(seq)
		s.Add(Participant{ID: id, UserID: id, Perms: perms(CanRequest), Status: Requested, RequestSeq: seq, RequestedAt: t0})
	}
	got := ""
	for _, r := range s.Requests() {
		got += r.ParticipantID
	}
	if got != "2479" {
		t.Fatalf("order %s", got)
	}
	s.Add(Participant{ID: "n", UserID: "n", Perms: perms(CanRequest)})
	s.RequestAccess("n", t0)
	if r := s.Requests(); r[len(r)-1].ParticipantID != "n" {
		t.Fatalf("new request not last: %+v", r)
	}
}

func TestState_departAndPermissions(t *testing.T) {
	s := newState(t, Requested, CanRequest)
	o := s.Depart("p")
	if len(o.Changes) != 1 || o.Changes[0].Cause != CauseDepart || len(s.Requests()) != 0 {
		t.Fatalf("depart %+v", o)
	}
	s.Join("h")
	if o := s.Depart("h"); len(o.Changes) != 0 {
		t.Fatalf("depart kept no status: %+v", o)
	}
	o, _ = s.SetPermissions("h", perms(NotAllowed))
	if len(o.Changes) != 1 || o.Changes[0].Cause != CausePermissions {
		t.Fatalf("permissions %+v", o)
	}
	o, _ = s.Remove("p")
	if len(o.Changes) != 0 || s.Len() != 1 {
		t.Fatalf("remove %+v", o)
	}
}

func TestStatus_text(t *testing.T) {
	for s := OffStage; s <= OnStage; s++ {
		b, _ := s.MarshalText()
		var back Status
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Fatalf("%v: %v %v", s, back, err)
		}
	}
	if _, err := ParseStatus("on_stage"); err == nil {
		t.Fatal("lower case accepted")
	}
	if _, err := ParseAccess("MAYBE"); err == nil {
		t.Fatal("unknown access accepted")
	}
}

// Who may publish: in a webinar only ON_STAGE participants; without a
// stage, the preset's media permissions alone; hidden ones never.
func TestState_publishing(t *testing.T) {
	av := Media{Audio: true, Video: true}
	for _, st := range []Status{OffStage, Requested, Accepted, OnStage} {
		s := newState(t, st, CanRequest)
		m, ok := s.Publishing("p")
		if want := st == OnStage; ok != want || (ok && m != av) {
			t.Errorf("webinar, %v: got %v %v", st, m, ok)
		}
	}
	s := New(Config{Type: GroupCall})
	gc := BuiltinPresets()[5].Permissions
	s.Add(Participant{ID: "g", UserID: "gu", Perms: gc})
	if m, ok := s.Publishing("g"); !ok || m != gc.Media {
		t.Errorf("group call: got %v %v", m, ok)
	}
	hidden := Permissions{HiddenParticipant: true, Media: av}
	s.Add(Participant{ID: "x", UserID: "xu", Perms: hidden})
	if _, ok := s.Publishing("x"); ok {
		t.Error("a hidden participant may publish")
	}
	if _, ok := s.Publishing("nobody"); ok {
		t.Error("an unknown participant may publish")
	}
	w := New(Config{Type: Webinar})
	noStage := Permissions{StageEnabled: false, Media: Media{Audio: true}}
	w.Add(Participant{ID: "n", UserID: "nu", Perms: noStage})
	if m, ok := w.Publishing("n"); !ok || m != noStage.Media {
		t.Errorf("webinar, preset without stage: got %v %v", m, ok)
	}
}
