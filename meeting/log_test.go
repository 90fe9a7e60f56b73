package meeting

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// Every change lands in the meeting's log with the change, in order, each
// entry with its type, who made it and what changed: participants joining,
// a participant's own calls, a host's, the back end's (REST), and the
// system's (a request dropped when its participant leaves the meeting);
// leaving; a preset change, a removal, a settings change and the end. A change the store refuses
// leaves no entry, and its numbers are used by the next.
func TestMeeting_log(t *testing.T) {
	reg, s, cs := webinar(t)
	defer reg.Close()
	h, v1, v2 := cs["h"], cs["v1"], cs["v2"]
	step := func(name string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	_, err := v1.RequestAccess(ctx(t))
	step("request", err)
	_, err = h.GrantAccess(ctx(t), []string{"u1"})
	step("grant", err)
	_, err = v1.JoinStage(ctx(t))
	step("join", err)
	_, err = reg.Kick(ctx(t), "m", []string{"u1"})
	step("kick (REST)", err)
	s.setFail(errDiskFull)
	if _, err := v2.RequestAccess(ctx(t)); err == nil {
		t.Fatal("a request with a failing store")
	}
	s.setFail(nil)
	_, err = v2.RequestAccess(ctx(t))
	step("request", err)
	reg.Leave(v2) // its request goes with it: the system's
	step("preset", reg.SetPreset(ctx(t), "m", "v1", "webinar_host"))
	step("remove", reg.RemoveParticipant(ctx(t), "m", "v1"))
	_, err = reg.UpdateMeeting(ctx(t), "m", func(m *store.Meeting) error { m.Title = "renamed"; return nil })
	step("update", err)
	_, err = reg.EndMeeting(ctx(t), "m")
	step("end", err)

	want := []string{
		"participant.joined participant:h h {}",
		"participant.joined participant:v1 v1 {}",
		"participant.joined participant:v2 v2 {}",
		"stage.requested participant:v1 v1 OFF_STAGE>REQUESTED_TO_JOIN_STAGE request",
		"stage.granted participant:h v1 REQUESTED_TO_JOIN_STAGE>ACCEPTED_TO_JOIN_STAGE grant",
		"stage.joined participant:v1 v1 ACCEPTED_TO_JOIN_STAGE>ON_STAGE join",
		"stage.kicked api: v1 ON_STAGE>OFF_STAGE kick",
		"stage.requested participant:v2 v2 OFF_STAGE>REQUESTED_TO_JOIN_STAGE request",
		"stage.cancelled system: v2 REQUESTED_TO_JOIN_STAGE>OFF_STAGE depart",
		"participant.left participant:v2 v2 {}",
		`participant.preset_changed api: v1 {"from":"webinar_viewer","to":"webinar_host"}`,
		"participant.removed api: v1 {}",
		"meeting.updated api:  renamed",
		"meeting.ended api:  {}",
	}
	var got []string
	var last uint64
	for _, e := range s.log() {
		if e.Seq <= last || e.MeetingID != "m" || e.At.IsZero() {
			t.Errorf("entry %+v after seq %d", e, last)
		}
		last = e.Seq
		line := fmt.Sprintf("%s %s:%s %s ", e.Type, e.Actor.Kind, e.Actor.ID, e.ParticipantID)
		var sc StageChange
		switch {
		case strings.HasPrefix(e.Type, "stage."):
			if err := json.Unmarshal(e.Data, &sc); err != nil {
				t.Fatal(err)
			}
			line += fmt.Sprintf("%v>%v %v", sc.From, sc.To, sc.Reason)
		case e.Type == EventMeetingUpdated:
			var m struct{ Title string }
			json.Unmarshal(e.Data, &m)
			line += m.Title
		default:
			line += string(e.Data)
		}
		got = append(got, line)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, ok := stageEventType[stage.CauseRemoved]; !ok || len(stageEventType) != 12 {
		t.Error("a cause without an event type")
	}
}

// A participant whose connection drops has not left: participant.left
// comes after the reconnect grace, the system's, and not at all if it
// comes back within it.
func TestMeeting_logLeftAfterGrace(t *testing.T) {
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar}, parts: []store.Participant{
		{ID: "a", UserID: "ua", Preset: "webinar_viewer"}, {ID: "b", UserID: "ub", Preset: "webinar_viewer"}}}
	reg := NewRegistry(s, Config{Logger: quiet(), Grace: 100 * time.Millisecond})
	defer reg.Close()
	connect := func(pid string) *Client {
		c, err := reg.Connect(ctx(t), "m", pid, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetWriter(func() {}, nil)
		return c
	}
	a, b := connect("a"), connect("b")
	reg.Disconnect(a)
	reg.Disconnect(b)
	connect("b") // back within the grace
	waitLog := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); len(s.log()) < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the log: %+v", s.log())
			}
		}
	}
	waitLog(3)              // a's grace over
	reg.Leave(connect("a")) // and a second time, on purpose
	waitLog(5)
	var got []string
	for _, e := range s.log() {
		got = append(got, e.Type+" "+e.ParticipantID+" "+string(e.Actor.Kind))
	}
	want := []string{"participant.joined a participant", "participant.joined b participant", "participant.left a system",
		"participant.joined a participant", "participant.left a participant"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("the log: %v\nwant %v", got, want)
	}
}
