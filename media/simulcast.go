package media

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
)

// maxLayers is the most simulcast layers a track may have.
const maxLayers = 3

// layerTimeout is how long a layer may send nothing before its subscribers
// move to another.
const layerTimeout = time.Second

// chooseInterval is how often a simulcast track chooses its subscribers'
// layers.
const chooseInterval = 200 * time.Millisecond

// layer is one simulcast encoding of a track, as the publisher sends it
// (its rid), with a packet cache of its own.
type layer struct {
	idx    int
	rid    string
	remote *webrtc.TrackRemote
	cache  *packetCache

	width, height atomic.Int32 // from its last keyframe; 0 until one came
	lastAt        atomic.Int64 // unix ns of its last packet

	// Dynacast: the publisher was told to stop sending this layer
	// (nobody received it for dynacastDelay); it stays a candidate.
	bytes     atomic.Uint64 // received, for its bit rate
	bps       atomic.Uint64 // its bit rate, smoothed; updated by measure
	rateAt    int64         // when measure last looked; guarded by Track.layersMu
	rateBytes uint64        // bytes then; guarded by Track.layersMu

	paused     atomic.Bool
	pausedLive atomic.Bool  // it was sending when paused: it can come back
	neededAt   atomic.Int64 // unix ns when someone last received or wanted it

	kf keyframeThrottle
}

// simState is a subscriber's place in a simulcast track: the layer it
// receives, the one it should, and the rewriting that makes one stream of
// them.
type simState struct {
	cur    atomic.Int32 // the layer forwarded; -1: none (paused, or waiting for a first keyframe)
	target atomic.Int32 // the layer wanted; -1: none (paused)

	want     atomic.Uint64 // width<<32 | height the subscriber displays the track at; all ones: not said
	switches atomic.Uint64

	mu sync.Mutex // the rewriter: one layer's goroutine at a time, and retransmissions
	rw rewriter

	// Upswitch trials, for choose (under mu): the layer last moved up to
	// and when, and the layers barred after failing.
	upLayer int32
	upAt    int64
	upFrom  float64 // the bit rate of the layer moved up from
	fails   [maxLayers]uint8
	barred  [maxLayers]int64 // unix ns until which the layer is not tried
}

// wantUnset is simState.want before the subscriber said a size.
const wantUnset = ^uint64(0)

func newSimState() *simState {
	s := &simState{upLayer: -1}
	s.cur.Store(-1)
	s.target.Store(-1)
	s.want.Store(wantUnset)
	return s
}

// rewriter makes the layers a subscriber receives in turn one continuous
// stream: sequence numbers, timestamps and VP8 picture ids go on from
// where the last layer left them; probes' padding packets take sequence
// numbers of their own in it. It is pure state; simState.mu guards it.
type rewriter struct {
	started  bool
	seqOff   uint16
	tsOff    uint32
	picOff   uint16
	tl0Off   uint8
	segStart uint16 // the first sequence number sent from the current layer

	lastSeq uint16
	lastTs  uint32
	lastPic uint16
	lastTL0 uint8
	lastAt  int64 // unix ns of the last packet sent

	// Padding sent since the current layer started, oldest first: runs
	// of output sequence numbers the layer's own numbers skip.
	pads  [maxPadRuns]padRun
	npads int
}

// padRun is n padding packets with output sequence numbers from first on.
type padRun struct{ first, n uint16 }

// maxPadRuns is how many runs of padding a rewriter remembers: packets
// sent before the oldest it forgot are no longer sent again on a NACK.
const maxPadRuns = 8

// switchTo aligns the output on h, the first packet of a keyframe of the
// layer switched to, at time now (unix ns).
func (r *rewriter) switchTo(h *rtp.Header, d *vp8Desc, now int64) {
	if !r.started {
		r.started = true
		r.seqOff, r.tsOff, r.picOff, r.tl0Off = 0, 0, 0, 0
	} else {
		r.seqOff = r.lastSeq + 1 - h.SequenceNumber
		gap := uint32(1)
		if el := now - r.lastAt; el > 0 {
			gap = max(1, uint32(el*90/int64(time.Millisecond))) // 90 kHz
		}
		r.tsOff = r.lastTs + gap - h.Timestamp
		if d.picLen > 0 {
			r.picOff = r.lastPic + 1 - d.picID
		}
		if d.tl0Off > 0 {
			r.tl0Off = r.lastTL0 + 1 - d.tl0
		}
	}
	r.segStart = h.SequenceNumber + r.seqOff
	r.lastSeq = r.segStart - 1
	r.lastAt = now
	r.npads = 0
}

// rewrite rewrites h and payload (described by d) in place for the
// output. Only packets newer than the last one move the state on.
func (r *rewriter) rewrite(h *rtp.Header, d *vp8Desc, payload []byte, now int64) {
	h.SequenceNumber += r.seqOff
	newer := int16(h.SequenceNumber-r.lastSeq) > 0
	r.rewriteIDs(h, d, payload, newer)
	if newer {
		r.lastSeq, r.lastTs, r.lastAt = h.SequenceNumber, h.Timestamp, now
	}
}

// rewriteResent rewrites a packet sent before as output sequence number
// seq (see locate), without moving the state on.
func (r *rewriter) rewriteResent(h *rtp.Header, d *vp8Desc, payload []byte, seq uint16) {
	h.SequenceNumber = seq
	r.rewriteIDs(h, d, payload, false)
}

func (r *rewriter) rewriteIDs(h *rtp.Header, d *vp8Desc, payload []byte, newer bool) {
	h.Timestamp += r.tsOff
	if d.picLen > 0 {
		pic := (d.picID + r.picOff) & 0x7fff
		d.setPictureID(payload, pic)
		if newer {
			r.lastPic = pic
		}
	}
	if d.tl0Off > 0 {
		tl0 := d.tl0 + r.tl0Off
		d.setTL0(payload, tl0)
		if newer {
			r.lastTL0 = tl0
		}
	}
}

// pad takes the next output sequence number for a padding packet at now
// (unix ns), with the timestamp of the last packet sent; the layer's
// packets go on after it.
func (r *rewriter) pad(now int64) (seq uint16, ts uint32) {
	if !r.started {
		// Nothing sent yet: the output starts anywhere, as a
		// publisher's does.
		r.started = true
		r.lastSeq, r.lastTs = uint16(rand.Uint32()), rand.Uint32()
		r.segStart, r.lastAt = r.lastSeq+1, now
	}
	seq = r.lastSeq + 1
	r.lastSeq = seq
	r.seqOff++
	if n := r.npads; n > 0 && r.pads[n-1].first+r.pads[n-1].n == seq {
		r.pads[n-1].n++
	} else {
		if r.npads == maxPadRuns {
			r.segStart = r.pads[0].first + r.pads[0].n
			copy(r.pads[:], r.pads[1:])
			r.npads--
		}
		r.pads[r.npads] = padRun{first: seq, n: 1}
		r.npads++
	}
	return seq, r.lastTs
}

// locate tells what output sequence number seq was: a packet of the
// current layer (its own sequence number orig), padding, or neither (ok
// false: never sent, or from another layer).
func (r *rewriter) locate(seq uint16) (orig uint16, padding, ok bool) {
	if !r.started || int16(seq-r.segStart) < 0 || int16(r.lastSeq-seq) < 0 {
		return 0, false, false
	}
	off := r.seqOff
	for i := r.npads - 1; i >= 0; i-- {
		p := r.pads[i]
		if seq-p.first < p.n {
			return 0, true, true
		}
		if int16(seq-p.first) < 0 {
			off -= p.n // sent before this run
		}
	}
	return seq - off, false, true
}

// addLayer adds a simulcast layer the publisher sends, with its rid; it
// returns nil when the track has maxLayers already or has this rid.
func (t *Track) addLayer(remote *webrtc.TrackRemote) *layer {
	t.layersMu.Lock()
	defer t.layersMu.Unlock()
	if len(t.layers) >= maxLayers {
		return nil
	}
	for _, l := range t.layers {
		if l.rid == remote.RID() {
			return nil
		}
	}
	l := &layer{idx: len(t.layers), rid: remote.RID(), remote: remote, cache: newPacketCache(1024)}
	t.layers = append(t.layers, l)
	return l
}

// layer returns layer i, or nil.
func (t *Track) layer(i int32) *layer {
	if i < 0 {
		return nil
	}
	t.layersMu.Lock()
	defer t.layersMu.Unlock()
	if int(i) >= len(t.layers) {
		return nil
	}
	return t.layers[i]
}

// forwardLayer is a layer's goroutine: it reads the layer's packets and
// forwards each to the subscribers on the layer, or switching to it on a
// keyframe. It returns when the publisher's connection ends, and
// unpublishes the track.
func (t *Track) forwardLayer(r *Room, l *layer) {
	defer r.unpublish(t)
	buf := make([]byte, maxPacket)
	var o outBuf
	for {
		n, _, err := l.remote.Read(buf)
		if err != nil {
			return
		}
		t.handleLayer(l, buf[:n], &o)
	}
}

// handleLayer forwards packet p of layer l; o is scratch space.
func (t *Track) handleLayer(l *layer, p []byte, o *outBuf) {
	if t.stopped.Load() {
		return
	}
	h := &o.h
	hl, err := h.Unmarshal(p)
	if err != nil {
		return
	}
	now := time.Now().UnixNano()
	l.lastAt.Store(now)
	l.bytes.Add(uint64(len(p)))
	t.packetsIn.Add(1)
	t.bytesIn.Add(uint64(len(p)))
	l.cache.put(h.SequenceNumber, p)
	if t.exportMask.Load()&(1<<l.idx) != 0 {
		t.exportPacket(l.idx, p) // before the rewriting below changes the payload
	}
	payload := p[hl:]
	d, ok := parseVP8(payload)
	if !ok {
		return
	}
	if d.keyframe && d.width > 0 {
		l.width.Store(int32(d.width))
		l.height.Store(int32(d.height))
	}
	seq, ts := h.SequenceNumber, h.Timestamp
	idx := int32(l.idx)
	downs := *t.downs.Load()
	if t.batch != nil && len(downs) > 1 {
		t.batch.begin()
		defer t.batch.end()
	}
	sent := 0
	for _, dt := range downs {
		s := dt.sim
		cur := s.cur.Load()
		if cur != idx && !(d.keyframe && s.target.Load() == idx) {
			continue
		}
		s.mu.Lock()
		// h holds the last subscriber's rewritten numbers: back to the
		// layer's own before this one's switch and rewrite.
		h.SequenceNumber, h.Timestamp = seq, ts
		if d.keyframe && s.target.Load() == idx && s.cur.Load() != idx {
			s.rw.switchTo(h, &d, now)
			s.cur.Store(idx)
			s.switches.Add(1)
			t.layerSwitches.Add(1)
		}
		if s.cur.Load() == idx {
			s.rw.rewrite(h, &d, payload, now)
			if dt.write(h, payload, o, now) {
				sent++
			}
		}
		s.mu.Unlock()
	}
	if sent > 0 {
		t.packetsOut.Add(uint64(sent))
		t.bytesOut.Add(uint64(sent * (h.MarshalSize() + len(payload))))
	}
}

// resendLayer sends output sequence number seq to d again from its
// current layer's cache, if it was sent from that layer (not padding). It
// returns the packet's size, 0 if it was not sent.
func (d *downTrack) resendLayer(seq uint16, o *outBuf) int {
	s := d.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	orig, padding, ok := s.rw.locate(seq)
	now := time.Now().UnixNano()
	switch {
	case !ok:
		return 0
	case padding:
		return 0 // it carried nothing: sending it again would only add to the queue that lost it
	}
	l := d.t.layer(s.cur.Load())
	if l == nil {
		return 0
	}
	buf := o.cached()
	n := l.cache.get(orig, buf)
	if n == 0 {
		return 0
	}
	h := &o.h
	hl, err := h.Unmarshal(buf[:n])
	if err != nil {
		return 0
	}
	desc, ok := parseVP8(buf[hl:n])
	if !ok {
		return 0
	}
	s.rw.rewriteResent(h, &desc, buf[hl:n], seq)
	if !d.write(h, buf[hl:n], o, now) {
		return 0
	}
	return n
}

// padding is a padding packet's payload: RTP padding only, its length in
// its last byte. Read only.
var padding = func() []byte {
	b := make([]byte, 255)
	b[len(b)-1] = byte(len(b))
	return b
}()

// writePadding sends d a padding packet with output sequence number seq
// and timestamp ts; it returns its size, 0 if it was not sent.
func (d *downTrack) writePadding(seq uint16, ts uint32, o *outBuf, now int64) int {
	o.h = rtp.Header{Version: 2, Padding: true, SequenceNumber: seq, Timestamp: ts, Extensions: o.h.Extensions[:0]}
	if !d.write(&o.h, padding, o, now) {
		return 0
	}
	return rtpHeaderSize + len(padding)
}

// requestLayerKeyframe asks the publisher for a keyframe of layer l, at
// most once per keyframeInterval (keyframeThrottle).
func (t *Track) requestLayerKeyframe(l *layer) {
	if l == nil || t.stopped.Load() {
		return
	}
	if t.origin != "" {
		l.kf.request(func() { t.relay.pli(t, l.idx) })
		return
	}
	l.kf.request(func() { t.sendPLI(l.remote.SSRC()) })
}

// layerView is a layer as the choice sees it.
type layerView struct {
	idx           int32
	width, height int32
	bps           float64 // its bit rate; 0 when not known yet
}

// liveLayers returns the layers that sent a keyframe (their size is
// known) and a packet within layerTimeout, or that were sending when the
// publisher was told to pause them (they come back when chosen), smallest
// first.
func (t *Track) liveLayers(now int64) []layerView {
	t.layersMu.Lock()
	defer t.layersMu.Unlock()
	out := make([]layerView, 0, len(t.layers))
	for _, l := range t.layers {
		w, h := l.width.Load(), l.height.Load()
		if w == 0 || !(l.paused.Load() && l.pausedLive.Load()) && now-l.lastAt.Load() > int64(layerTimeout) {
			continue
		}
		out = append(out, layerView{idx: int32(l.idx), width: w, height: h, bps: float64(l.bps.Load())})
	}
	slices.SortFunc(out, func(a, b layerView) int { return int(a.width*a.height - b.width*b.height) })
	return out
}

// chooseLayer is the layer a subscriber should receive among live
// (smallest first): the smallest at least as large as the size it
// displays the track at (want: width<<32|height; wantUnset: the largest),
// the largest if none is — or, when that does not fit its budget (bits a
// second, 0 for no limit), the largest below it that does, with
// upswitchMargin to spare to move up from the layer it receives (cur);
// -1 (no video) when it displays the track at 0x0, no layer is live, or
// not even the smallest fits and the link showed loss (lossy): until then
// the smallest is sent whatever the estimate, which may just not have
// climbed yet.
func chooseLayer(live []layerView, want uint64, budget float64, cur int32, lossy bool) int32 {
	if len(live) == 0 {
		return -1
	}
	k := len(live) - 1
	if want != wantUnset {
		w, h := int32(want>>32), int32(want&0xffffffff)
		if w == 0 && h == 0 {
			return -1
		}
		for i, l := range live {
			if l.width >= w && l.height >= h {
				k = i
				break
			}
		}
	}
	if budget <= 0 {
		return live[k].idx
	}
	curPos := -1
	for i, l := range live {
		if l.idx == cur {
			curPos = i
		}
	}
	for ; k >= 0; k-- {
		need := live[k].bps
		if k > curPos {
			need *= upswitchMargin
		}
		if need <= budget {
			return live[k].idx
		}
	}
	if !lossy {
		return live[0].idx
	}
	return -1
}

// nextLayer returns the layer of live (smallest first) after layer idx, or
// the smallest if idx is none (-1); nil if there is none.
func nextLayer(live []layerView, idx int32) *layerView {
	pos := -1
	for i, l := range live {
		if l.idx == idx {
			pos = i
		}
	}
	if pos+1 >= len(live) {
		return nil
	}
	return &live[pos+1]
}

// trial returns the layers the subscriber may get now: live but for those
// barred after a failed upswitch (the one it receives stays). A cut of its
// estimate within upswitchTrial of moving up fails the layer moved to.
func (s *simState) trial(live []layerView, sess *Session, now int64) []layerView {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.upLayer >= 0 && sess != nil && sess.bwe != nil {
		cut := sess.bwe.cutAt()
		switch {
		case cut > s.upAt && cut-s.upAt < int64(upswitchTrial):
			l := s.upLayer
			s.fails[l] = min(s.fails[l]+1, 8)
			s.barred[l] = now + int64(upswitchBackoff)<<(s.fails[l]-1)
			s.upLayer = -1
			// The layer it came from went through: the trial's loss
			// does not take the estimate below it.
			if s.upFrom > 0 {
				sess.bwe.floor(s.upFrom*upswitchMargin + audioReserve)
			}
		case now-s.upAt >= int64(upswitchTrial):
			s.fails[s.upLayer] = 0 // it fitted
			s.upLayer = -1
		}
	}
	cur := s.cur.Load()
	out := live[:0:0]
	for _, l := range live {
		if l.idx == cur || s.barred[l.idx] <= now {
			out = append(out, l)
		}
	}
	return out
}

// moved records a move up to target (a larger layer than the one received),
// whose trial starts now.
func (s *simState) moved(live []layerView, target int32, now int64) {
	cur := s.cur.Load()
	if target < 0 || target == cur {
		return
	}
	size := func(i int32) int32 {
		for _, l := range live {
			if l.idx == i {
				return l.width * l.height
			}
		}
		return 0
	}
	if size(target) <= size(cur) {
		return
	}
	var from float64
	for _, l := range live {
		if l.idx == cur {
			from = l.bps
		}
	}
	s.mu.Lock()
	if s.upLayer != target {
		s.upLayer, s.upAt, s.upFrom = target, now, from
	}
	s.mu.Unlock()
}

// measure updates the layers' bit rates, at most every half second; a
// layer that sent nothing (paused) keeps its last rate.
func (t *Track) measure(now int64) {
	t.layersMu.Lock()
	defer t.layersMu.Unlock()
	for _, l := range t.layers {
		el := now - l.rateAt
		if el < int64(500*time.Millisecond) {
			continue
		}
		b := l.bytes.Load()
		if l.rateAt != 0 && b > l.rateBytes {
			rate := float64(b-l.rateBytes) * 8 / (float64(el) / 1e9)
			if old := float64(l.bps.Load()); old > 0 {
				rate = 0.7*old + 0.3*rate
			}
			l.bps.Store(uint64(rate))
		}
		l.rateAt, l.rateBytes = now, b
	}
}

// choose sets every subscriber's target layer and asks for the keyframes
// the switches wait for; it stops, at once, the video of a subscriber
// that should have none.
func (t *Track) choose(now int64) {
	live := t.liveLayers(now)
	for _, d := range *t.downs.Load() {
		s := d.sim
		trial := s.trial(live, d.sess, now)
		budget := d.sess.budget(t)
		target := chooseLayer(trial, s.want.Load(), budget, s.cur.Load(), d.sess.lossy())
		if budget > 0 && chooseLayer(trial, s.want.Load(), 0, s.cur.Load(), false) != target {
			// The subscriber would take more than its estimate allows:
			// probe for the next layer up.
			if next := nextLayer(trial, target); next != nil && next.bps > 0 {
				d.sess.probeFor(t, d, next.bps*upswitchMargin, time.Unix(0, now))
			}
		}
		s.moved(live, target, now)
		s.target.Store(target)
		cur := s.cur.Load()
		for _, i := range []int32{cur, target} {
			if l := t.layer(i); l != nil {
				l.neededAt.Store(now)
			}
		}
		switch {
		case target < 0 && cur >= 0:
			s.cur.Store(-1) // paused: nothing more is sent
		case target >= 0 && target != cur:
			t.requestLayerKeyframe(t.layer(target))
		}
	}
	t.dynacast(now)
	// A layer sending without a keyframe seen has no known size, and so
	// is no candidate: ask for one.
	t.layersMu.Lock()
	var unknown []*layer
	for _, l := range t.layers {
		if l.width.Load() == 0 && now-l.lastAt.Load() <= int64(layerTimeout) {
			unknown = append(unknown, l)
		}
	}
	t.layersMu.Unlock()
	for _, l := range unknown {
		t.requestLayerKeyframe(l)
	}
}

// dynacastDelay is how long nobody must receive a layer before the
// publisher is told to stop sending it: a tile resized back and forth
// does not make its encoder stop and start.
const dynacastDelay = 2 * time.Second

// dynacast tells the publisher which layers are needed when that changes:
// a layer comes back at once when someone wants it, and goes after
// dynacastDelay without anyone.
func (t *Track) dynacast(now int64) {
	t.layersMu.Lock()
	changed := false
	active := []string{} // never null on the wire: none is an empty list
	for _, l := range t.layers {
		needed := now-l.neededAt.Load() < int64(dynacastDelay)
		if l.neededAt.Load() == 0 { // never chosen yet: the first subscriber comes
			needed = now-t.since < int64(dynacastDelay)
		}
		// A layer whose size is not known yet (no keyframe seen) is not
		// paused: paused, it could never become a candidate.
		needed = needed || l.width.Load() == 0
		if needed == l.paused.Load() {
			if needed {
				l.lastAt.Store(now) // live while the publisher resumes it
			} else {
				// A layer that had stopped by itself (the publisher's
				// encoder dropped it) is no candidate while paused.
				l.pausedLive.Store(now-l.lastAt.Load() <= int64(layerTimeout))
			}
			l.paused.Store(!needed)
			changed = true
		}
		if needed {
			active = append(active, l.rid)
		}
	}
	t.layersMu.Unlock()
	if changed && t.sess != nil { // a remote track's origin hears of it as wants (relay.go)
		t.sess.signal(protocol.EventMediaLayers, protocol.MediaLayers{Source: t.source, Active: active})
	}
}

// chooser runs choose every chooseInterval until the track stops.
func (t *Track) chooser() {
	tick := time.NewTicker(chooseInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
			now := time.Now().UnixNano()
			t.measure(now)
			t.choose(now)
		}
	}
}
