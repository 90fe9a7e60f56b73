package meeting

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// fakeMedia records what the meetings tell the media plane.
type fakeMedia struct {
	mu      sync.Mutex
	allowed map[string]stage.Media // absent: may not publish
	forgot  []string
}

func (f *fakeMedia) Allow(meetingID, pid string, m stage.Media, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ok {
		f.allowed[pid] = m
	} else {
		delete(f.allowed, pid)
	}
}

func (f *fakeMedia) Forget(meetingID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgot = append(f.forgot, meetingID)
}

func (f *fakeMedia) get(pid string) (stage.Media, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.allowed[pid]
	return m, ok
}

// The media plane learns of every change of who may publish: on load, on
// kicks and grants, on preset changes, on removal; and forgets the meeting
// when it unloads.
func TestMeeting_tellsMedia(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := &memStore{m: store.Meeting{ID: "m", Type: stage.Webinar}, parts: []store.Participant{
		{ID: "h", UserID: "hu", Preset: "webinar_host"},
		{ID: "p", UserID: "pu", Preset: "webinar_panelist", Status: stage.OnStage},
		{ID: "v", UserID: "vu", Preset: "webinar_viewer", Status: stage.Accepted},
	}}
	fm := &fakeMedia{allowed: map[string]stage.Media{}}
	reg := NewRegistry(s, Config{Logger: quiet(), Grace: time.Second, Media: fm})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := reg.Live(ctx, "m"); err != nil { // loads it
		t.Fatal(err)
	}
	all := stage.Media{Audio: true, Video: true, Screenshare: true}
	if m, ok := fm.get("p"); !ok || m != all {
		t.Errorf("on load, the panelist on stage may publish %v %v", m, ok)
	}
	for _, pid := range []string{"h", "v"} {
		if _, ok := fm.get(pid); ok {
			t.Errorf("on load, %s off stage may publish", pid)
		}
	}
	if _, err := reg.Kick(ctx, "m", []string{"pu"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := fm.get("p"); ok {
		t.Error("a kicked participant may still publish")
	}
	// Joining goes through a client.
	c, err := reg.Connect(ctx, "m", "v", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetWriter(func() {}, nil)
	if st, err := c.JoinStage(ctx); err != nil || st != stage.OnStage {
		t.Fatalf("join: %v %v", st, err)
	}
	if m, ok := fm.get("v"); !ok || m != (stage.Media{Audio: true, Video: true}) {
		t.Errorf("after join, the viewer may publish %v %v", m, ok)
	}
	// A preset that only allows audio narrows it, without a status change.
	s.presets = append(s.presets, stage.Preset{Name: "voice", Permissions: stage.Permissions{StageEnabled: true, StageAccess: stage.CanRequest, Media: stage.Media{Audio: true}}})
	if err := reg.SetPreset(ctx, "m", "v", "voice"); err != nil {
		t.Fatal(err)
	}
	if m, ok := fm.get("v"); !ok || m != (stage.Media{Audio: true}) {
		t.Errorf("after the preset change, the viewer may publish %v %v", m, ok)
	}
	if err := reg.RemoveParticipant(ctx, "m", "v"); err != nil {
		t.Fatal(err)
	}
	if _, ok := fm.get("v"); ok {
		t.Error("a removed participant may still publish")
	}
	reg.Close()
	fm.mu.Lock()
	defer fm.mu.Unlock()
	if len(fm.forgot) != 1 || fm.forgot[0] != "m" {
		t.Errorf("forgot %v", fm.forgot)
	}
}
