package media

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
)

// link is a bottleneck between the SFU and a subscriber: a rate, a FIFO
// queue of a bounded delay (tail drop beyond it, as tbf does) and the
// subscriber's transport-wide feedback, built by pion's recorder (what a
// pion receiver sends) and sent every 50 ms through the wire format.
type link struct {
	t        *testing.T
	bps      float64
	maxQueue time.Duration
	e        *estimator
	hist     *sendHistory
	rec      *twcc.Recorder
	now      time.Time
	free     time.Time // when the link has sent everything queued
	lastFB   time.Time
	sent     int
	lost     int
}

func newLink(t *testing.T, bps float64, initial float64) *link {
	e := newEstimator(initial)
	h := &sendHistory{}
	e.useTWCC(h)
	start := time.Unix(1_000_000, 0)
	return &link{t: t, bps: bps, maxQueue: 200 * time.Millisecond, e: e, hist: h,
		rec: twcc.NewRecorder(1), now: start, free: start, lastFB: start}
}

// send sends one packet of size bytes at the link's now.
func (l *link) send(size int) {
	seq := l.hist.add(size, l.now.UnixNano())
	l.sent++
	start := l.free
	if start.Before(l.now) {
		start = l.now
	}
	if start.Sub(l.now) > l.maxQueue {
		l.lost++
		return // dropped: the queue is full
	}
	l.free = start.Add(time.Duration(float64(size*8) / l.bps * float64(time.Second)))
	l.rec.Record(1, seq, l.free.UnixMicro())
}

// run sends media at rate bps in 1000-byte packets for d, plus whatever
// extra sends at each 5 ms step, delivering feedback every 50 ms.
func (l *link) run(bps float64, d time.Duration, extra func()) {
	const step = 5 * time.Millisecond
	credit := 0.0
	for end := l.now.Add(d); l.now.Before(end); l.now = l.now.Add(step) {
		credit += bps * step.Seconds() / 8
		for credit >= 1000 {
			l.send(1000)
			credit -= 1000
		}
		if extra != nil {
			extra()
		}
		if l.now.Sub(l.lastFB) >= 50*time.Millisecond {
			l.feedback()
		}
	}
}

func (l *link) feedback() {
	l.lastFB = l.now
	for _, p := range l.rec.BuildFeedbackPacket() {
		raw, err := p.Marshal()
		if err != nil {
			l.t.Fatal(err)
		}
		pkts, err := rtcp.Unmarshal(raw)
		if err != nil {
			l.t.Fatal(err)
		}
		for _, p := range pkts {
			if fb, ok := p.(*rtcp.TransportLayerCC); ok {
				l.e.feedback(fb, l.now)
			}
		}
	}
}

// Sending more than the link carries builds a queue, well before it loses
// anything: the delay trend says overuse, and the estimate falls below the
// link's rate.
func TestEstimator_delayOveruse(t *testing.T) {
	l := newLink(t, 1_000_000, 3_000_000)
	l.maxQueue = 5 * time.Second // no loss: delay alone must tell
	l.run(1_500_000, 3*time.Second, nil)
	if got := l.e.estimate(); got > 0.95*l.bps || got < 0.5*l.bps {
		t.Fatalf("estimate %.0f after sending 1.5 Mbit/s into 1 Mbit/s, want 0.5–0.95 of it", got)
	}
	if l.lost != 0 || l.e.cutAt() == 0 {
		t.Fatalf("lost %d, cut at %d: want a cut from delay alone", l.lost, l.e.cutAt())
	}
}

// Through a link with room to spare the estimate climbs, but no further
// than 1.5 times what arrives plus headroomBps: more must be probed.
func TestEstimator_climbsToWhatArrives(t *testing.T) {
	l := newLink(t, 10_000_000, 300_000)
	l.run(500_000, 10*time.Second, nil)
	got, limit := l.e.estimate(), 1.5*500_000+headroomBps
	if got < 600_000 || got > limit*1.05 {
		t.Fatalf("estimate %.0f sending 0.5 Mbit/s over 10 Mbit/s, want 0.6 Mbit/s to %.0f", got, limit)
	}
	if l.e.cutAt() != 0 {
		t.Fatal("cut on an idle link")
	}
}

// A probe raises the estimate to the rate its packets arrived at: to its
// target on a link that carries it, to about the link's rate on one that
// does not; it never counts as the link's loss.
func TestEstimator_probe(t *testing.T) {
	for _, c := range []struct {
		name     string
		link     float64
		min, max float64
		ok       bool
	}{
		{"room to spare", 10_000_000, 1_800_000, 2_400_000, true},
		{"a 1 Mbit/s link", 1_000_000, 750_000, 1_100_000, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLink(t, c.link, 500_000)
			l.run(400_000, 3*time.Second, nil) // the estimate settles near 0.75 Mbit/s
			before := l.e.estimate()
			target, ok := l.e.startProbe(2_000_000, l.now)
			if !ok || target != 2_000_000 {
				t.Fatalf("probe not started (%v) or capped (%.0f)", ok, target)
			}
			if _, again := l.e.startProbe(2_000_000, l.now); again {
				t.Fatal("a second probe while one runs")
			}
			// The SFU's probe: padding of 267 bytes to reach the
			// target for probeDuration.
			extra := (target - 400_000) * probeDuration.Seconds() / 8
			sent, end := 0.0, l.now.Add(probeDuration)
			l.run(400_000, time.Second, func() {
				if l.now.Before(end) {
					for ; sent < extra*(1-end.Sub(l.now).Seconds()/probeDuration.Seconds()); sent += 267 {
						l.send(267)
					}
				} else if l.e.probe.active && !l.e.probe.ended {
					l.e.endProbe(true)
				}
			})
			got := l.e.estimate()
			if l.e.probe.active || got < c.min || got > c.max {
				t.Fatalf("after probing 2 Mbit/s from %.0f: %.0f (probe still active %v), want %.0f–%.0f", before, got, l.e.probe.active, c.min, c.max)
			}
			if c.ok != (l.e.probe.fails == 0) {
				t.Errorf("probe fails %d, want success %v", l.e.probe.fails, c.ok)
			}
			if l.e.cutAt() != 0 && c.ok {
				t.Error("the probe's queue cut the estimate")
			}
		})
	}
	// Far above the estimate, a probe goes probeGrowth times higher at
	// most; one no feedback told of is tried again soon, without backoff.
	e := newEstimator(100_000)
	e.useTWCC(&sendHistory{})
	now := time.Now()
	if target, _ := e.startProbe(5_000_000, now); target != max(100_000*probeGrowth, 100_000+probeMinStep) {
		t.Errorf("probe target %.0f from 100 kbit/s", target)
	}
	e.hist.add(100, now.UnixNano())
	e.endProbe(true)
	e.mu.Lock()
	e.probeDone(now)
	e.mu.Unlock()
	if e.probe.fails != 0 || e.probe.nextAt.Sub(now) != probeRetry {
		t.Errorf("a probe without feedback: fails %d, next in %v", e.probe.fails, e.probe.nextAt.Sub(now))
	}
}

// Feedback that is malformed, duplicated, from the future or absurd:
// nothing crashes, the estimate stays in bounds and does not run away
// above what was sent.
func TestEstimator_badFeedback(t *testing.T) {
	l := newLink(t, 2_000_000, 600_000)
	l.run(500_000, time.Second, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	next := uint16(l.hist.next.Load())
	bad := []*rtcp.TransportLayerCC{
		{}, // empty
		{BaseSequenceNumber: next - 10, PacketStatusCount: 10, // statuses with no deltas
			PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: tccSmallDelta, RunLength: 10}}},
		{BaseSequenceNumber: next - 40, PacketStatusCount: 65535, ReferenceTime: 1 << 23, // count beyond the chunks, a clock far ahead
			PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: tccLargeDelta, RunLength: 8191}},
			RecvDeltas:   []*rtcp.RecvDelta{{Type: tccLargeDelta, Delta: 8_191_750}, {Type: tccLargeDelta, Delta: -8_192_000}, nil}},
		{BaseSequenceNumber: next + 1000, PacketStatusCount: 14, // packets never sent
			PacketChunks: []rtcp.PacketStatusChunk{&rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeOneBit, SymbolList: make([]uint16, 14)}}},
		{BaseSequenceNumber: next - 20, PacketStatusCount: 7, // every arrival at once: an absurd rate
			PacketChunks: []rtcp.PacketStatusChunk{&rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeTwoBit, SymbolList: []uint16{1, 1, 1, 1, 1, 1, 3}}},
			RecvDeltas:   []*rtcp.RecvDelta{{Type: 1}, {Type: 1}, {Type: 1}, {Type: 1}, {Type: 1}, {Type: 1}}},
		{PacketChunks: []rtcp.PacketStatusChunk{nil}, PacketStatusCount: 3},
	}
	for i := range 200 {
		fb := bad[i%len(bad)]
		if i >= len(bad) { // and random ones
			fb = &rtcp.TransportLayerCC{BaseSequenceNumber: next - uint16(rng.IntN(2000)), PacketStatusCount: uint16(rng.IntN(300)),
				ReferenceTime: rng.Uint32() & 0xffffff,
				PacketChunks:  []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: uint16(rng.IntN(4)), RunLength: uint16(rng.IntN(300))}}}
			for range rng.IntN(300) {
				fb.RecvDeltas = append(fb.RecvDeltas, &rtcp.RecvDelta{Type: tccLargeDelta, Delta: rng.Int64N(16_000_000) - 8_000_000})
			}
		}
		l.e.feedback(fb, l.now)
		l.run(500_000, 50*time.Millisecond, nil)
	}
	got := l.e.estimate()
	if math.IsNaN(got) || got < minEstimate || got > 1.5*l.e.sentBps(l.now)*1.2+headroomBps {
		t.Fatalf("estimate %.0f after bad feedback, sending 0.5 Mbit/s", got)
	}
}

// Feedback read packet by packet: run-length and status vector chunks,
// one- and two-bit symbols, small and large deltas; whole or not.
func TestWalkFeedback(t *testing.T) {
	fb := &rtcp.TransportLayerCC{BaseSequenceNumber: 65534, PacketStatusCount: 5, ReferenceTime: 2,
		PacketChunks: []rtcp.PacketStatusChunk{
			&rtcp.RunLengthChunk{PacketStatusSymbol: tccSmallDelta, RunLength: 2},
			&rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeOneBit, SymbolList: []uint16{0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		},
		RecvDeltas: []*rtcp.RecvDelta{{Type: tccSmallDelta, Delta: 250}, {Type: tccSmallDelta, Delta: 500}, {Type: tccSmallDelta, Delta: 1000}},
	}
	type pkt struct {
		seq     uint16
		arr     int64
		arrived bool
	}
	var got []pkt
	whole := walkFeedback(fb, func(seq uint16, arr int64, arrived bool) { got = append(got, pkt{seq, arr, arrived}) })
	want := []pkt{{65534, 128_250, true}, {65535, 128_750, true}, {0, 0, false}, {1, 129_750, true}, {2, 0, false}}
	if !whole || len(got) != len(want) {
		t.Fatalf("whole %v, packets %v", whole, got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("packet %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	fb.RecvDeltas = fb.RecvDeltas[:2] // a received packet without its delta
	got = got[:0]
	if walkFeedback(fb, func(seq uint16, arr int64, arrived bool) { got = append(got, pkt{seq, arr, arrived}) }) || len(got) != 3 {
		t.Errorf("short of deltas: whole, or read past them: %v", got)
	}
}

// Whatever a subscriber sends as transport-wide feedback, the estimator
// neither crashes nor leaves its bounds.
func FuzzFeedback(f *testing.F) {
	rec := twcc.NewRecorder(1)
	for i := range uint16(40) {
		if i%7 != 3 {
			rec.Record(1, 100+i, int64(i)*1000)
		}
	}
	for _, p := range rec.BuildFeedbackPacket() {
		raw, _ := p.Marshal()
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		pkts, err := rtcp.Unmarshal(raw)
		if err != nil {
			return
		}
		e := newEstimator(initialEstimate)
		h := &sendHistory{}
		e.useTWCC(h)
		now := time.Unix(1000, 0)
		for i := range 200 {
			h.add(1000, now.Add(time.Duration(i)*time.Millisecond).UnixNano())
		}
		for _, p := range pkts {
			if fb, ok := p.(*rtcp.TransportLayerCC); ok {
				e.feedback(fb, now.Add(time.Second))
			}
		}
		if got := e.estimate(); math.IsNaN(got) || got < minEstimate || got > maxEstimate {
			t.Fatalf("estimate %v", got)
		}
	})
}
