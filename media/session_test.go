package media

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// The publisher side refuses what the stage and the preset do not allow,
// and what is not an offer it can use, before it touches a connection.
func TestSession_publishRefusals(t *testing.T) {
	s := newSFU(t, Config{Loopback: true})
	sess := s.NewSession("m", "p", "u", func(string, any) {})
	defer sess.Close()
	sdp, mid := offer(t)
	cam := map[string]protocol.Source{mid: protocol.SourceCamera}
	if _, err := sess.Publish(sdp, cam); stage.CodeOf(err) != stage.CodeInvalidStageStatus {
		t.Errorf("off stage: %v", err)
	}
	s.Allow("m", "p", stage.Media{Audio: true}, true)
	if _, err := sess.Publish(sdp, cam); stage.CodeOf(err) != stage.CodePermissionDenied {
		t.Errorf("a camera with audio only allowed: %v", err)
	}
	s.Allow("m", "p", stage.Media{Audio: true, Video: true}, true)
	for name, c := range map[string]struct {
		sdp  string
		srcs map[string]protocol.Source
		code stage.Code
	}{
		"malformed":              {"v=0\r\nthis is not sdp", nil, stage.CodeBadRequest},
		"source of a wrong kind": {sdp, map[string]protocol.Source{mid: protocol.SourceMicrophone}, stage.CodeBadRequest},
		"a mid it does not send": {sdp, map[string]protocol.Source{"nope": protocol.SourceCamera}, stage.CodeBadRequest},
	} {
		if _, err := sess.Publish(c.sdp, c.srcs); stage.CodeOf(err) != c.code {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := sess.Publish(sdp, cam); err != nil {
		t.Fatalf("an allowed camera: %v", err)
	}
	sess.Close()
	if _, err := sess.Publish(sdp, cam); stage.CodeOf(err) != stage.CodeNotFound {
		t.Errorf("after Close: %v", err)
	}
}

// The subscriber side: one subscription per session, answers only to an
// offer, candidates only for a connection there is; a published track is
// offered with its description, and its removal is told in the next
// offer.
func TestSession_subscriber(t *testing.T) {
	s := newSFU(t, Config{Loopback: true})
	offers := make(chan protocol.MediaOffer, 8)
	sub := s.NewSession("m", "viewer", "vu", func(ev string, data any) {
		if ev == protocol.EventMediaOffer {
			offers <- data.(protocol.MediaOffer)
		}
	})
	defer sub.Close()
	if err := sub.Answer("v=0\r\n"); stage.CodeOf(err) != stage.CodeBadRequest {
		t.Errorf("an answer before subscribing: %v", err)
	}
	if err := sub.AddCandidate(protocol.CandidateParams{Target: protocol.TargetSubscriber, Candidate: protocol.Candidate{Candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}); stage.CodeOf(err) != stage.CodeNotFound {
		t.Errorf("a candidate with no connection: %v", err)
	}
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	if err := sub.Subscribe(); stage.CodeOf(err) != stage.CodeBadRequest {
		t.Errorf("subscribing twice: %v", err)
	}
	// A candidate before the answer waits for it, up to a bound.
	for i := range maxCandidates + 1 {
		err := sub.AddCandidate(protocol.CandidateParams{Target: protocol.TargetSubscriber, Candidate: protocol.Candidate{Candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host"}})
		if (i < maxCandidates) != (err == nil) {
			t.Fatalf("candidate %d before the answer: %v", i, err)
		}
	}

	// A publisher's track reaches the subscriber as an offer describing it.
	s.Allow("m", "pub", stage.Media{Video: true}, true)
	pub := s.NewSession("m", "pub", "pu", func(string, any) {})
	defer pub.Close()
	tr := &Track{sess: pub, pid: "pub", uid: "pu", id: "pub:camera", source: protocol.SourceCamera, kind: webrtc.RTPCodecTypeVideo,
		codec: webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}},
		cache: newPacketCache(4)}
	tr.downs.Store(&[]*downTrack{})
	if err := s.room("m").publish(tr); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-offers:
		if len(o.Tracks) != 1 || o.Tracks[0].UserID != "pu" || o.Tracks[0].Source != protocol.SourceCamera || o.Tracks[0].Mid == "" ||
			!strings.Contains(o.SDP, "m=video") {
			t.Fatalf("offer %+v", o.Tracks)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no offer for the published track")
	}
	if n := len(*tr.downs.Load()); n != 1 {
		t.Fatalf("the track forwards to %d subscribers", n)
	}
	s.room("m").unpublish(tr)
	if n := len(*tr.downs.Load()); n != 0 {
		t.Fatalf("after unpublishing, the track forwards to %d subscribers", n)
	}
	if err := sub.Answer("v=0\r\nnot an answer"); stage.CodeOf(err) != stage.CodeBadRequest {
		t.Errorf("a malformed answer: %v", err)
	}
}

// A participant publishes at most one track of each source.
func TestSession_oneTrackPerSource(t *testing.T) {
	s := newSFU(t, Config{Loopback: true})
	s.Allow("m", "p", stage.Media{Video: true}, true)
	sess := s.NewSession("m", "p", "u", func(string, any) {})
	defer sess.Close()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, id := range []string{"a", "b"} {
		tr, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, id, id)
		if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Publish(o.SDP, nil); stage.CodeOf(err) != stage.CodePermissionDenied || !strings.Contains(err.Error(), "more than one camera") {
		t.Fatalf("two cameras: %v", err)
	}
}
