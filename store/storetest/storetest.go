// Package storetest is the behaviour every store.Store must have, as
// tests each adapter runs against itself: what cocmd's meetings, REST API
// and webhooks rely on, whichever store holds the state.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// Opener returns a new, empty store, and a function that closes it and
// opens it again on the same storage (another process reading what the
// first wrote).
type Opener func(t *testing.T) (s store.Store, reopen func() store.Store)

// Run runs every test of the package against the stores open returns.
func Run(t *testing.T, open Opener) {
	t.Run("roundTrip", func(t *testing.T) { roundTrip(t, open) })
	t.Run("eventsWithTheirChange", func(t *testing.T) { eventsWithTheirChange(t, open) })
	t.Run("webhooks", func(t *testing.T) { webhooks(t, open) })
}

func roundTrip(t *testing.T, open Opener) {
	ctx := context.Background()
	d, reopen := open(t)
	viewer := stage.BuiltinPresets()[2]
	if err := d.CreatePreset(ctx, viewer); err != nil {
		t.Fatal(err)
	}
	if err := d.CreatePreset(ctx, viewer); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate preset: %v", err)
	}
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	m := store.Meeting{ID: "m1", Title: "T", Type: stage.Webinar, MaxOnStage: 3, StageRequestTTL: time.Minute, CreatedAt: now}
	if err := d.CreateMeeting(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p := store.Participant{ID: fmt.Sprint("p", i), MeetingID: "m1", UserID: fmt.Sprint("u", i), Name: "n", Preset: viewer.Name, CreatedAt: now}
		if err := d.AddParticipant(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	err := d.AddParticipant(ctx, store.Participant{ID: "dup", MeetingID: "m1", UserID: "u1", Preset: viewer.Name})
	if !errors.Is(err, store.ErrConflict) || !errors.Is(err, stage.ErrBadRequest) {
		t.Fatalf("duplicate user id: %v", err)
	}
	if err := d.AddParticipant(ctx, store.Participant{ID: "x", MeetingID: "m1", UserID: "ux", Preset: "nope"}); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("unknown preset: %v", err)
	}
	if err := d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p3", Status: stage.Requested, RequestedAt: now, RequestSeq: 9}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.DeletePreset(ctx, viewer.Name); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete preset in use: %v", err)
	}
	d = reopen() // everything is still there
	got, err := d.Meeting(ctx, "m1")
	if err != nil || got != m {
		t.Fatalf("meeting %+v %v", got, err)
	}
	p, err := d.Participant(ctx, "m1", "p3")
	if err != nil || p.Status != stage.Requested || p.RequestSeq != 9 || !p.RequestedAt.Equal(now) {
		t.Fatalf("participant %+v %v", p, err)
	}
	var all []string
	for cursor := ""; ; {
		page, next, err := d.Participants(ctx, "m1", store.Page{After: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page {
			all = append(all, p.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if fmt.Sprint(all) != "[p0 p1 p2 p3 p4]" {
		t.Fatalf("paged %v", all)
	}
	if _, err := d.Meeting(ctx, "nope"); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("unknown meeting: %v", err)
	}
	if _, _, err := d.Meetings(ctx, store.Page{After: "x", Limit: 1}); !errors.Is(err, stage.ErrBadRequest) {
		t.Fatalf("bad cursor: %v", err)
	}
	if err := d.RemoveParticipant(ctx, "m1", "p0", nil); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveParticipant(ctx, "m1", "p0", nil); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	v, _ := d.SetSettingOnce(ctx, "k", []byte("a"))
	v2, _ := d.SetSettingOnce(ctx, "k", []byte("b"))
	if string(v) != "a" || string(v2) != "a" {
		t.Fatalf("setting %s %s", v, v2)
	}
}

// A change and its log entries are committed together or not at all: an
// entry that cannot be written (here a sequence number used already)
// fails its change, in a group commit and in a transaction of its own; the
// log reads back in order, filtered and paged, and survives a reopen.
func eventsWithTheirChange(t *testing.T, open Opener) {
	ctx := context.Background()
	d, reopen := open(t)
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	ev := func(seq uint64, typ, pid string) store.Event {
		return store.Event{MeetingID: "m1", Seq: seq, Type: typ, At: now.Add(time.Duration(seq) * time.Second),
			Actor: store.Actor{Kind: store.ActorAPI}, ParticipantID: pid, UserID: "u" + pid, Data: []byte(`{"x":1}`)}
	}
	for _, p := range stage.BuiltinPresets() {
		if err := d.CreatePreset(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.CreateMeeting(ctx, store.Meeting{ID: "m1", Type: stage.Webinar, CreatedAt: now}, []store.Event{ev(1, "meeting.started", "")}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddParticipant(ctx, store.Participant{ID: "p0", MeetingID: "m1", UserID: "u0", Preset: "webinar_viewer", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p0", Status: stage.Requested}}, []store.Event{ev(2, "stage.requested", "p0")}); err != nil {
		t.Fatal(err)
	}
	// Seq 2 again: the whole change fails.
	if err := d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p0", Status: stage.OffStage}}, []store.Event{ev(2, "stage.cancelled", "p0")}); err == nil {
		t.Fatal("a change whose entry cannot be written was committed")
	}
	if p, _ := d.Participant(ctx, "m1", "p0"); p.Status != stage.Requested {
		t.Fatalf("the status changed without its entry: %v", p.Status)
	}
	if err := d.RemoveParticipant(ctx, "m1", "p0", []store.Event{ev(1, "participant.removed", "p0")}); err == nil {
		t.Fatal("a removal whose entry cannot be written was committed")
	}
	if _, err := d.Participant(ctx, "m1", "p0"); err != nil {
		t.Fatalf("removed without its entry: %v", err)
	}
	if err := d.SetParticipantPreset(ctx, "m1", "p0", "webinar_host", nil, []store.Event{ev(3, "participant.preset_changed", "p0")}); err != nil {
		t.Fatal(err)
	}
	d = reopen()
	if last, err := d.LastEventSeq(ctx, "m1"); err != nil || last != 3 {
		t.Fatalf("last seq %d %v", last, err)
	}
	events, next, err := d.Events(ctx, "m1", store.EventFilter{}, store.Page{Limit: 2})
	if err != nil || len(events) != 2 || next == "" || events[0].Type != "meeting.started" || events[1].Seq != 2 {
		t.Fatalf("first page %+v %q %v", events, next, err)
	}
	if e := events[1]; e.Actor.Kind != store.ActorAPI || e.ParticipantID != "p0" || e.UserID != "up0" || string(e.Data) != `{"x":1}` || !e.At.Equal(now.Add(2*time.Second)) {
		t.Fatalf("read back %+v", e)
	}
	events, next, _ = d.Events(ctx, "m1", store.EventFilter{}, store.Page{After: next, Limit: 2})
	if len(events) != 1 || next != "" || events[0].Seq != 3 {
		t.Fatalf("second page %+v %q", events, next)
	}
	for _, c := range []struct {
		f    store.EventFilter
		want int
	}{
		{store.EventFilter{ParticipantID: "p0"}, 2},
		{store.EventFilter{Types: []string{"stage.requested", "meeting.started"}}, 2},
		{store.EventFilter{From: now.Add(2 * time.Second)}, 2},
		{store.EventFilter{To: now.Add(2 * time.Second)}, 1},
		{store.EventFilter{ParticipantID: "p0", From: now.Add(3 * time.Second), To: now.Add(4 * time.Second)}, 1},
	} {
		if got, _, _ := d.Events(ctx, "m1", c.f, store.Page{Limit: 10}); len(got) != c.want {
			t.Errorf("filter %+v: %d entries, want %d", c.f, len(got), c.want)
		}
	}
	if _, _, err := d.Events(ctx, "m1", store.EventFilter{}, store.Page{After: "x", Limit: 1}); !errors.Is(err, stage.ErrBadRequest) {
		t.Errorf("a bad cursor: %v", err)
	}
}

// webhooks: an endpoint is delivered what was committed after it was
// registered, in commit order, minus what its cursors passed; attempts
// list newest first; all of it survives a reopen.
func webhooks(t *testing.T, open Opener) {
	ctx := context.Background()
	d, reopen := open(t)
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	ev := func(mid string, seq uint64) store.Event {
		return store.Event{MeetingID: mid, Seq: seq, Type: "meeting.updated", At: now, Actor: store.Actor{Kind: store.ActorAPI}, Data: []byte(`{}`)}
	}
	if err := d.CreateMeeting(ctx, store.Meeting{ID: "m1", Type: stage.Webinar, CreatedAt: now}, []store.Event{ev("m1", 1), ev("m1", 2)}); err != nil {
		t.Fatal(err)
	}
	ep, err := d.CreateEndpoint(ctx, store.Endpoint{ID: "w1", URL: "https://example.com/a", Secrets: []string{"whsec_AA=="}, CreatedAt: now, Status: store.EndpointActive})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SaveStatuses(ctx, "m1", nil, []store.Event{ev("m1", 3), ev("m1", 4)}); err != nil {
		t.Fatal(err)
	}
	if err := d.CreateMeeting(ctx, store.Meeting{ID: "m2", Type: stage.Webinar, CreatedAt: now}, []store.Event{ev("m2", 1)}); err != nil {
		t.Fatal(err)
	}
	pending := func(d store.Store) string {
		t.Helper()
		evs, err := d.PendingEvents(ctx, "w1", ep.StartN, 10)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for i, e := range evs {
			if i > 0 && e.N <= evs[i-1].N {
				t.Fatalf("positions out of order: %+v", evs)
			}
			out = append(out, fmt.Sprintf("%s:%d", e.MeetingID, e.Seq))
		}
		return fmt.Sprint(out)
	}
	if got := pending(d); got != "[m1:3 m1:4 m2:1]" {
		t.Fatalf("pending %s", got)
	}
	a := func(seq uint64, status int) store.Attempt {
		return store.Attempt{EndpointID: "w1", EventID: fmt.Sprint("e", seq), MeetingID: "m1", Seq: seq, At: now, Status: status, Latency: time.Millisecond}
	}
	if err := d.Record(ctx, "w1", []store.Attempt{a(3, 200), a(4, 500)}, map[string]uint64{"m1": 3}); err != nil {
		t.Fatal(err)
	}
	if got := pending(d); got != "[m1:4 m2:1]" {
		t.Fatalf("pending after a delivery %s", got)
	}
	ep.Status, ep.Note, ep.StatusAt = store.EndpointFailing, "too long", now
	if err := d.UpdateEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if err := d.UpdateEndpoint(ctx, store.Endpoint{ID: "nope"}); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
	d = reopen()
	if got := pending(d); got != "[m1:4 m2:1]" {
		t.Fatalf("pending after a reopen %s", got)
	}
	got, err := d.Endpoint(ctx, "w1")
	if err != nil || got.Status != store.EndpointFailing || got.Note != "too long" || got.URL != ep.URL || got.StartN != ep.StartN {
		t.Fatalf("endpoint %+v %v", got, err)
	}
	var seqs []uint64
	for cursor := ""; ; {
		as, next, err := d.Attempts(ctx, "w1", store.Page{After: cursor, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			seqs = append(seqs, a.Seq)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if fmt.Sprint(seqs) != "[4 3]" {
		t.Fatalf("attempts newest first: %v", seqs)
	}
	if eps, err := d.Endpoints(ctx); err != nil || len(eps) != 1 {
		t.Fatalf("endpoints %+v %v", eps, err)
	}
	if err := d.DeleteEndpoint(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Endpoint(ctx, "w1"); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("deleted endpoint: %v", err)
	}
	if err := d.DeleteEndpoint(ctx, "w1"); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}
