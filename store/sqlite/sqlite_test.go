package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/store/storetest"
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

func TestDB_conformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), "cocmd.db")
		d := open(t, path)
		return d, func() store.Store {
			d.Close()
			d = open(t, path)
			return d
		}
	})
}

// Pruning takes the log entries and the attempts older than asked, and
// nothing else; a zero time keeps the log.
func TestDB_prune(t *testing.T) {
	ctx := context.Background()
	d := open(t, filepath.Join(t.TempDir(), "cocmd.db"))
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	if err := d.CreateMeeting(ctx, store.Meeting{ID: "m1", Type: stage.Webinar, CreatedAt: now}, []store.Event{
		{MeetingID: "m1", Seq: 1, Type: "meeting.started", At: now.Add(-100 * time.Hour)},
		{MeetingID: "m1", Seq: 2, Type: "meeting.updated", At: now},
	}); err != nil {
		t.Fatal(err)
	}
	ep, err := d.CreateEndpoint(ctx, store.Endpoint{ID: "w1", URL: "https://example.com", Secrets: []string{"whsec_AA=="}, CreatedAt: now, Status: store.EndpointActive})
	if err != nil || ep.StartN != 2 {
		t.Fatalf("endpoint %+v %v", ep, err)
	}
	for _, at := range []time.Time{now.Add(-40 * 24 * time.Hour), now} {
		if err := d.AddAttempt(ctx, store.Attempt{EndpointID: "w1", EventID: "e", MeetingID: "m1", Seq: 1, At: at, Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	if e, a, err := d.Prune(ctx, time.Time{}, now.Add(-30*24*time.Hour)); err != nil || e != 0 || a != 1 {
		t.Fatalf("pruned %d entries, %d attempts, %v", e, a, err)
	}
	if e, _, err := d.Prune(ctx, now.Add(-48*time.Hour), now.Add(-30*24*time.Hour)); err != nil || e != 1 {
		t.Fatalf("pruned %d entries, %v", e, err)
	}
	if evs, _, _ := d.Events(ctx, "m1", store.EventFilter{}, store.Page{Limit: 10}); len(evs) != 1 || evs[0].Seq != 2 {
		t.Fatalf("left %+v", evs)
	}
}
