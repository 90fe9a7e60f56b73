package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// seed creates meeting m1 with participants p0..p(n-1) of the viewer preset.
func seed(t *testing.T, d *DB, n int) time.Time {
	t.Helper()
	ctx := context.Background()
	for _, p := range stage.BuiltinPresets() {
		if err := d.CreatePreset(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	if err := d.CreateMeeting(ctx, store.Meeting{ID: "m1", Title: "T", Type: stage.Webinar, CreatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := store.Participant{ID: fmt.Sprint("p", i), MeetingID: "m1", UserID: fmt.Sprint("u", i), Name: "n",
			Preset: "webinar_viewer", CreatedAt: now}
		if err := d.AddParticipant(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	return now
}

// While another process holds the database's write lock (a backup, the
// sqlite3 shell), a write fails — it is never reported as done — and
// nothing of it is written; once the lock is gone, writes work again.
func TestDB_writeFailsWhileLocked(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cocmd.db")
	d := open(t, path)
	seed(t, d, 1)
	other, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	err = d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p0", Status: stage.Accepted}}, nil)
	if err == nil {
		t.Fatal("a write under another process's lock succeeded")
	}
	err = d.SetParticipantPreset(ctx, "m1", "p0", "webinar_host", []store.Status{{ParticipantID: "p0", Status: stage.Accepted}}, nil)
	if err == nil {
		t.Fatal("a preset change under another process's lock succeeded")
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	p, err := d.Participant(ctx, "m1", "p0")
	if err != nil || p.Status != stage.OffStage || p.Preset != "webinar_viewer" {
		t.Fatalf("after the failed writes: %+v %v", p, err)
	}
	if err := d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p0", Status: stage.Accepted}}, nil); err != nil {
		t.Fatal(err)
	}
	if p, _ := d.Participant(ctx, "m1", "p0"); p.Status != stage.Accepted {
		t.Fatalf("after the lock: %v", p.Status)
	}
}

// Many writers at once are committed in groups, and every write is there
// after a reopen.
func TestDB_groupCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cocmd.db")
	d := open(t, path)
	const n = 300
	now := seed(t, d, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			st := store.Status{ParticipantID: fmt.Sprint("p", i), Status: stage.Requested, RequestedAt: now, RequestSeq: uint64(i + 1)}
			if err := d.SaveStatuses(ctx, "m1", []store.Status{st}, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	d.Close()
	if err := d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p0"}}, nil); !errors.Is(err, errClosed) {
		t.Errorf("a write after Close: %v", err)
	}
	d = open(t, path)
	all, err := d.AllParticipants(ctx, "m1")
	if err != nil || len(all) != n {
		t.Fatalf("%d participants, %v", len(all), err)
	}
	for i, p := range all {
		if p.ID != fmt.Sprint("p", i) || p.Status != stage.Requested || p.RequestSeq != uint64(i+1) || !p.RequestedAt.Equal(now) {
			t.Fatalf("participant %d: %+v", i, p)
		}
	}
}

// UpdateMeeting and SetParticipantPreset write what they are given;
// AllParticipants returns a meeting's participants only, in order.
func TestDB_updates(t *testing.T) {
	ctx := context.Background()
	d := open(t, filepath.Join(t.TempDir(), "cocmd.db"))
	now := seed(t, d, 3)
	if err := d.CreateMeeting(ctx, store.Meeting{ID: "m2", Title: "other", Type: stage.GroupCall, CreatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.AddParticipant(ctx, store.Participant{ID: "q", MeetingID: "m2", UserID: "u0", Preset: "webinar_viewer", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	m, _ := d.Meeting(ctx, "m1")
	m.Title, m.MaxOnStage, m.StageRequestTTL, m.EndedAt = "renamed", 7, 90*time.Second, now.Add(time.Hour)
	if err := d.UpdateMeeting(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Meeting(ctx, "m1"); got != m {
		t.Errorf("meeting %+v, want %+v", got, m)
	}
	if err := d.UpdateMeeting(ctx, store.Meeting{ID: "nope"}, nil); !errors.Is(err, stage.ErrNotFound) {
		t.Errorf("update of an unknown meeting: %v", err)
	}
	if err := d.SetParticipantPreset(ctx, "m1", "p1", "webinar_host", []store.Status{{ParticipantID: "p1", Status: stage.OnStage}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.SetParticipantPreset(ctx, "m1", "p1", "nope", nil, nil); !errors.Is(err, stage.ErrNotFound) {
		t.Errorf("unknown preset: %v", err)
	}
	if err := d.SetParticipantPreset(ctx, "m2", "p1", "webinar_host", nil, nil); !errors.Is(err, stage.ErrNotFound) {
		t.Errorf("participant of another meeting: %v", err)
	}
	all, err := d.AllParticipants(ctx, "m1")
	if err != nil || len(all) != 3 {
		t.Fatalf("%+v %v", all, err)
	}
	for i, p := range all {
		if p.ID != fmt.Sprint("p", i) || p.MeetingID != "m1" {
			t.Errorf("participant %d: %+v", i, p)
		}
	}
	if all[1].Preset != "webinar_host" || all[1].Status != stage.OnStage {
		t.Errorf("after the preset change: %+v", all[1])
	}
	if none, err := d.AllParticipants(ctx, "nope"); err != nil || len(none) != 0 {
		t.Errorf("unknown meeting: %v %v", none, err)
	}
}

// A backup taken while the database is written to is a database of its
// own, 0600, with every committed change; it refuses to overwrite a file.
func TestBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "cocmd.db")
	d := open(t, path)
	seed(t, d, 20)
	if err := d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: "p3", Status: stage.Accepted}}, nil); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // a writer that keeps going meanwhile
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d.SaveStatuses(ctx, "m1", []store.Status{{ParticipantID: fmt.Sprint("p", 10+i%10), Status: stage.OnStage}}, nil)
		}
	})
	out := filepath.Join(t.TempDir(), "backup.db")
	err := Backup(ctx, path, out)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	b := open(t, out)
	p, err := b.Participant(ctx, "m1", "p3")
	if err != nil || p.Status != stage.Accepted {
		t.Fatalf("in the backup: %+v %v", p, err)
	}
	if all, _ := b.AllParticipants(ctx, "m1"); len(all) != 20 {
		t.Fatalf("%d participants in the backup", len(all))
	}
	if err := Backup(ctx, path, out); err == nil {
		t.Fatal("a backup overwrote a file")
	}
}
