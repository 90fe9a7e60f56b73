package server_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
	"github.com/cocmd/cocmd/media"
	"github.com/cocmd/cocmd/protocol"
)

// vp8Watch reads a received VP8 track: the width of each keyframe, and
// whether the stream stayed one stream (sequence numbers one apart,
// timestamps never going back).
type vp8Watch struct {
	mu        sync.Mutex
	packets   int
	widths    []int // of the keyframes, in order
	seqBreaks int   // a sequence number not one after the last
	tsBack    int   // a timestamp before the last
	last      time.Time
	lastSeq   uint16
	lastTs    uint32
	started   bool
}

func watchVP8(rt *client.RemoteTrack) *vp8Watch {
	w := &vp8Watch{}
	go func() {
		buf := make([]byte, 1500)
		var p rtp.Packet
		for {
			n, _, err := rt.Read(buf)
			if err != nil {
				return
			}
			if p.Unmarshal(buf[:n]) != nil {
				continue
			}
			w.add(&p)
		}
	}()
	return w
}

func (w *vp8Watch) add(p *rtp.Packet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		if p.SequenceNumber != w.lastSeq+1 {
			w.seqBreaks++
		}
		if int32(p.Timestamp-w.lastTs) < 0 {
			w.tsBack++
		}
	}
	w.started, w.lastSeq, w.lastTs, w.last = true, p.SequenceNumber, p.Timestamp, time.Now()
	w.packets++
	if width := keyframeWidth(p.Payload); width > 0 {
		w.widths = append(w.widths, width)
	}
}

// keyframeWidth is the width of the keyframe payload p starts, or 0.
func keyframeWidth(p []byte) int {
	w, _, _ := media.VP8KeyframeSize(p)
	return w
}

func (w *vp8Watch) lastWidth() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.widths) == 0 {
		return 0
	}
	return w.widths[len(w.widths)-1]
}

func (w *vp8Watch) snapshot() (packets, seqBreaks, tsBack int, last time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.packets, w.seqBreaks, w.tsBack, w.last
}

func eventuallyWidth(t *testing.T, w *vp8Watch, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for w.lastWidth() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: keyframes %d wide, want %d", what, w.lastWidth(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A simulcast publisher (three layers of the test clip: 320, 640 and 1280
// wide) and its viewers: each receives the layer that suits the size it
// displays the track at — the largest when it says nothing, the smallest
// at least as large as what it says —, moves when it says another size,
// gets no video when it hides the track and gets it back when it shows it,
// and moves to another layer within a second of its layer stopping. Through
// every move its stream stays one stream: sequence numbers one apart,
// timestamps never going back.
func TestMedia_simulcast(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "simulcast", "type": "WEBINAR"})
	ctx := ctxT(t)
	sim := openSimulcastClips(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	if err := host.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	playCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go sim.Play(playCtx, true)
	if err := host.Media.Publish(ctx, sim.LocalTrack(client.SourceCamera)); err != nil {
		t.Fatal(err)
	}
	viewer := func(uid string) *client.RemoteTrack {
		m := ts.join(ts.participant(mid, uid, "webinar_viewer"))
		if err := m.Media.Subscribe(ctx); err != nil {
			t.Fatal(err)
		}
		added := make(chan *client.RemoteTrack, 4)
		pump(t, m, nil, added, nil) // the track's one reader is watchVP8
		return recvTrack(t, added, uid+"'s track")
	}
	bigTrack, smallTrack, twinTrack := viewer("big"), viewer("small"), viewer("twin")
	if err := smallTrack.SetSize(ctx, 300, 170); err != nil {
		t.Fatal(err)
	}
	bw, sw, tw := watchVP8(bigTrack), watchVP8(smallTrack), watchVP8(twinTrack)
	eventuallyWidth(t, bw, 1280, "a viewer that said no size")
	eventuallyWidth(t, sw, 320, "a viewer that displays the track at 300x170")

	// Larger: the next layer up; the largest.
	if err := smallTrack.SetSize(ctx, 600, 340); err != nil {
		t.Fatal(err)
	}
	eventuallyWidth(t, sw, 640, "at 600x340")
	if err := smallTrack.SetSize(ctx, 1920, 1080); err != nil {
		t.Fatal(err)
	}
	eventuallyWidth(t, sw, 1280, "at 1920x1080 (larger than any layer)")

	// Hidden: no video; shown: video again.
	if err := smallTrack.SetSize(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // what was in flight
	n0, _, _, _ := sw.snapshot()
	time.Sleep(time.Second)
	if n1, _, _, _ := sw.snapshot(); n1 != n0 {
		t.Fatalf("a hidden track received %d packets in a second", n1-n0)
	}
	if err := smallTrack.SetSize(ctx, 320, 180); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n, _, _, _ := sw.snapshot(); n < n0+30; n, _, _, _ = sw.snapshot() {
		if time.Now().After(deadline) {
			t.Fatal("video did not come back when the track was shown again")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The largest layer stops: its viewer moves to the next within a
	// second or so (layerTimeout, then a keyframe).
	sim.Drop(2, true)
	eventuallyWidth(t, bw, 640, "the largest layer stopped")
	sim.Drop(2, false)
	eventuallyWidth(t, bw, 1280, "the largest layer back")

	for _, w := range []struct {
		name string
		w    *vp8Watch
	}{{"big", bw}, {"small", sw}, {"twin (switching with big, on the same packets)", tw}} {
		n, breaks, back, _ := w.w.snapshot()
		if breaks > 0 || back > 0 {
			t.Errorf("%s: %d sequence breaks and %d timestamps going back in %d packets", w.name, breaks, back, n)
		}
	}
	if st := ts.sfu.Stats(mid); st.LayerSwitches < 6 || st.SimulcastLayers != 3 {
		t.Errorf("stats %+v: want 3 layers and the switches counted", st)
	}
}

// media.setTrackSize for a track the client does not receive, or with a
// size out of range, is refused and changes nothing.
func TestMedia_setTrackSizeRefused(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "sizes", "type": "WEBINAR"})
	r := newRawPeer(t, ts, ts.participant(mid, "v", "webinar_viewer"))
	for _, c := range []struct {
		params any
		code   string
	}{
		{map[string]any{"track_id": "nobody:camera", "width": 320, "height": 180}, "NOT_FOUND"},
		{map[string]any{"track_id": "x", "width": -1, "height": 180}, "BAD_REQUEST"},
		{map[string]any{"track_id": "x", "width": 320, "height": 99999}, "BAD_REQUEST"},
		{map[string]any{"width": 320, "height": 180}, "BAD_REQUEST"},
		{map[string]any{"track_id": "x", "width": 1, "height": 1, "depth": 3}, "BAD_REQUEST"},
	} {
		m := r.call("media.setTrackSize", c.params)
		if m.Error == nil || string(m.Error.Code) != c.code {
			t.Errorf("%v: %+v, want %s", c.params, m.Error, c.code)
		}
	}
}

// Dynacast: a layer nobody receives for two seconds is paused at the
// publisher (told in media.layers; mediasource stops sending it), and
// comes back when a subscriber wants it: the subscriber then gets it.
func TestMedia_dynacast(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "dynacast", "type": "WEBINAR"})
	ctx := ctxT(t)
	sim := openSimulcastClips(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	if err := host.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	layers := make(chan []string, 16)
	go func() {
		for e := range host.Events() {
			if l, ok := e.(client.LayersUpdate); ok && l.Source == client.SourceCamera {
				layers <- l.Active
			}
		}
	}()
	playCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go sim.Play(playCtx, true)
	if err := host.Media.Publish(ctx, sim.LocalTrack(client.SourceCamera)); err != nil {
		t.Fatal(err)
	}
	m := ts.join(ts.participant(mid, "v", "webinar_viewer"))
	if err := m.Media.Subscribe(ctx); err != nil {
		t.Fatal(err)
	}
	added := make(chan *client.RemoteTrack, 4)
	pump(t, m, nil, added, nil)
	track := recvTrack(t, added, "the viewer's track")
	if err := track.SetSize(ctx, 300, 170); err != nil {
		t.Fatal(err)
	}
	w := watchVP8(track)
	eventuallyWidth(t, w, 320, "a small tile")
	// want waits until the publisher is told to send exactly active
	// ("q"), or at least it ("+f").
	want := func(active string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case l := <-layers:
				if strings.Join(l, ",") == active || strings.HasPrefix(active, "+") && slices.Contains(l, active[1:]) {
					return
				}
			case <-deadline:
				t.Fatalf("the publisher was never told to send %q", active)
			}
		}
	}
	want("q", 6*time.Second)
	f0 := sim.Layers[2].Frames.Load()
	time.Sleep(500 * time.Millisecond)
	if f := sim.Layers[2].Frames.Load(); f != f0 {
		t.Fatalf("the paused layer still sends: %d frames in 0.5 s", f-f0)
	}
	if err := track.SetSize(ctx, 1280, 720); err != nil {
		t.Fatal(err)
	}
	want("+f", 3*time.Second)
	eventuallyWidth(t, w, 1280, "a large tile, after the layer came back")
	if _, breaks, back, _ := w.snapshot(); breaks > 0 || back > 0 {
		t.Errorf("%d sequence breaks, %d timestamps back", breaks, back)
	}
}

// A kick tells every subscriber at once that the kicked participant's
// track ended (media.trackEnded), before the offer without it: a client
// takes it off the screen without waiting for a negotiation.
func TestMedia_trackEndedBeforeOffer(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "ended", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	speaker := ts.join(ts.participant(mid, "speaker", "webinar_panelist"))
	if err := speaker.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
	if err := speaker.Media.Publish(ctx, client.LocalTrack{Track: src.track, Source: client.SourceCamera}); err != nil {
		t.Fatal(err)
	}
	// The viewer speaks the protocol itself, answering offers with pion.
	c := rawConn(t, ts, ts.participant(mid, "v", "webinar_viewer"))
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	id := uint64(0)
	send := func(method string, params any) {
		id++
		if err := c.WriteJSON(map[string]any{"id": id, "method": method, "params": params}); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(sdp string) {
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
			t.Fatal(err)
		}
		a, err := pc.CreateAnswer(nil)
		if err != nil {
			t.Fatal(err)
		}
		done := webrtc.GatheringCompletePromise(pc)
		pc.SetLocalDescription(a)
		<-done
		send(protocol.MethodAnswer, protocol.SDPParams{SDP: pc.LocalDescription().SDP})
	}
	send(protocol.MethodSubscribe, nil)
	var trackID string
	for trackID == "" {
		m := waitEventRaw(t, c, protocol.EventMediaOffer)
		var o protocol.MediaOffer
		json.Unmarshal(m.Data, &o)
		answer(o.SDP)
		for _, tr := range o.Tracks {
			if tr.ParticipantID == speaker.Self().ID {
				trackID = tr.TrackID
			}
		}
	}
	if err := host.Stage.Kick(ctx, "speaker"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal("no media.trackEnded after the kick:", err)
		}
		m, _ := protocol.DecodeMessage(b)
		if m.Type != protocol.TypeEvent {
			continue
		}
		switch m.Event {
		case protocol.EventTrackEnded:
			var e protocol.TrackEnded
			json.Unmarshal(m.Data, &e)
			if e.TrackID != trackID || e.ParticipantID != speaker.Self().ID || e.Source != protocol.SourceCamera {
				t.Fatalf("media.trackEnded %+v, want track %s", e, trackID)
			}
			return
		case protocol.EventMediaOffer:
			var o protocol.MediaOffer
			json.Unmarshal(m.Data, &o)
			still := false
			for _, tr := range o.Tracks {
				still = still || tr.TrackID == trackID
			}
			if !still {
				t.Fatal("the offer without the kicked track came before media.trackEnded")
			}
			answer(o.SDP) // an offer still with it: fine
		}
	}
}

// openSimulcastClips opens the three aligned simulcast clips of the test
// media (320x180, 640x360, 1280x720, VP8), smallest first.
func openSimulcastClips(t *testing.T) *mediasource.Simulcast {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "media")
	sim, err := mediasource.OpenSimulcastIVF(filepath.Join(dir, "simulcast-q-320x180-30fps-vp8.ivf"),
		filepath.Join(dir, "simulcast-h-640x360-30fps-vp8.ivf"), filepath.Join(dir, "simulcast-f-1280x720-30fps-vp8.ivf"))
	if err != nil {
		t.Fatal(err)
	}
	return sim
}
