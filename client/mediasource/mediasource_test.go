package mediasource

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

var clips = filepath.Join("..", "..", "..", "shared", "media")

func TestOpen(t *testing.T) {
	cases := []struct {
		name         string
		open         func() (*Source, error)
		mime         string
		frames, keys int // at least
		total        time.Duration
	}{
		{"ivf", func() (*Source, error) { return OpenIVF(filepath.Join(clips, "testsrc-640x360-30fps-vp8.ivf")) }, webrtc.MimeTypeVP8, 300, 5, 10 * time.Second},
		{"h264", func() (*Source, error) {
			return OpenH264(filepath.Join(clips, "testsrc-640x360-30fps-baseline.h264"), 30)
		}, webrtc.MimeTypeH264, 300, 1, 10 * time.Second},
		{"ogg", func() (*Source, error) { return OpenOgg(filepath.Join(clips, "sine-440hz-opus.ogg")) }, webrtc.MimeTypeOpus, 490, 0, 10 * time.Second},
		{"synthetic", func() (*Source, error) { return Synthetic(30, 1_000_000) }, webrtc.MimeTypeVP8, 30, 1, time.Second},
	}
	for _, c := range cases {
		s, err := c.open()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var keys int
		var total time.Duration
		for _, f := range s.frames {
			if f.Keyframe {
				keys++
			}
			total += f.Duration
		}
		if s.Track.Codec().MimeType != c.mime || len(s.frames) < c.frames || keys < c.keys {
			t.Errorf("%s: %s, %d frames, %d keyframes", c.name, s.Track.Codec().MimeType, len(s.frames), keys)
		}
		if d := total - c.total; d < -100*time.Millisecond || d > 100*time.Millisecond {
			t.Errorf("%s: lasts %v, want %v", c.name, total, c.total)
		}
		if !s.frames[0].Keyframe && c.keys > 0 {
			t.Errorf("%s: does not start with a keyframe", c.name)
		}
	}
	if _, err := OpenIVF(filepath.Join(clips, "sine-440hz-opus.ogg")); err == nil {
		t.Error("an Ogg file opened as IVF")
	}
	if _, err := OpenOgg("no such file"); err == nil {
		t.Error("a missing file opened")
	}
}

// Play paces frames in real time and skips ahead to a keyframe when asked.
func TestPlay(t *testing.T) {
	frames := []Frame{{Data: []byte{0}, Duration: 10 * time.Millisecond, Keyframe: true}}
	for range 9 {
		frames = append(frames, Frame{Data: []byte{1}, Duration: 10 * time.Millisecond})
	}
	s, err := New(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "v", "s", frames)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Play(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if s.Frames.Load() != 10 || s.Keyframes.Load() != 1 {
		t.Errorf("played %d frames, %d keyframes", s.Frames.Load(), s.Keyframes.Load())
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Errorf("10 frames of 10 ms played in %v", el)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	go func() {
		time.Sleep(50 * time.Millisecond)
		s.RequestKeyframe()
	}()
	s.Play(ctx, true)
	// 20 frames in 200 ms: the first keyframe, one at a loop at 100 ms, and
	// at least the one asked for at 50 ms.
	if s.Keyframes.Load() < 1+3 {
		t.Errorf("%d keyframes after a request", s.Keyframes.Load()-1)
	}
}
