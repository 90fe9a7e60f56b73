package server_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
)

// Two speakers on stage take turns (the clips: A talks for 5 s, then B,
// with the levels a browser would put in the packets): a viewer is told
// that A is the active speaker, then B, each while speaking, and never
// more than four times a second.
func TestMedia_activeSpeaker(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "speakers", "type": "WEBINAR"})
	ctx := ctxT(t)
	dir := filepath.Join("..", "..", "shared", "media")
	speak := func(uid, clip string) *client.Meeting {
		m := ts.join(ts.participant(mid, uid, "webinar_host"))
		if err := m.Stage.Join(ctx); err != nil {
			t.Fatal(err)
		}
		src, err := mediasource.OpenOggLevels(filepath.Join(dir, clip+"-opus.ogg"), filepath.Join(dir, clip+"-levels.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Media.Publish(ctx, src.LocalTrack(client.SourceMicrophone)); err != nil {
			t.Fatal(err)
		}
		playCtx, stop := context.WithCancel(context.Background())
		t.Cleanup(stop)
		go src.Play(playCtx, false)
		return m
	}
	viewer := ts.join(ts.participant(mid, "viewer", "webinar_viewer"))
	if err := viewer.Media.Subscribe(ctx); err != nil {
		t.Fatal(err)
	}
	events := make(chan client.ActiveSpeaker, 64)
	go func() {
		for e := range viewer.Events() {
			if a, ok := e.(client.ActiveSpeaker); ok {
				events <- a
			}
		}
	}()
	a := speak("a", "speaker-a-talks-first-5s")
	b := speak("b", "speaker-b-talks-last-5s")
	start := time.Now()
	var seen []client.ActiveSpeaker
	var times []time.Time
	wait := func(pid string, within time.Duration) client.ActiveSpeaker {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case e := <-events:
				seen, times = append(seen, e), append(times, time.Now())
				if e.ParticipantID == pid {
					return e
				}
			case <-deadline:
				t.Fatalf("%s never became the active speaker (events: %+v)", pid, seen)
			}
		}
	}
	first := wait(a.Self().ID, 3*time.Second)
	if len(first.Speaking) != 1 || first.Speaking[0] != a.Self().ID {
		t.Errorf("while A talks, speaking %v, want A only", first.Speaking)
	}
	if id, _ := viewer.Media.ActiveSpeaker(); id != a.Self().ID || !viewer.Media.Speaking(a.Self().ID) || viewer.Media.Speaking(b.Self().ID) {
		t.Errorf("the viewer's view: active %q, A speaking %v, B speaking %v", id, viewer.Media.Speaking(a.Self().ID), viewer.Media.Speaking(b.Self().ID))
	}
	second := wait(b.Self().ID, 9*time.Second)
	if at := time.Since(start); at < 4*time.Second {
		t.Errorf("B took over %v after the start, before A stopped (5 s)", at)
	}
	if len(second.Speaking) != 1 || second.Speaking[0] != b.Self().ID {
		t.Errorf("while B talks, speaking %v, want B only", second.Speaking)
	}
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d < 200*time.Millisecond {
			t.Errorf("two activeSpeaker events %v apart", d)
		}
	}
}
