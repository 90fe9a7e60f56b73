// Package mediasource publishes media without a camera: from a file (VP8
// in IVF, H.264 Annex-B, Opus in Ogg) or from synthetic frames. It is for
// tests, demos and benchmarks: a Source paces its frames in real time into
// a pion track that client.Media.Publish sends.
//
//	cam, _ := mediasource.OpenIVF("clip.ivf")
//	go cam.Play(ctx, true)
//	meeting.Media.Publish(ctx, cam.LocalTrack(client.SourceCamera))
package mediasource

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/cocmd/cocmd/client"
)

// Frame is one unit of media and how long it lasts.
type Frame struct {
	Data     []byte
	Duration time.Duration
	Keyframe bool // a video frame that decodes on its own
	// Level is an audio frame's level for the ssrc-audio-level header
	// extension, plus one: 1 (0 dBov, the loudest) to 128 (127, silence);
	// 0 sends no level.
	Level uint8
}

// Source is a sequence of frames played into a track.
type Source struct {
	// Track is what to publish.
	Track *webrtc.TrackLocalStaticSample

	frames    []Frame
	keyframe  atomic.Bool // a subscriber asked for one
	hasKeys   bool
	hasLevels bool
	level     atomic.Uint32 // the level of the frame being written, as Frame.Level
	Frames    atomic.Uint64 // frames written so far
	Keyframes atomic.Uint64 // keyframes written so far
}

// New returns a source playing frames with codec c. id and streamID name
// the track (any non-empty strings).
func New(c webrtc.RTPCodecCapability, id, streamID string, frames []Frame) (*Source, error) {
	return newSource(c, id, streamID, frames)
}

func newSource(c webrtc.RTPCodecCapability, id, streamID string, frames []Frame, opts ...func(*webrtc.TrackLocalStaticRTP)) (*Source, error) {
	if len(frames) == 0 {
		return nil, errors.New("mediasource: no frames")
	}
	t, err := webrtc.NewTrackLocalStaticSample(c, id, streamID, opts...)
	if err != nil {
		return nil, err
	}
	s := &Source{Track: t, frames: frames}
	for _, f := range frames {
		s.hasKeys = s.hasKeys || f.Keyframe
		s.hasLevels = s.hasLevels || f.Level > 0
	}
	return s, nil
}

// LocalTrack returns the source's track as one to publish as src. A
// subscriber's keyframe request makes the source skip ahead to its next
// keyframe.
func (s *Source) LocalTrack(src client.Source) client.LocalTrack {
	var t webrtc.TrackLocal = s.Track
	if s.hasLevels {
		t = &levelTrack{TrackLocal: s.Track, level: &s.level}
	}
	return client.LocalTrack{Track: t, Source: src, OnKeyframeRequest: s.RequestKeyframe}
}

// RequestKeyframe makes the next frame played a keyframe (the next one in
// the file, skipping what is between).
func (s *Source) RequestKeyframe() { s.keyframe.Store(true) }

// Play writes the frames in real time until ctx ends, or until the last
// one when loop is false.
func (s *Source) Play(ctx context.Context, loop bool) error {
	var key *atomic.Bool
	if s.hasKeys {
		key = &s.keyframe
	}
	return play(ctx, s.frames, loop, key, func(i int) error {
		f := s.frames[i]
		s.level.Store(uint32(f.Level))
		if err := s.Track.WriteSample(media.Sample{Data: f.Data, Duration: f.Duration}); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			return err
		}
		s.Frames.Add(1)
		if f.Keyframe {
			s.Keyframes.Add(1)
		}
		return nil
	})
}

// play paces frames in real time, calling write with each one's index,
// until ctx ends or, when loop is false, after the last; a keyframe asked
// for (key, nil for none) skips ahead to the next one.
func play(ctx context.Context, frames []Frame, loop bool, key *atomic.Bool, write func(i int) error) error {
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; ; i++ {
		if i == len(frames) {
			if !loop {
				return nil
			}
			i = 0
		}
		if key != nil && key.Swap(false) {
			for !frames[i].Keyframe {
				i = (i + 1) % len(frames)
			}
		}
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := write(i); err != nil {
			return err
		}
		next = next.Add(frames[i].Duration)
	}
}

// OpenIVF reads a VP8 IVF file.
func OpenIVF(path string) (*Source, error) {
	frames, err := readIVF(path)
	if err != nil {
		return nil, err
	}
	return New(vp8, "video", "mediasource", frames)
}

var vp8 = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}

// readIVF reads the frames of a VP8 IVF file.
func readIVF(path string) ([]Frame, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, h, err := ivfreader.NewWith(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("mediasource: %s: %w", path, err)
	}
	if h.FourCC != "VP80" {
		return nil, fmt.Errorf("mediasource: %s: codec %q, want VP80", path, h.FourCC)
	}
	tick := time.Second * time.Duration(h.TimebaseNumerator) / time.Duration(h.TimebaseDenominator)
	var frames []Frame
	for {
		data, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("mediasource: %s: %w", path, err)
		}
		// VP8 frame tag (RFC 6386 section 9.1): bit 0 clear on keyframes.
		frames = append(frames, Frame{Data: data, Duration: tick, Keyframe: len(data) > 0 && data[0]&1 == 0})
	}
	return frames, nil
}

// Simulcast is the same video at several qualities, played in lockstep as
// the layers of one simulcast track.
type Simulcast struct {
	// Layers are the qualities, lowest first, with rids q, h and f.
	Layers []*Source

	keyframe atomic.Bool
	muted    [3]atomic.Bool // by the server's dynacast
	dropped  [3]atomic.Bool // by Drop
}

// SimulcastRIDs are the rids of a Simulcast's layers, lowest first.
var SimulcastRIDs = []string{"q", "h", "f"}

// OpenSimulcastIVF reads VP8 IVF files of the same video at different
// sizes, lowest first (one to three), with the same frames and keyframes
// at the same places, as ../shared/media's simulcast clips are.
func OpenSimulcastIVF(paths ...string) (*Simulcast, error) {
	if len(paths) == 0 || len(paths) > len(SimulcastRIDs) {
		return nil, fmt.Errorf("mediasource: %d simulcast layers; 1 to %d", len(paths), len(SimulcastRIDs))
	}
	s := &Simulcast{}
	for i, p := range paths {
		frames, err := readIVF(p)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			first := s.Layers[0].frames
			if len(frames) != len(first) {
				return nil, fmt.Errorf("mediasource: %s has %d frames, %s %d: the layers must be the same video", p, len(frames), paths[0], len(first))
			}
			for j := range frames {
				if frames[j].Keyframe != first[j].Keyframe {
					return nil, fmt.Errorf("mediasource: %s: frame %d is a keyframe in one layer only", p, j)
				}
			}
		}
		src, err := newSource(vp8, "video", "mediasource", frames, webrtc.WithRTPStreamID(SimulcastRIDs[i]))
		if err != nil {
			return nil, err
		}
		s.Layers = append(s.Layers, src)
	}
	return s, nil
}

// LocalTrack returns the layers as one simulcast track to publish as src.
func (s *Simulcast) LocalTrack(src client.Source) client.LocalTrack {
	lt := client.LocalTrack{Track: s.Layers[0].Track, Source: src, OnKeyframeRequest: s.RequestKeyframe, OnLayers: s.SetActive}
	for _, l := range s.Layers[1:] {
		lt.Layers = append(lt.Layers, l.Track)
	}
	return lt
}

// SetActive sends the layers of these rids and mutes the others: what the
// server's dynacast asks for (LocalTrack.OnLayers).
func (s *Simulcast) SetActive(rids []string) {
	for i := range s.Layers {
		s.Mute(i, !slices.Contains(rids, SimulcastRIDs[i]))
	}
}

// RequestKeyframe makes the next frame of every layer a keyframe.
func (s *Simulcast) RequestKeyframe() { s.keyframe.Store(true) }

// Mute stops sending layer i, or starts again: what the server's dynacast
// asks for (SetActive).
func (s *Simulcast) Mute(i int, muted bool) { s.muted[i].Store(muted) }

// Drop stops sending layer i whatever the server asks, as an encoder that
// drops a layer for want of bandwidth does, or starts again.
func (s *Simulcast) Drop(i int, dropped bool) { s.dropped[i].Store(dropped) }

// Play writes the layers' frames in lockstep, in real time, until ctx ends,
// or until the last one when loop is false.
func (s *Simulcast) Play(ctx context.Context, loop bool) error {
	return play(ctx, s.Layers[0].frames, loop, &s.keyframe, func(i int) error {
		for j, l := range s.Layers {
			if s.muted[j].Load() || s.dropped[j].Load() {
				continue
			}
			f := l.frames[i]
			if err := l.Track.WriteSample(media.Sample{Data: f.Data, Duration: f.Duration}); err != nil && !errors.Is(err, io.ErrClosedPipe) {
				return err
			}
			l.Frames.Add(1)
			if f.Keyframe {
				l.Keyframes.Add(1)
			}
		}
		return nil
	})
}

// OpenH264 reads an H.264 Annex-B stream of fps frames a second.
func OpenH264(path string, fps int) (*Source, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := h264reader.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("mediasource: %s: %w", path, err)
	}
	var frames []Frame
	var au []byte
	key := false
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("mediasource: %s: %w", path, err)
		}
		au = append(au, 0, 0, 0, 1)
		au = append(au, nal.Data...)
		switch nal.UnitType {
		case h264reader.NalUnitTypeCodedSliceIdr:
			key = true
			fallthrough
		case h264reader.NalUnitTypeCodedSliceNonIdr:
			frames = append(frames, Frame{Data: au, Duration: time.Second / time.Duration(fps), Keyframe: key})
			au, key = nil, false
		}
	}
	return New(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "mediasource", frames)
}

// OpenOggLevels reads an Opus Ogg file and the audio level of each of its
// packets from a text file: one level per line (-dBov, 0 the loudest, 127
// silence; lines starting with # are comments), as ../shared/media's
// speaker clips have. The levels go in the ssrc-audio-level header
// extension, as a browser sends them.
func OpenOggLevels(path, levelsPath string) (*Source, error) {
	src, err := OpenOgg(path)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(levelsPath)
	if err != nil {
		return nil, err
	}
	i := 0
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n, err := strconv.Atoi(line)
		if err != nil || n < 0 || n > 127 {
			return nil, fmt.Errorf("mediasource: %s: level %q: want 0 to 127", levelsPath, line)
		}
		if i < len(src.frames) {
			src.frames[i].Level = uint8(n) + 1
		}
		i++
	}
	src.hasLevels = i > 0
	return src, nil
}

// levelTrack adds each packet's audio level (ssrc-audio-level) to what the
// wrapped track writes.
type levelTrack struct {
	webrtc.TrackLocal
	level *atomic.Uint32
}

// Bind implements webrtc.TrackLocal.
func (t *levelTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	w := &levelWriter{TrackLocalWriter: ctx.WriteStream(), level: t.level}
	for _, e := range ctx.HeaderExtensions() {
		if e.URI == sdp.AudioLevelURI {
			w.id = uint8(e.ID)
		}
	}
	return t.TrackLocal.Bind(&levelContext{TrackLocalContext: ctx, w: w})
}

type levelContext struct {
	webrtc.TrackLocalContext
	w webrtc.TrackLocalWriter
}

// WriteStream implements webrtc.TrackLocalContext.
func (c *levelContext) WriteStream() webrtc.TrackLocalWriter { return c.w }

type levelWriter struct {
	webrtc.TrackLocalWriter
	id    uint8
	level *atomic.Uint32
}

// WriteRTP implements webrtc.TrackLocalWriter: the level, with the voice
// activity bit set when it is not silence.
func (w *levelWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	if l := w.level.Load(); l > 0 && w.id != 0 {
		v := byte(l - 1)
		if v < 127 {
			v |= 0x80
		}
		h.SetExtension(w.id, []byte{v})
	}
	return w.TrackLocalWriter.WriteRTP(h, payload)
}

// OpenOgg reads an Opus Ogg file: one frame per Opus packet (a page may
// hold many), each lasting its share of its page's granule positions.
func OpenOgg(path string) (*Source, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	frames, err := oggPackets(b)
	if err != nil {
		return nil, fmt.Errorf("mediasource: %s: %w", path, err)
	}
	// Opus in RTP is always signalled as two channels (RFC 7587 section 7),
	// whatever the stream holds.
	return New(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "mediasource", frames)
}

// oggPackets splits an Ogg Opus stream (RFC 3533, RFC 7845) into its audio
// packets, skipping the OpusHead and OpusTags headers.
func oggPackets(b []byte) ([]Frame, error) {
	var frames []Frame
	var partial []byte
	var last uint64
	for len(b) > 0 {
		if len(b) < 27 || string(b[:4]) != "OggS" {
			return nil, errors.New("not an Ogg page")
		}
		granule := binary.LittleEndian.Uint64(b[6:14])
		nseg := int(b[26])
		if len(b) < 27+nseg {
			return nil, errors.New("a truncated Ogg page")
		}
		lacing := b[27 : 27+nseg]
		data := b[27+nseg:]
		var packets [][]byte
		off := 0
		for _, l := range lacing {
			if off+int(l) > len(data) {
				return nil, errors.New("a truncated Ogg page")
			}
			partial = append(partial, data[off:off+int(l)]...)
			off += int(l)
			if l < 255 { // the packet ends here; 255: it goes on
				packets = append(packets, partial)
				partial = nil
			}
		}
		b = data[off:]
		var audio [][]byte
		for _, p := range packets {
			if bytes.HasPrefix(p, []byte("OpusHead")) || bytes.HasPrefix(p, []byte("OpusTags")) {
				continue
			}
			audio = append(audio, p)
		}
		if len(audio) == 0 || granule == ^uint64(0) || granule <= last {
			continue
		}
		each := time.Duration(granule-last) * time.Second / 48000 / time.Duration(len(audio))
		last = granule
		for _, p := range audio {
			frames = append(frames, Frame{Data: p, Duration: each})
		}
	}
	if len(frames) == 0 {
		return nil, errors.New("no Opus packets")
	}
	return frames, nil
}

// Synthetic returns a VP8 source of fps frames a second of about
// bitrate bits a second, a keyframe every second: random bytes behind
// valid VP8 frame tags. It is not decodable, but it is packetized,
// forwarded and counted like real video.
func Synthetic(fps, bitrate int) (*Source, error) {
	size := bitrate / 8 / fps
	rng := rand.New(rand.NewPCG(1, 2))
	frames := make([]Frame, fps)
	for i := range frames {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		key := i == 0
		data[0] = data[0] | 1
		if key {
			data[0] &^= 1
		}
		frames[i] = Frame{Data: data, Duration: time.Second / time.Duration(fps), Keyframe: key}
	}
	return New(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "mediasource", frames)
}
