package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// rawPeer speaks the protocol without the SDK: it does what it is told,
// and keeps sending media whatever the server says.
type rawPeer struct {
	t    *testing.T
	c    *websocket.Conn
	next uint64
	pc   *webrtc.PeerConnection
}

func newRawPeer(t *testing.T, ts *testServer, token string) *rawPeer {
	return &rawPeer{t: t, c: rawConn(t, ts, token)}
}

func (r *rawPeer) call(method string, params any) protocol.Message {
	r.t.Helper()
	r.next++
	req := map[string]any{"id": r.next, "method": method}
	if params != nil {
		req["params"] = params
	}
	if err := r.c.WriteJSON(req); err != nil {
		r.t.Fatal(err)
	}
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return response(r.t, r.c, r.next)
}

// publish offers tracks (each with its source) on a new peer connection
// and returns the server's response; on success the connection is up.
func (r *rawPeer) publish(tracks []webrtc.TrackLocal, sources []protocol.Source) protocol.Message {
	r.t.Helper()
	api, err := client.NewWebRTCAPI(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { pc.Close() })
	var trs []*webrtc.RTPTransceiver
	for _, tr := range tracks {
		x, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			r.t.Fatal(err)
		}
		trs = append(trs, x)
	}
	offer, _ := pc.CreateOffer(nil)
	done := webrtc.GatheringCompletePromise(pc)
	pc.SetLocalDescription(offer)
	<-done
	srcs := map[string]protocol.Source{}
	for i, x := range trs {
		srcs[x.Mid()] = sources[i]
	}
	msg := r.call(protocol.MethodPublish, protocol.PublishParams{SDP: pc.LocalDescription().SDP, Sources: srcs})
	if msg.Error == nil {
		var ans protocol.SDPParams
		json.Unmarshal(msg.Data, &ans)
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans.SDP}); err != nil {
			r.t.Fatal(err)
		}
		r.pc = pc
	}
	return msg
}

func wantCode(t *testing.T, what string, msg protocol.Message, code stage.Code) {
	t.Helper()
	if msg.Error == nil || msg.Error.Code != code {
		t.Errorf("%s: got %+v, want %s", what, msg.Error, code)
	}
}

// A viewer promoted mid-meeting is seen by everyone; once kicked, nothing
// more of its media reaches anyone although its client keeps sending; it
// can come back.
func TestMedia_promotedThenKicked(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "media", "type": "WEBINAR"})
	ctx := ctxT(t)
	hw := watch(t, ts, mid, "host", "webinar_host")
	host, hs, hadd, hrem := hw.m, hw.s, hw.added, hw.removed
	ww := watch(t, ts, mid, "w", "webinar_viewer")
	ws, wadd, wrem := ww.s, ww.added, ww.removed

	v := newRawPeer(t, ts, ts.participant(mid, "v", "webinar_viewer"))
	src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
	cam := []webrtc.TrackLocal{src.track}
	camera := []protocol.Source{protocol.SourceCamera}
	wantCode(t, "publish off stage", v.publish(cam, camera), stage.CodeInvalidStageStatus)
	if msg := v.call(protocol.MethodRequestAccess, nil); msg.Error != nil {
		t.Fatal(msg.Error)
	}
	wantCode(t, "publish while requested", v.publish(cam, camera), stage.CodeInvalidStageStatus)
	if err := host.Stage.GrantAccess(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "publish while accepted", v.publish(cam, camera), stage.CodeInvalidStageStatus)
	if msg := v.call(protocol.MethodJoin, nil); msg.Error != nil {
		t.Fatal(msg.Error)
	}
	if msg := v.publish(cam, camera); msg.Error != nil {
		t.Fatal(msg.Error)
	}
	vt := recvTrack(t, wadd, "v's track at w")
	recvTrack(t, hadd, "v's track at the host")
	vid := vt.ParticipantID
	waitCount(t, "w", 50, func() int { return ws.count(vid) })
	waitCount(t, "host", 50, func() int { return hs.count(vid) })

	if err := host.Stage.Kick(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	kicked := time.Now()
	atKick := ws.count(vid)
	recvTrack(t, wrem, "v's track removed at w")
	recvTrack(t, hrem, "v's track removed at the host")
	// What was in flight at the kick has arrived 0.3 s later; from then
	// on, whatever the kicked client keeps sending, nothing more may.
	time.Sleep(300 * time.Millisecond)
	settled, hostSettled, sentThen := ws.count(vid), hs.count(vid), src.sent.Load()
	time.Sleep(700 * time.Millisecond)
	if src.sent.Load() <= sentThen {
		t.Fatal("the kicked client stopped sending; the test proves nothing")
	}
	if n := ws.count(vid); n != settled {
		t.Errorf("w received %d packets of v between 0.3 s and 1 s after the kick", n-settled)
	}
	if n := hs.count(vid); n != hostSettled {
		t.Errorf("the host received %d packets of v between 0.3 s and 1 s after the kick", n-hostSettled)
	}
	last := ws.lastAt(vid).Sub(kicked)
	t.Logf("after the kick's response: %d packets of v reached w (in flight), the last %v after it", settled-atKick, last.Round(time.Microsecond))
	wantCode(t, "publish after the kick", v.publish(cam, camera), stage.CodeInvalidStageStatus)

	// Granted again, v is seen again.
	if err := host.Stage.GrantAccess(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	if msg := v.call(protocol.MethodJoin, nil); msg.Error != nil {
		t.Fatal(msg.Error)
	}
	src2 := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
	if msg := v.publish([]webrtc.TrackLocal{src2.track}, camera); msg.Error != nil {
		t.Fatal(msg.Error)
	}
	recvTrack(t, wadd, "v's track again at w")
	waitCount(t, "w, again", settled+50, func() int { return ws.count(vid) })
}

// Leaving the stage, a preset change and a disconnect all stop tracks.
func TestMedia_stoppedByLeavePresetAndDisconnect(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "media", "type": "WEBINAR"})
	ctx := ctxT(t)
	ww := watch(t, ts, mid, "w", "webinar_viewer")
	ws, wadd, wrem := ww.s, ww.added, ww.removed
	p := ts.join(ts.participant(mid, "p", "webinar_panelist"))
	pid := p.Self().ID
	stopped := make(chan client.PublishingStopped, 4)
	go func() {
		for e := range p.Events() {
			if s, ok := e.(client.PublishingStopped); ok {
				stopped <- s
			}
		}
	}()
	publish := func() (*rtpSource, *rtpSource) {
		cam := newRTPSource(t, "video", webrtc.MimeTypeVP8, 10*time.Millisecond)
		scr := newRTPSource(t, "screen", webrtc.MimeTypeVP8, 10*time.Millisecond)
		if err := p.Media.Publish(ctx, client.LocalTrack{Track: cam.track, Source: client.SourceCamera},
			client.LocalTrack{Track: scr.track, Source: client.SourceScreenshare}); err != nil {
			t.Fatal(err)
		}
		got := map[client.Source]bool{}
		for range 2 {
			got[recvTrack(t, wadd, "a track of p").Source] = true
		}
		if !got[client.SourceCamera] || !got[client.SourceScreenshare] {
			t.Fatalf("tracks: %v", got)
		}
		return cam, scr
	}
	waitStopped := func(what, reason string) client.PublishingStopped {
		t.Helper()
		select {
		case s := <-stopped:
			if s.Reason != reason {
				t.Errorf("%s: stopped because %q, want %q", what, s.Reason, reason)
			}
			return s
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no PublishingStopped", what)
			return client.PublishingStopped{}
		}
	}

	if err := p.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	publish()
	if err := p.Stage.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	waitStopped("leave", protocol.StoppedStage)
	recvTrack(t, wrem, "removed after leave")
	recvTrack(t, wrem, "removed after leave")

	// A preset without screenshare stops that track only.
	if err := p.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	publish()
	ts.mustAPI("PATCH", "/v1/meetings/"+mid+"/participants/"+pid, map[string]any{"preset": "webinar_viewer"}, nil)
	s := waitStopped("preset change", protocol.StoppedPermissions)
	if len(s.Sources) != 1 || s.Sources[0] != client.SourceScreenshare {
		t.Errorf("stopped %v, want the screenshare", s.Sources)
	}
	if rt := recvTrack(t, wrem, "removed after the preset change"); rt.Source != client.SourceScreenshare {
		t.Errorf("removed %s", rt.Source)
	}
	n := ws.count(pid)
	waitCount(t, "the camera after the preset change", n+20, func() int { return ws.count(pid) })

	// Leaving the meeting stops the rest.
	p.Close()
	if rt := recvTrack(t, wrem, "removed after the disconnect"); rt.Source != client.SourceCamera {
		t.Errorf("removed %s", rt.Source)
	}
}

// Requests the SDK never sends, and publishing beyond the preset.
func TestMedia_badInput(t *testing.T) {
	ts := startServer(t, testOptions{})
	camOnly := stage.Preset{Name: "cam_only", Permissions: stage.Permissions{StageEnabled: true, StageAccess: stage.Allowed, Media: stage.Media{Video: true}}}
	ts.mustAPI("POST", "/v1/presets", camOnly, nil)
	mid := ts.meeting(map[string]any{"title": "media", "type": "WEBINAR"})
	ctx := ctxT(t)

	// The SDK's errors for participants off stage.
	viewer := ts.join(ts.participant(mid, "viewer", "webinar_viewer"))
	audience := ts.join(ts.participant(mid, "aud", "webinar_audience"))
	src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 20*time.Millisecond)
	for _, m := range []*client.Meeting{viewer, audience} {
		err := m.Media.Publish(ctx, client.LocalTrack{Track: src.track, Source: client.SourceCamera})
		if !errors.Is(err, client.ErrInvalidStageStatus) {
			t.Errorf("%s publishing off stage: %v", m.Self().UserID, err)
		}
	}

	r := newRawPeer(t, ts, ts.participant(mid, "r", "cam_only"))
	wantCode(t, "candidate before any connection", r.call(protocol.MethodCandidate, map[string]any{
		"target": "publisher", "candidate": map[string]any{"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}), stage.CodeNotFound)
	wantCode(t, "subscriber candidate before subscribing", r.call(protocol.MethodCandidate, map[string]any{
		"target": "subscriber", "candidate": map[string]any{"candidate": "x"}}), stage.CodeNotFound)
	wantCode(t, "candidate for an unknown target", r.call(protocol.MethodCandidate, map[string]any{
		"target": "nobody", "candidate": map[string]any{"candidate": "x"}}), stage.CodeBadRequest)
	wantCode(t, "answer without an offer", r.call(protocol.MethodAnswer, map[string]any{"sdp": "v=0\r\n"}), stage.CodeBadRequest)
	if msg := r.call(protocol.MethodJoin, nil); msg.Error != nil {
		t.Fatal(msg.Error)
	}
	wantCode(t, "sdp that is not sdp", r.call(protocol.MethodPublish, map[string]any{"sdp": "hello"}), stage.CodeBadRequest)
	wantCode(t, "malformed sdp", r.call(protocol.MethodPublish, map[string]any{"sdp": "v=0\r\nm=video garbage\r\n"}), stage.CodeBadRequest)
	wantCode(t, "no sdp", r.call(protocol.MethodPublish, map[string]any{}), stage.CodeBadRequest)
	wantCode(t, "unknown source", r.call(protocol.MethodPublish, map[string]any{"sdp": "v=0\r\n", "sources": map[string]string{"0": "hologram"}}), stage.CodeBadRequest)
	wantCode(t, "unknown param", r.call(protocol.MethodPublish, map[string]any{"sdp": "v=0\r\n", "extra": 1}), stage.CodeBadRequest)

	audio := newRTPSource(t, "audio", webrtc.MimeTypeOpus, 20*time.Millisecond)
	cam2 := newRTPSource(t, "video2", webrtc.MimeTypeVP8, 20*time.Millisecond)
	wantCode(t, "audio the preset forbids", r.publish([]webrtc.TrackLocal{audio.track}, []protocol.Source{protocol.SourceMicrophone}), stage.CodePermissionDenied)
	wantCode(t, "screenshare the preset forbids", r.publish([]webrtc.TrackLocal{src.track}, []protocol.Source{protocol.SourceScreenshare}), stage.CodePermissionDenied)
	wantCode(t, "two cameras", r.publish([]webrtc.TrackLocal{src.track, cam2.track}, []protocol.Source{protocol.SourceCamera, protocol.SourceCamera}), stage.CodePermissionDenied)
	wantCode(t, "a video track named microphone", r.publish([]webrtc.TrackLocal{src.track}, []protocol.Source{protocol.SourceMicrophone}), stage.CodeBadRequest)
	// After all that, a proper publish works.
	if msg := r.publish([]webrtc.TrackLocal{src.track}, []protocol.Source{protocol.SourceCamera}); msg.Error != nil {
		t.Fatalf("a proper publish: %v", msg.Error)
	}
	wantCode(t, "a second subscribe", func() protocol.Message {
		r.call(protocol.MethodSubscribe, nil)
		return r.call(protocol.MethodSubscribe, nil)
	}(), stage.CodeBadRequest)
}

// H.264 and Opus from files, as a publisher would send them.
func TestMedia_codecsFromFiles(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "media", "type": "WEBINAR"})
	ctx := ctxT(t)
	w := ts.join(ts.participant(mid, "w", "webinar_viewer"))
	if err := w.Media.Subscribe(ctx); err != nil {
		t.Fatal(err)
	}
	wadd := make(chan *client.RemoteTrack, 8)
	pump(t, w, nil, wadd, nil)
	for _, tc := range []struct{ uid, video, mime string }{
		{"h264", "h264", webrtc.MimeTypeH264},
		{"vp8", "ivf", webrtc.MimeTypeVP8},
	} {
		p := ts.join(ts.participant(mid, tc.uid, "webinar_panelist"))
		if err := p.Stage.Join(ctx); err != nil {
			t.Fatal(err)
		}
		video, audio := openMedia(t, tc.video), openMedia(t, "ogg")
		go video.Play(ctx, true)
		go audio.Play(ctx, true)
		if err := p.Media.Publish(ctx, video.LocalTrack(client.SourceCamera), audio.LocalTrack(client.SourceMicrophone)); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for range 2 {
			rt := recvTrack(t, wadd, tc.uid+"'s tracks")
			got[rt.Codec().MimeType] = true
			buf := make([]byte, 1500)
			for range 20 {
				if _, _, err := rt.Read(buf); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !got[tc.mime] || !got[webrtc.MimeTypeOpus] {
			t.Errorf("%s: codecs %v", tc.uid, got)
		}
	}
}

// openMedia opens a test clip of ../shared/media.
func openMedia(t *testing.T, kind string) *mediasource.Source {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "media")
	var s *mediasource.Source
	var err error
	switch kind {
	case "ivf":
		s, err = mediasource.OpenIVF(filepath.Join(dir, "testsrc-640x360-30fps-vp8.ivf"))
	case "h264":
		s, err = mediasource.OpenH264(filepath.Join(dir, "testsrc-640x360-30fps-baseline.h264"), 30)
	case "ogg":
		s, err = mediasource.OpenOgg(filepath.Join(dir, "sine-440hz-opus.ogg"))
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// After a server restart, the SDKs come back by themselves: the publisher
// on stage publishes again and the subscriber receives it again.
func TestMedia_restart(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "media", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	must(t, host.Stage.Join(ctx))
	src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
	must(t, host.Media.Publish(ctx, client.LocalTrack{Track: src.track, Source: client.SourceCamera}))
	ww := watch(t, ts, mid, "w", "webinar_viewer")
	ws, wadd, wrem := ww.s, ww.added, ww.removed
	hid := recvTrack(t, wadd, "the host's track").ParticipantID
	waitCount(t, "before the restart", 50, func() int { return ws.count(hid) })

	ts.stop()
	recvTrack(t, wrem, "the track removed with the connection")
	ts.start()
	recvTrack(t, wadd, "the host's track after the restart")
	n := ws.count(hid)
	waitCount(t, "after the restart", n+50, func() int { return ws.count(hid) })
}

// RTCP flows both ways: receiver reports and keyframe requests reach the
// publisher (a new subscriber asks for a keyframe, and a subscriber's own
// request is forwarded); sender reports reach the subscribers.
func TestMedia_rtcp(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "media", "type": "WEBINAR"})
	ctx := ctxT(t)
	p := newRawPeer(t, ts, ts.participant(mid, "p", "webinar_panelist"))
	if msg := p.call(protocol.MethodJoin, nil); msg.Error != nil {
		t.Fatal(msg.Error)
	}
	src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
	if msg := p.publish([]webrtc.TrackLocal{src.track}, []protocol.Source{protocol.SourceCamera}); msg.Error != nil {
		t.Fatal(msg.Error)
	}
	var plis, rrs atomic.Int32
	sender := p.pc.GetSenders()[0]
	go func() {
		for {
			pkts, _, err := sender.ReadRTCP()
			if err != nil {
				return
			}
			for _, pk := range pkts {
				switch pk.(type) {
				case *rtcp.PictureLossIndication:
					plis.Add(1)
				case *rtcp.ReceiverReport:
					rrs.Add(1)
				}
			}
		}
	}()
	w := ts.join(ts.participant(mid, "w", "webinar_viewer"))
	must(t, w.Media.Subscribe(ctx))
	wadd := make(chan *client.RemoteTrack, 1)
	pump(t, w, nil, wadd, nil)
	rt := recvTrack(t, wadd, "p's track")
	eventually(t, "a keyframe request for the new subscriber", func() bool { return plis.Load() >= 1 })
	time.Sleep(300 * time.Millisecond) // past the merge interval
	before := plis.Load()
	must(t, rt.RequestKeyframe())
	eventually(t, "the subscriber's keyframe request", func() bool { return plis.Load() > before })
	eventually(t, "a receiver report at the publisher", func() bool { return rrs.Load() >= 1 })
	// Sender reports map the stream's RTP clock to the wall clock: the
	// RTP time of the newest packet, run on to when the report was sent.
	var srs atomic.Int32
	var lastTS atomic.Uint32
	var bad atomic.Pointer[string]
	go func() {
		for {
			pkts, _, err := rt.Receiver.ReadRTCP()
			if err != nil {
				return
			}
			for _, pk := range pkts {
				sr, ok := pk.(*rtcp.SenderReport)
				if !ok {
					continue
				}
				srs.Add(1)
				secs := int64(sr.NTPTime>>32) - 2208988800
				// The source stamps 3000 ticks every 5 ms: the newest
				// packet is a few ticks off at most.
				if d := int32(sr.RTPTime - lastTS.Load()); sr.PacketCount == 0 || d < -30000 || d > 30000 ||
					time.Since(time.Unix(secs, 0)).Abs() > 5*time.Second {
					msg := fmt.Sprintf("sender report %+v, newest packet's timestamp %d", sr, lastTS.Load())
					bad.Store(&msg)
				}
			}
		}
	}()
	go func() { // the track must be read for the receiver to run
		buf := make([]byte, 1500)
		for {
			n, _, err := rt.Read(buf)
			if err != nil {
				return
			}
			var h rtp.Header
			if _, err := h.Unmarshal(buf[:n]); err == nil {
				lastTS.Store(h.Timestamp)
			}
		}
	}()
	eventually(t, "two sender reports at the subscriber", func() bool { return srs.Load() >= 2 })
	if msg := bad.Load(); msg != nil {
		t.Error(*msg)
	}
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
