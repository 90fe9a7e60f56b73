package media

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/twcc"
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
		if !isTWCC(raw) {
			l.t.Fatalf("the recorder's feedback is not told apart: % x", raw[:4])
		}
		l.e.feedback(raw, l.now)
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
			// One that reached its target lets the next step up start
			// soon (probeAgain); one that fell short backs off.
			if soon := !l.e.probe.nextAt.After(l.now); soon != c.ok {
				t.Errorf("next probe in %v after the run, want one soon: %v", l.e.probe.nextAt.Sub(l.now), c.ok)
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

// tcc builds transport-wide feedback in the wire format: chunks as they
// are on the wire, deltas as bytes.
func tcc(base, count uint16, ref int32, chunks []uint16, deltas []byte) []byte {
	b := make([]byte, 20, 20+2*len(chunks)+len(deltas)+3)
	b[0], b[1] = 0x80|15, 205
	binary.BigEndian.PutUint32(b[4:], 1)
	binary.BigEndian.PutUint32(b[8:], 2)
	binary.BigEndian.PutUint16(b[12:], base)
	binary.BigEndian.PutUint16(b[14:], count)
	binary.BigEndian.PutUint32(b[16:], uint32(ref)<<8)
	for _, c := range chunks {
		b = binary.BigEndian.AppendUint16(b, c)
	}
	b = append(b, deltas...)
	if pad := (4 - len(b)%4) % 4; pad > 0 {
		b[0] |= 0x20 // padded
		b = append(b, make([]byte, pad)...)
		b[len(b)-1] = byte(pad)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)/4-1))
	return b
}

// Feedback that is malformed, duplicated, from the future or absurd:
// nothing crashes, the estimate stays in bounds and does not run away
// above what was sent.
func TestEstimator_badFeedback(t *testing.T) {
	l := newLink(t, 2_000_000, 600_000)
	l.run(500_000, time.Second, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	next := uint16(l.hist.next.Load())
	const smallRun, largeRun = 1 << 13, 2 << 13 // run-length chunks of received packets
	valid := tcc(next-10, 3, 5, []uint16{smallRun | 3}, []byte{4, 4, 4})
	bad := [][]byte{
		{},         // nothing
		valid[:19], // cut in the header
		valid[:22], // statuses without deltas
		tcc(next-10, 10, 5, // statuses without deltas, length and all
			[]uint16{smallRun | 10}, nil),
		tcc(next-40, 65535, 1<<23-1, // a count beyond the chunks, a clock far ahead, deltas of ±8 s
			[]uint16{largeRun | 8191}, []byte{0x7f, 0xff, 0x80, 0x00}),
		tcc(next+1000, 14, 5, []uint16{0x8000 | 0x3fff}, make([]byte, 14)), // packets never sent
		tcc(next-20, 7, 5, []uint16{0xc000 | 0x1555}, make([]byte, 7)),     // every arrival at once: an absurd rate
		tcc(next-20, 100, 5, []uint16{0}, nil),                             // an empty run: the count never covered
	}
	for i := range 300 {
		var fb []byte
		if i < len(bad) {
			fb = bad[i]
		} else { // and random ones, valid in form
			chunks := []uint16{uint16(rng.IntN(4))<<13 | uint16(rng.IntN(300))}
			deltas := make([]byte, rng.IntN(600))
			for k := range deltas {
				deltas[k] = byte(rng.Uint32())
			}
			fb = tcc(next-uint16(rng.IntN(2000)), uint16(rng.IntN(300)), rng.Int32N(1<<23), chunks, deltas)
		}
		l.e.feedback(fb, l.now)
		l.run(500_000, 20*time.Millisecond, nil)
	}
	got := l.e.estimate()
	if math.IsNaN(got) || got < minEstimate || got > 1.5*l.e.sentBps(l.now)*1.2+headroomBps {
		t.Fatalf("estimate %.0f after bad feedback, sending 0.5 Mbit/s", got)
	}
}

// Feedback read packet by packet: run-length and status vector chunks,
// one- and two-bit symbols, small and large deltas; whole or not.
func TestWalkFeedback(t *testing.T) {
	raw := tcc(65534, 5, 2, []uint16{
		1<<13 | 2,       // a run of 2 received, small deltas
		0x8000 | 0x1000, // 1-bit symbols: lost, received, lost (...)
	}, []byte{1, 2, 4}) // 250, 500 and 1,000 µs
	type pkt struct {
		seq     uint16
		arr     int64
		arrived bool
	}
	var got []pkt
	whole := walkFeedback(raw, func(seq uint16, arr int64, arrived bool) { got = append(got, pkt{seq, arr, arrived}) })
	want := []pkt{{65534, 128_250, true}, {65535, 128_750, true}, {0, 0, false}, {1, 129_750, true}, {2, 0, false}}
	if !whole || len(got) != len(want) {
		t.Fatalf("whole %v, packets %v", whole, got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("packet %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// 2-bit symbols, a large (negative) delta.
	raw = tcc(10, 2, 0, []uint16{0xc000 | 2<<12 | 1<<10}, []byte{0xff, 0xfc, 8})
	got = got[:0]
	if !walkFeedback(raw, func(seq uint16, arr int64, arrived bool) { got = append(got, pkt{seq, arr, arrived}) }) ||
		len(got) != 2 || got[0] != (pkt{10, -1000, true}) || got[1] != (pkt{11, 1000, true}) {
		t.Errorf("2-bit symbols: %v", got)
	}
	// Feedback cut short: read up to where it ends, not whole.
	cut := tcc(65534, 5, 2, []uint16{1<<13 | 2, 0x8000 | 0x1000}, []byte{1, 2})
	got = got[:0]
	if walkFeedback(cut, func(seq uint16, arr int64, arrived bool) { got = append(got, pkt{seq, arr, arrived}) }) || len(got) != 3 {
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
	f.Add(tcc(100, 20, 5, []uint16{1<<13 | 20}, make([]byte, 20)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e := newEstimator(initialEstimate)
		h := &sendHistory{}
		e.useTWCC(h)
		now := time.Unix(1000, 0)
		for i := range 200 {
			h.add(1000, now.Add(time.Duration(i)*time.Millisecond).UnixNano())
		}
		e.feedback(raw, now.Add(time.Second))
		e.feedback(raw, now.Add(2*time.Second))
		if got := e.estimate(); math.IsNaN(got) || got < minEstimate || got > maxEstimate {
			t.Fatalf("estimate %v", got)
		}
	})
}
