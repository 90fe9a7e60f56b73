package media

import (
	"math"
	"sync"
	"time"
)

// A subscriber connection's bandwidth estimate. With transport-wide
// congestion control feedback (twcc.go), which every browser and the Go
// SDK send, it is built as GCC builds its own (draft-ietf-rmcat-gcc), in
// our code:
//
//   - delay: packets sent within 5 ms form a group; the change of the
//     one-way delay from group to group, accumulated and smoothed, is
//     fitted by a line over the last 20 groups; a slope above an adaptive
//     threshold is overuse, a queue building up on the path. Overuse cuts
//     the estimate to 85 % of what the subscriber received in the last
//     half second (the acknowledged rate) — the link's rate, when it is
//     the link that queued;
//   - loss: over 10 % lost cuts it by half the loss; under 2 % lets it
//     climb, by 35 % at most every half second, and not for holdAfterCut
//     after a cut; in between it holds;
//   - it climbs to at most 1.5 times the acknowledged rate plus
//     headroomBps: what was not carried is not believed. To earn a larger
//     layer, the SFU probes first (probe.go): it sends padding for
//     probeDuration to reach the rate the layer needs; the rate the
//     subscriber received it at, if the probe went through, raises the
//     estimate at once.
//
// Without that feedback (a client that did not negotiate it) the
// estimate is the loss-based part alone, from receiver reports.
//
// Why not pion's GCC interceptor: its pacer and per-packet bookkeeping run
// on every forwarded packet with a goroutine per connection, and it does
// not probe. Here the forwarding path pays an atomic add and a store per
// packet (sendHistory), and the estimate is computed where the feedback is
// read.
const (
	initialEstimate = 600_000    // bits/s: enough for a small and a middle layer
	minEstimate     = 30_000     // bits/s
	maxEstimate     = 20_000_000 // bits/s
	increaseEvery   = 500 * time.Millisecond
	increaseBy      = 1.35
	holdAfterCut    = 2 * time.Second
	// headroomBps is how far above 1.5 times the acknowledged rate the
	// estimate may climb without a probe.
	headroomBps = 150_000
	// upswitchMargin is how much more than a layer's bit rate the estimate
	// must be to move up to it (staying needs only the rate itself): a
	// subscriber does not bounce between two layers.
	upswitchMargin = 1.25
	// audioReserve is kept out of the estimate for audio, which is never
	// paused.
	audioReserve = 64_000
	// upswitchTrial is how long after moving a subscriber up a cut of its
	// estimate means the layer did not fit; the layer is then barred from
	// it for upswitchBackoff, doubled at each failure (up to 8 times):
	// a link that cannot carry a layer is not made to lose packets by
	// trying it again and again.
	upswitchTrial   = 3 * time.Second
	upswitchBackoff = 10 * time.Second
	// twccStale is how long without transport-wide feedback before
	// receiver reports drive the estimate again.
	twccStale = 2 * time.Second
)

// Probing.
const (
	probeDuration = 100 * time.Millisecond
	probeEvery    = 2 * time.Second // times 2^n: the wait after the nth probe in a row that fell short (up to 32 s)
	// probeAgain is the wait after a probe that reached its target: the
	// link carried it, so the next step up (probeGrowth further, if a
	// larger layer still waits for it) follows at once rather than
	// probeEvery later — a subscriber told to show a track large climbs
	// from a small layer's estimate to a large one's in a few steps.
	probeAgain      = 250 * time.Millisecond
	probeMaxWait    = 2 * time.Second // for the feedback of a probe
	probeMaxPackets = 400
	probeGrowth     = 3.0
	probeRetry      = 500 * time.Millisecond // after a probe no feedback told of
	probeMinStep    = 200_000                // bits/s
)

// estimator is one subscriber connection's estimate.
type estimator struct {
	mu         sync.Mutex
	bps        float64
	lastChange time.Time
	lastCut    time.Time

	// Transport-wide feedback: hist is set when the connection
	// negotiates it; the rest is under mu.
	hist               *sendHistory
	twccAt             time.Time // the last feedback
	started            bool
	highest            uint16 // the highest sequence number reported
	lossRecv, lossLost int
	lossAt             time.Time
	lossLow            bool   // the last loss window lost under 2 %
	lossFrom           uint16 // loss counts from this sequence number on (see probeDone)
	acks               [512]struct {
		arr  int64 // µs, receiver's clock
		size int
	}
	ackN  int
	delay delayDetector
	probe probeState

	counts *estCounters // the room's, for metrics; nil in tests
}

// probeState is a probe: the packets sent from first to last (transport
// sequence numbers) and what the feedback said of them.
type probeState struct {
	active, ended bool
	first, last   uint16
	target        float64
	at            time.Time
	nextAt        time.Time
	fails         int

	recvd, lost         int
	bytes               int
	firstArr, lastArr   int64 // µs
	firstSent, lastSent int64 // ns
}

func newEstimator(initial float64) *estimator {
	return &estimator{bps: initial, lossLow: true}
}

// useTWCC makes the estimator read transport-wide feedback about the
// packets h numbers.
func (e *estimator) useTWCC(h *sendHistory) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.hist == nil {
		e.hist = h
	}
}

// report takes one reception report's fraction lost (of 256) at now; it is
// ignored while transport-wide feedback comes, which says more.
func (e *estimator) report(fractionLost uint8, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.twccAt.IsZero() && now.Sub(e.twccAt) < twccStale {
		return
	}
	e.onLoss(float64(fractionLost)/256, now, false)
}

// onLoss applies a loss fraction measured at now; capped, the climb stops
// at 1.5 times the acknowledged rate plus headroomBps.
func (e *estimator) onLoss(loss float64, now time.Time, capped bool) {
	switch {
	case loss > 0.10:
		e.bps = max(minEstimate, e.bps*(1-0.5*loss))
		e.lastChange, e.lastCut = now, now
	case loss < 0.02 && now.Sub(e.lastChange) >= increaseEvery && now.Sub(e.lastCut) >= holdAfterCut:
		e.increase(now, capped)
	}
}

func (e *estimator) increase(now time.Time, capped bool) {
	next := min(maxEstimate, e.bps*increaseBy)
	if capped {
		limit := 1.5*e.ackedBpsLocked(now) + headroomBps
		if next > limit {
			next = max(e.bps, limit)
		}
	}
	if next != e.bps {
		e.bps = next
		e.lastChange = now
	}
}

// feedback takes a transport-wide feedback packet (one RTCP packet, as
// received) received at now.
// Malformed, duplicate, stale or absurd feedback changes nothing it cannot
// make sense of: what does not match a packet sent is skipped, arrival
// times that jump restart the delay measurement.
func (e *estimator) feedback(fb []byte, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.hist == nil {
		return
	}
	e.twccAt = now
	if e.counts != nil {
		e.counts.feedback.Add(1)
	}
	if e.lossAt.IsZero() {
		e.lossAt = now
	}
	nowNs := now.UnixNano()
	walkFeedback(fb, func(seq uint16, arr int64, arrived bool) {
		if e.started && int16(seq-e.highest) <= 0 {
			return // reported already
		}
		sent, size, ok := e.hist.lookup(seq, nowNs)
		if !ok {
			return // never sent, or long ago
		}
		e.started, e.highest = true, seq
		inProbe := e.probe.active && int16(seq-e.probe.first) >= 0 && (!e.probe.ended || int16(e.probe.last-seq) >= 0)
		if inProbe {
			e.probe.add(sent, arr, size, arrived)
		} else if int16(seq-e.lossFrom) < 0 {
			// Sent while a probe filled the queue: its loss is the
			// probe's.
		} else if arrived {
			e.lossRecv++
		} else {
			e.lossLost++
		}
		if !arrived {
			return
		}
		e.acks[e.ackN%len(e.acks)].arr, e.acks[e.ackN%len(e.acks)].size = arr, size
		e.ackN++
		e.delay.add(sent, arr)
	})
	if e.probe.active {
		if e.probe.ended && (int16(e.highest-e.probe.last) >= 0 || now.Sub(e.probe.at) > probeMaxWait) {
			e.probeDone(now)
		}
		return // the probe's own queue says nothing of the link's use
	}
	if e.delay.state == overusing && now.Sub(e.lastCut) >= 300*time.Millisecond {
		// A queue builds. If what arrives falls short of what was sent,
		// the link is full, at the rate that arrives: 85 % of it. If it
		// all arrives as sent, the queue is someone else's, or the
		// receiver's clock jittered: hold, and let loss say more.
		target := e.bps
		if acked := e.ackedBpsLocked(now); acked > 0 && acked < 0.9*e.sentBpsLocked(now) {
			target = 0.85 * acked
		}
		if target < e.bps {
			e.bps = max(minEstimate, target)
			e.lastCut = now
		}
		e.lastChange = now
	}
	if n := e.lossRecv + e.lossLost; n >= 50 && now.Sub(e.lossAt) >= 500*time.Millisecond {
		loss := float64(e.lossLost) / float64(n)
		e.lossLow = loss < 0.02
		e.lossRecv, e.lossLost, e.lossAt = 0, 0, now
		if loss > 0.10 {
			e.onLoss(loss, now, true)
			return
		}
	}
	if e.delay.state == normal && e.lossLow && now.Sub(e.lastChange) >= increaseEvery && now.Sub(e.lastCut) >= holdAfterCut {
		e.increase(now, true)
	}
}

// ackedBpsLocked is the rate the subscriber received at over the last
// half second of arrivals (0: too little to tell), and no more than what
// was sent: feedback that claims more is not believed.
func (e *estimator) ackedBpsLocked(now time.Time) float64 {
	return min(e.ackedBps(), 1.2*e.sentBpsLocked(now))
}

// ackedBps is the rate the arrivals the feedback told of say, over their
// last half second.
func (e *estimator) ackedBps() float64 {
	n := min(e.ackN, len(e.acks))
	if n < 2 {
		return 0
	}
	last := e.acks[(e.ackN-1)%len(e.acks)].arr
	from, bytes := last, 0
	for i := 1; i <= n; i++ {
		a := e.acks[(e.ackN-i)%len(e.acks)]
		if last-a.arr > 500_000 || a.arr > last {
			break
		}
		from = a.arr
		if i < n { // the oldest packet's bytes arrived before the window opened
			bytes += a.size
		}
	}
	if last-from < 100_000 {
		return 0
	}
	return float64(bytes) * 8 / (float64(last-from) / 1e6)
}

// startProbe starts a probe toward target bits a second, if one may run now:
// there is transport-wide feedback, no probe runs, the last was long
// enough ago and nothing was cut lately. It returns the rate to probe at.
func (e *estimator) startProbe(target float64, now time.Time) (float64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.hist == nil || e.probe.active || now.Before(e.probe.nextAt) || now.Sub(e.lastCut) < holdAfterCut || target <= e.bps {
		return 0, false
	}
	// At most probeGrowth times the estimate at once: far above it, a
	// probe would flood a link, and the next probe goes higher.
	target = min(target, max(e.bps*probeGrowth, e.bps+probeMinStep))
	nextAt, fails := e.probe.nextAt, e.probe.fails
	e.probe = probeState{active: true, first: uint16(e.hist.next.Load()), target: target, at: now, nextAt: nextAt, fails: fails}
	if e.counts != nil {
		e.counts.probes.Add(1)
	}
	return target, true
}

// endProbe marks the end of the probe's packets; a probe that could send
// none (sent false) is forgotten.
func (e *estimator) endProbe(sent bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case !e.probe.active:
	case !sent:
		e.probe.active = false
	default:
		e.probe.ended = true
		e.probe.last = uint16(e.hist.next.Load()) - 1
	}
}

func (p *probeState) add(sent, arr int64, size int, arrived bool) {
	if !arrived {
		p.lost++
		return
	}
	if p.recvd == 0 {
		p.firstArr, p.firstSent = arr, sent
		p.lastArr, p.lastSent = arr, sent
	} else {
		p.bytes += size
	}
	p.recvd++
	p.lastArr, p.lastSent = max(p.lastArr, arr), max(p.lastSent, sent)
}

// probeDone reads a probe's result: the rate its packets arrived at (no
// more than they were sent at) raises the estimate, up to the target; one
// that lost over 10 % or fell short makes the next wait longer.
func (e *estimator) probeDone(now time.Time) {
	p := &e.probe
	p.active = false
	e.delay.reset()
	rate := 0.0
	if p.recvd >= 10 && p.lastArr > p.firstArr && p.lastSent > p.firstSent {
		recv := float64(p.bytes) * 8 / (float64(p.lastArr-p.firstArr) / 1e6)
		send := float64(p.bytes) * 8 / (float64(p.lastSent-p.firstSent) / 1e9)
		rate = min(recv, send)
	}
	if p.recvd+p.lost == 0 {
		// No feedback told of it (the connection was not up yet):
		// no verdict on the link.
		p.nextAt = now.Add(probeRetry)
		return
	}
	lossy := p.lost*10 > p.recvd+p.lost
	if lossy {
		// What got through is the link's rate: 85 % of it, as for
		// overuse.
		rate *= 0.85
	}
	if rate > e.bps {
		e.bps = min(maxEstimate, rate, p.target*1.2)
		e.lastChange = now
	}
	// Packets sent until now met the queue the probe built: their loss
	// is not the link's.
	e.lossFrom = uint16(e.hist.next.Load())
	e.lossRecv, e.lossLost, e.lossAt = 0, 0, now
	if !lossy && rate >= 0.9*p.target {
		if e.counts != nil {
			e.counts.probesOK.Add(1)
		}
		p.fails = 0
		p.nextAt = now.Add(probeAgain)
		return
	}
	p.fails = min(p.fails+1, 4)
	p.nextAt = now.Add(probeEvery << p.fails)
}

// sentBps is the rate the connection sent at over the last half second.
func (e *estimator) sentBps(now time.Time) float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sentBpsLocked(now)
}

func (e *estimator) sentBpsLocked(now time.Time) float64 {
	if e.hist == nil {
		return 0
	}
	nowNs := now.UnixNano()
	from := nowNs - int64(500*time.Millisecond)
	bytes := 0
	for i := range e.hist.slots {
		v := e.hist.slots[i].Load()
		if v != 0 && sentAt(uint32(v), nowNs) >= from {
			bytes += int(v >> 32 & 0xffff)
		}
	}
	return float64(bytes) * 8 / 0.5
}

// floor raises the estimate to at least bps: what a subscriber received
// without loss before a failed trial of a larger layer, which the trial's
// loss says nothing against.
func (e *estimator) floor(bps float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bps = min(maxEstimate, max(e.bps, bps))
}

// cutAt returns when the estimate was last cut (unix ns; 0: never).
func (e *estimator) cutAt() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lastCut.IsZero() {
		return 0
	}
	return e.lastCut.UnixNano()
}

// estimate returns the estimate in bits a second.
func (e *estimator) estimate() float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bps
}

// Delay-based detection, after GCC's trendline estimator and overuse
// detector.
const (
	groupSpan      = 5 * time.Millisecond // packets sent within it form a group
	trendWindow    = 20                   // groups the line is fitted over
	trendSmoothing = 0.9
	trendGain      = 4.0
	overuseTime    = 10.0 // ms above the threshold before overuse
)

// Detector states.
const (
	normal = iota
	overusing
	underusing
)

// delayDetector tells from send and arrival times whether a queue is
// building on the path. Times: sent in unix ns, arrivals in µs on the
// receiver's clock.
type delayDetector struct {
	cur, prev struct {
		set                 bool
		firstSent, lastSent int64
		lastArr             int64
	}
	acc, smooth float64 // ms
	originArr   int64
	xs, ys      [trendWindow]float64
	n, deltas   int
	prevTrend   float64
	threshold   float64
	threshAt    int64 // µs
	overFor     float64
	overCount   int
	state       int
}

func (d *delayDetector) reset() {
	*d = delayDetector{}
}

// add takes one packet that arrived.
func (d *delayDetector) add(sent, arr int64) {
	c := &d.cur
	if c.set && sent-c.firstSent <= int64(groupSpan) {
		c.lastSent = max(c.lastSent, sent)
		c.lastArr = max(c.lastArr, arr)
		return
	}
	if c.set {
		if d.prev.set {
			sendDelta := float64(c.lastSent-d.prev.lastSent) / 1e6 // ms
			arrDelta := float64(c.lastArr-d.prev.lastArr) / 1e3    // ms
			if arrDelta < 0 || arrDelta > 2000 || math.Abs(arrDelta-sendDelta) > 2000 {
				// Reordered, or a clock that jumped: start again.
				d.reset()
				d.cur.set, d.cur.firstSent, d.cur.lastSent, d.cur.lastArr = true, sent, sent, arr
				return
			}
			d.update(arrDelta-sendDelta, sendDelta, c.lastArr)
		}
		d.prev = *c
	}
	c.set, c.firstSent, c.lastSent, c.lastArr = true, sent, sent, arr
}

// update takes the delay variation (ms) of one group over the last.
func (d *delayDetector) update(variation, sendDelta float64, arr int64) {
	if d.threshold == 0 {
		d.threshold, d.overFor, d.threshAt = 12.5, -1, arr
	}
	d.deltas++
	d.acc += variation
	d.smooth = trendSmoothing*d.smooth + (1-trendSmoothing)*d.acc
	if d.n == 0 {
		d.originArr = arr
	}
	i := d.n % trendWindow
	d.xs[i], d.ys[i] = float64(arr-d.originArr)/1e3, d.smooth
	d.n++
	if d.n < trendWindow {
		return
	}
	slope := fitSlope(d.xs[:], d.ys[:])
	trend := slope * float64(min(d.deltas, 60)) * trendGain
	switch {
	case trend > d.threshold:
		if d.overFor < 0 {
			d.overFor = sendDelta / 2
		} else {
			d.overFor += sendDelta
		}
		d.overCount++
		if d.overFor > overuseTime && d.overCount > 1 && trend >= d.prevTrend {
			d.overFor, d.overCount = 0, 0
			d.state = overusing
		}
	case trend < -d.threshold:
		d.overFor, d.overCount = -1, 0
		d.state = underusing
	default:
		d.overFor, d.overCount = -1, 0
		d.state = normal
	}
	d.prevTrend = trend
	// The threshold follows the trend slowly (faster down than up), so
	// that a competing flow's queue does not starve this one; a jump far
	// above it is not followed.
	abs := math.Abs(trend)
	if abs <= d.threshold+15 {
		k := 0.0087
		if abs < d.threshold {
			k = 0.039
		}
		dt := min(float64(arr-d.threshAt)/1e3, 100)
		d.threshold = min(600, max(6, d.threshold+k*(abs-d.threshold)*dt))
	}
	d.threshAt = arr
}

// fitSlope is the least-squares slope of ys over xs.
func fitSlope(xs, ys []float64) float64 {
	var sx, sy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
	}
	mx, my := sx/float64(len(xs)), sy/float64(len(ys))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}
