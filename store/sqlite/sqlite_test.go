package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

func open(t *testing.T, path string) *DB {
	t.Helper()
	d, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDB_roundTrip(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cocmd.db")
	d := open(t, path)
	viewer := stage.BuiltinPresets()[2]
	if err := d.CreatePreset(ctx, viewer); err != nil {
		t.Fatal(err)
	}
	if err := d.CreatePreset(ctx, viewer); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate preset: %v", err)
	}
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	m := store.Meeting{ID: "m1", Title: "T", Type: stage.Webinar, MaxOnStage: 3, StageRequestTTL: time.Minute, CreatedAt: now}
	if err := d.CreateMeeting(ctx, m); err != nil {
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
	if err := d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p3", Status: stage.Requested, RequestedAt: now, RequestSeq: 9}}); err != nil {
		t.Fatal(err)
	}
	if err := d.DeletePreset(ctx, viewer.Name); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete preset in use: %v", err)
	}
	d.Close()

	d = open(t, path) // reopen: everything is still there
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
	if err := d.RemoveParticipant(ctx, "m1", "p0"); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveParticipant(ctx, "m1", "p0"); !errors.Is(err, stage.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	v, _ := d.SetSettingOnce(ctx, "k", []byte("a"))
	v2, _ := d.SetSettingOnce(ctx, "k", []byte("b"))
	if string(v) != "a" || string(v2) != "a" {
		t.Fatalf("setting %s %s", v, v2)
	}
}
