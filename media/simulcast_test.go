package media

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// vp8Payload builds a VP8 payload: a descriptor with a 15-bit PictureID and
// a TL0PICIDX, and, for a keyframe, the frame tag, start code and size.
func vp8Payload(start, key bool, pic uint16, tl0 uint8, w, h int) []byte {
	b0 := byte(0x80) // X
	if start {
		b0 |= 0x10
	}
	p := []byte{b0, 0xc0, 0, 0, tl0} // I and L
	binary.BigEndian.PutUint16(p[2:], 0x8000|pic)
	if key {
		f := []byte{0x00, 0, 0, 0x9d, 0x01, 0x2a, 0, 0, 0, 0}
		binary.LittleEndian.PutUint16(f[6:], uint16(w))
		binary.LittleEndian.PutUint16(f[8:], uint16(h))
		return append(p, f...)
	}
	return append(p, 0x01, 0, 0, 1, 2, 3)
}

func TestParseVP8(t *testing.T) {
	d, ok := parseVP8(vp8Payload(true, true, 1234, 7, 640, 360))
	if !ok || !d.start || !d.keyframe || d.picLen != 2 || d.picID != 1234 || d.tl0 != 7 || d.width != 640 || d.height != 360 {
		t.Fatalf("keyframe: %+v %v", d, ok)
	}
	d, ok = parseVP8(vp8Payload(true, false, 1, 1, 0, 0))
	if !ok || d.keyframe || !d.start {
		t.Fatalf("delta frame: %+v", d)
	}
	d, ok = parseVP8([]byte{0x90, 0x80, 0x05, 0x00}) // a 7-bit PictureID
	if !ok || d.picLen != 1 || d.picID != 5 || !d.keyframe {
		t.Fatalf("7-bit PictureID: %+v", d)
	}
	d, ok = parseVP8([]byte{0x10, 0x01}) // no extension, not a keyframe
	if !ok || d.picLen != 0 || d.keyframe {
		t.Fatalf("bare descriptor: %+v", d)
	}
	for _, bad := range [][]byte{nil, {0x80}, {0x80, 0x80}, {0x80, 0x80, 0x80}, {0x80, 0x40}} {
		if _, ok := parseVP8(bad); ok {
			t.Errorf("%x parsed", bad)
		}
	}
	p := vp8Payload(false, false, 10, 3, 0, 0)
	d, _ = parseVP8(p)
	d.setPictureID(p, 0x7fff+5) // wraps at 15 bits
	d.setTL0(p, 9)
	if d2, _ := parseVP8(p); d2.picID != 4 || d2.tl0 != 9 {
		t.Fatalf("rewritten ids: %+v", d2)
	}
}

// Across a switch the output goes on one after the other: sequence numbers
// one apart, timestamps forward by the time that passed, picture ids and
// TL0PICIDX one apart; a retransmission is rewritten the same way without
// moving the state; a sequence number from before the switch is not the
// current layer's.
func TestRewriter_switch(t *testing.T) {
	var r rewriter
	now := time.Now().UnixNano()
	send := func(seq uint16, ts uint32, start, key bool, pic uint16, tl0 uint8) (rtp.Header, vp8Desc) {
		h := rtp.Header{SequenceNumber: seq, Timestamp: ts}
		p := vp8Payload(start, key, pic, tl0, 320, 180)
		d, _ := parseVP8(p)
		if key && !r.started || key && seq >= 5000 && r.segStart < 40000 {
			r.switchTo(&h, &d, now)
		}
		r.rewrite(&h, &d, p, now)
		out, _ := parseVP8(p)
		return h, out
	}
	var last rtp.Header
	var lastD vp8Desc
	for i := range uint16(6) { // layer A
		last, lastD = send(100+i, 1000+uint32(i)*3000, i == 0, i == 0, 50+i, 2)
	}
	if last.SequenceNumber != 105 || lastD.picID != 55 {
		t.Fatalf("the first layer is sent as it is: %+v %+v", last, lastD)
	}
	now += int64(33 * time.Millisecond)
	h, d := send(5000, 900000, true, true, 7000, 40) // layer B's keyframe
	if h.SequenceNumber != 106 || d.picID != 56 || d.tl0 != 3 {
		t.Fatalf("after the switch: seq %d pic %d tl0 %d, want 106 56 3", h.SequenceNumber, d.picID, d.tl0)
	}
	if gap := h.Timestamp - last.Timestamp; gap < 2900 || gap > 3100 {
		t.Fatalf("timestamp gap %d over 33 ms, want about 2970", gap)
	}
	h2, _ := send(5001, 900000, false, false, 7000, 40)
	if h2.SequenceNumber != 107 || h2.Timestamp != h.Timestamp {
		t.Fatalf("the next packet: %+v", h2)
	}
	if orig, _, ok := r.locate(107); !ok || orig != 5001 {
		t.Fatalf("NACK of 107: %d %v, want layer B's 5001", orig, ok)
	}
	if _, _, ok := r.locate(104); ok {
		t.Fatal("104 was sent from the first layer, not the current one")
	}
	if _, _, ok := r.locate(200); ok {
		t.Fatal("200 was never sent")
	}
	// A retransmission of 5000 comes out as 106 again and leaves the state.
	rh := rtp.Header{SequenceNumber: 5000, Timestamp: 900000}
	rp := vp8Payload(true, true, 7000, 40, 320, 180)
	rd, _ := parseVP8(rp)
	r.rewrite(&rh, &rd, rp, now)
	if rh.SequenceNumber != 106 || r.lastSeq != 107 {
		t.Fatalf("retransmission: %d, state %d", rh.SequenceNumber, r.lastSeq)
	}
}

func TestChooseLayer(t *testing.T) {
	live := []layerView{{0, 320, 180, 0}, {1, 640, 360, 0}, {2, 1280, 720, 0}}
	size := func(w, h uint64) uint64 { return w<<32 | h }
	for _, c := range []struct {
		name string
		live []layerView
		want uint64
		got  int32
	}{
		{"nothing said: the largest", live, wantUnset, 2},
		{"hidden: none", live, size(0, 0), -1},
		{"tiny tile", live, size(100, 60), 0},
		{"exactly the middle", live, size(640, 360), 1},
		{"just over the middle", live, size(641, 360), 2},
		{"wider than all", live, size(3840, 2160), 2},
		{"tall and narrow", live, size(100, 300), 1},
		{"no layer live", nil, wantUnset, -1},
		{"the largest gone", live[:2], size(1280, 720), 1},
	} {
		if got := chooseLayer(c.live, c.want, 0, -1, true); got != c.got {
			t.Errorf("%s: layer %d, want %d", c.name, got, c.got)
		}
	}
}

// Bad simulcast offers: rids that are not tokens, twice, more than three,
// on audio.
func TestSimulcastRIDs(t *testing.T) {
	md := func(kind string, rids ...string) *sdp.MediaDescription {
		m := &sdp.MediaDescription{MediaName: sdp.MediaName{Media: kind}}
		for _, r := range rids {
			m.Attributes = append(m.Attributes, sdp.Attribute{Key: "rid", Value: r})
		}
		return m
	}
	if r, err := simulcastRIDs(md("video", "q send", "h send", "f send", "x recv"), "0", "video"); err != nil || strings.Join(r, ",") != "q,h,f" {
		t.Fatalf("three layers: %v %v", r, err)
	}
	for name, m := range map[string]*sdp.MediaDescription{
		"twice":      md("video", "q send", "q send"),
		"four":       md("video", "a send", "b send", "c send", "d send"),
		"not tokens": md("video", "q;h send"),
		"too long":   md("video", strings.Repeat("r", 17)+" send"),
		"on audio":   md("audio", "q send", "h send"),
	} {
		if _, err := simulcastRIDs(m, "0", m.MediaName.Media); stage.CodeOf(err) != stage.CodeBadRequest {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A publisher's rids are fixed for its connection's life: a renegotiation
// that changes them is refused, and changes nothing.
func TestSession_ridsChangeRefused(t *testing.T) {
	s := newSFU(t, Config{Loopback: true})
	s.Allow("m", "p", stage.Media{Audio: true, Video: true}, true)
	sess := s.NewSession("m", "p", "u", func(string, any) {})
	defer sess.Close()
	offerWith := func(rids ...string) string {
		pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		var tracks []*webrtc.TrackLocalStaticRTP
		for _, r := range rids {
			tr, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "v", "s", webrtc.WithRTPStreamID(r))
			tracks = append(tracks, tr)
		}
		x, err := pc.AddTransceiverFromTrack(tracks[0], webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range tracks[1:] {
			if err := x.Sender().AddEncoding(tr); err != nil {
				t.Fatal(err)
			}
		}
		o, err := pc.CreateOffer(nil)
		if err != nil {
			t.Fatal(err)
		}
		return o.SDP
	}
	cam := map[string]protocol.Source{"0": protocol.SourceCamera}
	if _, err := sess.Publish(offerWith("q", "h", "f"), cam); err != nil {
		t.Fatalf("a simulcast offer: %v", err)
	}
	if _, err := sess.Publish(offerWith("q", "h"), cam); stage.CodeOf(err) != stage.CodeBadRequest || !strings.Contains(err.Error(), "rids changed") {
		t.Fatalf("rids changed mid-call: %v", err)
	}
	if _, err := sess.Publish(offerWith("l", "m", "h", "x"), cam); stage.CodeOf(err) != stage.CodeBadRequest {
		t.Fatalf("four layers: %v", err)
	}
}

// Who speaks, and the active speaker: the loudest who speaks takes over at
// once from one who stopped, after speakerHold from one who still speaks;
// nobody speaking keeps the last; a change is reported once.
func TestSpeakers_decide(t *testing.T) {
	var sp speakers
	now := time.Unix(0, 0)
	step := func(lv map[string]float64, d time.Duration) bool {
		now = now.Add(d)
		return sp.decide(lv, now)
	}
	if step(map[string]float64{"a": 127, "b": 127}, 0) || sp.active != "" {
		t.Fatalf("silence: %+v", sp)
	}
	if !step(map[string]float64{"a": 30, "b": 127}, 250*time.Millisecond) || sp.active != "a" || !sp.speaking["a"] {
		t.Fatalf("a speaks: %+v", sp)
	}
	if step(map[string]float64{"a": 31, "b": 127}, 250*time.Millisecond) {
		t.Fatal("nothing changed, yet a change was reported")
	}
	// b louder while a still speaks: after speakerHold only.
	if !step(map[string]float64{"a": 40, "b": 20}, 250*time.Millisecond) || sp.active != "a" {
		t.Fatalf("b starts speaking: %+v", sp)
	}
	step(map[string]float64{"a": 40, "b": 20}, 500*time.Millisecond)
	if sp.active != "a" {
		t.Fatalf("b took over before the hold: %+v", sp)
	}
	if !step(map[string]float64{"a": 40, "b": 20}, 600*time.Millisecond) || sp.active != "b" {
		t.Fatalf("b louder for over a second: %+v", sp)
	}
	// b stops, a speaks: a at once.
	if !step(map[string]float64{"a": 30, "b": 127}, 250*time.Millisecond) || sp.active != "a" {
		t.Fatalf("the active speaker stopped: %+v", sp)
	}
	// Nobody speaks: the last stays.
	if !step(map[string]float64{"a": 127, "b": 127}, 250*time.Millisecond) || sp.active != "a" || len(sp.speaking) != 0 {
		t.Fatalf("silence again: %+v", sp)
	}
	if e := sp.event(); e.ParticipantID != "a" || len(e.Speaking) != 0 {
		t.Fatalf("event %+v", e)
	}
}

// The layer choice under a budget: the largest that fits, with a margin to
// move up and none to stay; nothing when not even the smallest fits.
func TestChooseLayer_budget(t *testing.T) {
	live := []layerView{{0, 320, 180, 200_000}, {1, 640, 360, 800_000}, {2, 1280, 720, 2_500_000}}
	for _, c := range []struct {
		name   string
		budget float64
		cur    int32
		got    int32
	}{
		{"plenty", 5_000_000, 0, 2},
		{"fits the middle", 1_500_000, 0, 1},
		{"the middle, without the margin to move up to it", 900_000, 0, 0},
		{"the middle, kept without the margin", 900_000, 1, 1},
		{"only the smallest", 300_000, 2, 0},
		{"not even the smallest: paused", 100_000, 0, -1},
		{"paused, the smallest back with the margin", 260_000, -1, 0},
		{"paused, not yet", 240_000, -1, -1},
	} {
		if got := chooseLayer(live, wantUnset, c.budget, c.cur, true); got != c.got {
			t.Errorf("%s: layer %d, want %d", c.name, got, c.got)
		}
	}
	// Before any loss, the smallest rather than nothing: the estimate may
	// just not have climbed yet.
	if got := chooseLayer(live, wantUnset, 100_000, -1, false); got != 0 {
		t.Errorf("a low estimate that saw no loss: layer %d, want the smallest", got)
	}
	// A small tile never gets more than its size asks for, budget or not.
	if got := chooseLayer(live, 300<<32|170, 5_000_000, -1, true); got != 0 {
		t.Errorf("a small tile with plenty of budget: layer %d", got)
	}
}

// The estimate, fed a sequence of reports: it climbs while nothing is
// lost, falls by half the loss over 10 %, holds in between, and stays in
// bounds whatever the reports say.
func TestEstimator(t *testing.T) {
	e := newEstimator(initialEstimate)
	now := time.Unix(0, 0)
	feed := func(lost uint8, n int, every time.Duration) {
		for range n {
			now = now.Add(every)
			e.report(lost, now)
		}
	}
	feed(0, 10, 500*time.Millisecond)
	if got, want := e.estimate(), initialEstimate*math.Pow(increaseBy, 10); got < want-1 || got > want+1 {
		t.Fatalf("after 5 s without loss: %.0f, want 600k × %.2f^10 = %.0f", got, increaseBy, want)
	}
	prev := e.estimate()
	feed(0, 10, 100*time.Millisecond) // one second of reports: two raises at most
	if got := e.estimate(); got > prev*increaseBy*increaseBy+1 {
		t.Fatalf("reports faster than increaseEvery raised it too fast: %.0f → %.0f", prev, got)
	}
	before := e.estimate()
	feed(13, 3, time.Second) // 5 %: hold
	if e.estimate() != before {
		t.Fatalf("5 %% loss changed it: %.0f → %.0f", before, e.estimate())
	}
	feed(128, 1, time.Second) // 50 %: -25 %
	if got, want := e.estimate(), before*0.75; got < want-1 || got > want+1 {
		t.Fatalf("50 %% loss: %.0f, want %.0f", got, want)
	}
	cut := e.estimate()
	feed(0, 3, 500*time.Millisecond) // within holdAfterCut: no climbing yet
	if e.estimate() != cut {
		t.Fatalf("climbed %v after a cut: %.0f → %.0f", 1500*time.Millisecond, cut, e.estimate())
	}
	feed(255, 100, time.Second) // all lost, for long: the floor
	if e.estimate() != minEstimate {
		t.Fatalf("the floor: %.0f", e.estimate())
	}
	feed(0, 1000, time.Second) // nothing lost, for long: the ceiling
	if e.estimate() != maxEstimate {
		t.Fatalf("the ceiling: %.0f", e.estimate())
	}
}

// A subscriber's estimate shared among the simulcast tracks it receives:
// audio's reserve first, a screen share all the rest, cameras equal shares
// but the active speaker's, which counts twice.
func TestSession_budget(t *testing.T) {
	r := &Room{}
	s := &Session{room: r, pid: "me", bwe: newEstimator(1_064_000)}
	s.simDowns.Store(3)
	cam := func(pid string) *Track { return &Track{pid: pid, source: protocol.SourceCamera} }
	screen := &Track{pid: "a", source: protocol.SourceScreenshare}
	near := func(got, want float64) bool { return got > want-1 && got < want+1 }
	if got := s.budget(cam("a")); !near(got, 1_000_000/3.0) {
		t.Errorf("three cameras, no active speaker: %.0f each", got)
	}
	if got := s.budget(screen); !near(got, 1_000_000) {
		t.Errorf("a screen share: %.0f", got)
	}
	active := "b"
	r.activePID.Store(&active)
	if got := s.budget(cam("b")); !near(got, 500_000) {
		t.Errorf("the active speaker's camera: %.0f, want half", got)
	}
	if got := s.budget(cam("a")); !near(got, 250_000) {
		t.Errorf("another camera: %.0f, want a quarter", got)
	}
	me := "me"
	r.activePID.Store(&me) // this subscriber speaks: its own camera it does not receive
	if got := s.budget(cam("a")); !near(got, 1_000_000/3.0) {
		t.Errorf("while the subscriber itself speaks: %.0f", got)
	}
	var none *Session
	if got := none.budget(cam("a")); got != 0 {
		t.Errorf("no session: %.0f, want no limit", got)
	}
}

// Probes' padding takes sequence numbers of its own in the output: the
// layer's packets go on after it, a NACK finds the packet it names, before
// or after the padding, and padding is told apart; a rewriter that sent
// nothing yet starts with the padding.
func TestRewriter_padding(t *testing.T) {
	var r rewriter
	now := time.Now().UnixNano()
	send := func(seq uint16, start bool) uint16 {
		h := rtp.Header{SequenceNumber: seq, Timestamp: 1000}
		p := vp8Payload(start, start, 50, 2, 320, 180)
		d, _ := parseVP8(p)
		if start && !r.started {
			r.switchTo(&h, &d, now)
		}
		r.rewrite(&h, &d, p, now)
		return h.SequenceNumber
	}
	for i := range uint16(5) {
		if got := send(100+i, i == 0); got != 100+i {
			t.Fatalf("packet %d went out as %d", 100+i, got)
		}
	}
	for i := range uint16(3) {
		if seq, ts := r.pad(now); seq != 105+i || ts != 1000 {
			t.Fatalf("padding %d: seq %d ts %d, want %d 1000", i, seq, ts, 105+i)
		}
	}
	if got := send(105, false); got != 108 {
		t.Fatalf("the layer's next packet after 3 padding: %d, want 108", got)
	}
	r.pad(now)
	if got := send(106, false); got != 110 {
		t.Fatalf("after one more padding: %d, want 110", got)
	}
	for _, c := range []struct {
		out, orig uint16
		padding   bool
	}{{103, 103, false}, {105, 0, true}, {107, 0, true}, {108, 105, false}, {109, 0, true}, {110, 106, false}} {
		orig, padding, ok := r.locate(c.out)
		if !ok || orig != c.orig || padding != c.padding {
			t.Errorf("locate(%d) = %d %v %v, want %d %v", c.out, orig, padding, ok, c.orig, c.padding)
		}
	}
	if _, _, ok := r.locate(111); ok {
		t.Error("111 was never sent")
	}
	// A retransmission keeps the number it was sent with.
	h := rtp.Header{SequenceNumber: 105, Timestamp: 1000}
	p := vp8Payload(false, false, 50, 2, 320, 180)
	d, _ := parseVP8(p)
	r.rewriteResent(&h, &d, p, 108)
	if h.SequenceNumber != 108 || r.lastSeq != 110 {
		t.Errorf("retransmission of 108: went out as %d, state moved to %d", h.SequenceNumber, r.lastSeq)
	}
	// More runs than remembered: the oldest is forgotten, and what was
	// sent before it is no longer found.
	for i := range uint16(maxPadRuns) {
		r.pad(now)
		send(107+i, false)
	}
	if _, _, ok := r.locate(103); ok {
		t.Error("103, sent before a forgotten run of padding, still found")
	}
	var fresh rewriter
	seq, _ := fresh.pad(now)
	h = rtp.Header{SequenceNumber: 7000, Timestamp: 5}
	p = vp8Payload(true, true, 9, 1, 320, 180)
	d, _ = parseVP8(p)
	fresh.switchTo(&h, &d, now)
	fresh.rewrite(&h, &d, p, now)
	if h.SequenceNumber != seq+1 {
		t.Errorf("the first packet after padding alone: %d, want %d", h.SequenceNumber, seq+1)
	}
}

// With no layer needed, the publisher is told an empty list, never null:
// the browser SDK reads it as a list.
func TestDynacast_noneNeededIsAnEmptyList(t *testing.T) {
	var told []byte
	now := time.Now().UnixNano()
	tr := &Track{simulcast: true, since: now - int64(time.Minute), source: protocol.SourceCamera,
		sess: &Session{signal: func(_ string, data any) { told, _ = json.Marshal(data) }}}
	for i, rid := range []string{"q", "h"} {
		l := &layer{idx: i, rid: rid}
		l.width.Store(320)
		l.neededAt.Store(now - int64(time.Minute))
		l.lastAt.Store(now)
		tr.layers = append(tr.layers, l)
	}
	tr.dynacast(now)
	if !strings.Contains(string(told), `"active":[]`) {
		t.Fatalf("told %s, want an empty active list", told)
	}
}
