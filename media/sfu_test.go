package media

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSFU(t *testing.T, cfg Config) *SFU {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newSFUOn(t, conn, cfg)
}

// newSFUOn is newSFU on a socket of the caller's.
func newSFUOn(t *testing.T, conn net.PacketConn, cfg Config) *SFU {
	t.Helper()
	cfg.Conn = conn
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// offer returns a pion offer sending one VP8 track.
func offer(t *testing.T) (string, string) {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	tr, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "v", "s")
	x, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	return o.SDP, x.Mid()
}

// Behind 1:1 NAT the server announces its public address, not its own.
func TestSFU_publicIP(t *testing.T) {
	s := newSFU(t, Config{PublicIPs: []string{"203.0.113.7"}, Loopback: true})
	s.Allow("m", "p", stage.Media{Video: true}, true)
	sess := s.NewSession("m", "p", "u", func(string, any) {})
	defer sess.Close()
	sdp, mid := offer(t)
	ans, err := sess.Publish(sdp, map[string]protocol.Source{mid: protocol.SourceCamera})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ans, "203.0.113.7") || strings.Contains(ans, " 127.0.0.1 ") {
		t.Fatalf("answer's candidates:\n%s", ans)
	}
}

// Allow revokes at once: a track of a participant that may no longer
// publish is stopped before Allow returns, and the client is told.
func TestSFU_allowRevokes(t *testing.T) {
	s := newSFU(t, Config{Loopback: true})
	told := make(chan protocol.MediaStopped, 1)
	s.Allow("m", "p", stage.Media{Video: true, Screenshare: true}, true)
	sess := s.NewSession("m", "p", "u", func(ev string, data any) {
		if ev == protocol.EventMediaStopped {
			told <- data.(protocol.MediaStopped)
		}
	})
	defer sess.Close()
	r := s.room("m")
	cam := &Track{sess: sess, pid: "p", source: protocol.SourceCamera, cache: newPacketCache(4)}
	scr := &Track{sess: sess, pid: "p", source: protocol.SourceScreenshare, cache: newPacketCache(4)}
	for _, tr := range []*Track{cam, scr} {
		tr.downs.Store(&[]*downTrack{})
		if err := r.publish(tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.publish(&Track{sess: sess, pid: "p", source: protocol.SourceCamera}); stage.CodeOf(err) != stage.CodePermissionDenied {
		t.Errorf("a second camera: %v", err)
	}
	s.Allow("m", "p", stage.Media{Video: true}, true)
	if !scr.stopped.Load() || cam.stopped.Load() {
		t.Fatalf("after narrowing: camera stopped %v, screenshare stopped %v", cam.stopped.Load(), scr.stopped.Load())
	}
	select {
	case st := <-told:
		if st.Reason != protocol.StoppedPermissions || len(st.Sources) != 1 || st.Sources[0] != protocol.SourceScreenshare {
			t.Errorf("told %+v", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the publisher was not told")
	}
	s.Allow("m", "p", stage.Media{}, false)
	if !cam.stopped.Load() {
		t.Fatal("the camera still forwards after the stage was left")
	}
	if err := r.publish(&Track{sess: sess, pid: "p", source: protocol.SourceCamera}); stage.CodeOf(err) != stage.CodeInvalidStageStatus {
		t.Errorf("publishing off stage: %v", err)
	}
	select { // told after the tracks were taken off
	case st := <-told:
		if st.Reason != protocol.StoppedStage {
			t.Errorf("told %+v", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the publisher was not told")
	}
	if st := s.Stats("m"); st.Tracks != 0 {
		t.Errorf("tracks left: %d", st.Tracks)
	}
}

// Revocations made one after the other are told to the publisher in that
// order, however quickly they follow each other.
func TestSFU_revocationsInOrder(t *testing.T) {
	s := newSFU(t, Config{Loopback: true})
	told := make(chan protocol.MediaStopped, 64)
	for i := range 20 {
		pid := "p"
		s.Allow("m", pid, stage.Media{Video: true, Screenshare: true}, true)
		sess := s.NewSession("m", pid, "u", func(ev string, data any) {
			if ev == protocol.EventMediaStopped {
				told <- data.(protocol.MediaStopped)
			}
		})
		r := s.room("m")
		cam := &Track{sess: sess, pid: pid, source: protocol.SourceCamera, cache: newPacketCache(4)}
		scr := &Track{sess: sess, pid: pid, source: protocol.SourceScreenshare, cache: newPacketCache(4)}
		for _, tr := range []*Track{cam, scr} {
			tr.downs.Store(&[]*downTrack{})
			if err := r.publish(tr); err != nil {
				t.Fatal(err)
			}
		}
		s.Allow("m", pid, stage.Media{Video: true}, true) // the screen share goes
		s.Allow("m", pid, stage.Media{}, false)           // then the camera
		for _, want := range []string{protocol.StoppedPermissions, protocol.StoppedStage} {
			select {
			case st := <-told:
				if st.Reason != want {
					t.Fatalf("round %d: told %q, want %q", i, st.Reason, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: the publisher was not told %q", i, want)
			}
		}
		sess.Close()
	}
}

// An offer with hundreds of media sections is refused before pion sees
// it: each would cost a transceiver.
func TestSFU_tooManySections(t *testing.T) {
	s := newSFU(t, Config{Loopback: true})
	s.Allow("m", "p", stage.Media{Audio: true, Video: true}, true)
	sess := s.NewSession("m", "p", "u", func(string, any) {})
	defer sess.Close()
	var b strings.Builder
	b.WriteString("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
	for i := range 250 {
		fmt.Fprintf(&b, "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:%d\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n", i)
	}
	if _, err := sess.Publish(b.String(), nil); stage.CodeOf(err) != stage.CodeBadRequest || !strings.Contains(err.Error(), "250 media sections") {
		t.Fatalf("a 250-section offer: %v", err)
	}
}
