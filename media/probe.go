package media

import (
	"time"
)

// Probing: before a subscriber moves up to a larger layer than its
// estimate allows, the SFU sends it padding on that track's stream, on top
// of what it receives, to reach the rate the larger layer would need for
// probeDuration. The receiver drops the padding but acknowledges it in its
// transport-wide feedback; the rate it arrived at is what the link
// carried, and raises the estimate at once (estimator.probeDone). Padding
// takes sequence numbers in the subscriber's stream (rewriter.pad), so it
// is never mistaken for a replayed packet, and a NACK of one is answered
// with padding again. Copies of packets the subscriber already has would
// not do: SRTP's replay protection drops them before they are counted.

// probeTick is how often a probe sends its next padding.
const probeTick = 5 * time.Millisecond

// probeFor starts a probe, if one may run, for the estimate the next
// layer of t would need, need bits a second for itself; d is the
// subscriber's downTrack of t.
func (s *Session) probeFor(t *Track, d *downTrack, need float64, now time.Time) {
	if s == nil || s.bwe == nil || d.sim == nil {
		return
	}
	target := s.estimateFor(t, need)
	target, ok := s.bwe.startProbe(target, now)
	if !ok {
		return
	}
	go s.sendProbe(d, target, now)
}

// estimateFor is the estimate with which budget(t) would be need: its
// inverse.
func (s *Session) estimateFor(t *Track, need float64) float64 {
	return need/s.share(t) + audioReserve
}

// sendProbe sends the probe's padding on d, paced over probeDuration,
// and marks its end.
func (s *Session) sendProbe(d *downTrack, target float64, start time.Time) {
	packets := 0
	defer func() { s.bwe.endProbe(packets > 0) }()
	extra := (target - s.bwe.sentBps(start)) * probeDuration.Seconds() / 8 // bytes
	var o outBuf
	tick := time.NewTicker(probeTick)
	defer tick.Stop()
	ticks := int(probeDuration / probeTick)
	sent := 0.0
	for i := 1; i <= ticks && packets < probeMaxPackets; i++ {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		for sent < extra*float64(i)/float64(ticks) && packets < probeMaxPackets {
			if d.t.stopped.Load() {
				return
			}
			now := time.Now().UnixNano()
			d.sim.mu.Lock()
			seq, ts := d.sim.rw.pad(now)
			n := d.writePadding(seq, ts, &o, now)
			d.sim.mu.Unlock()
			if n == 0 {
				return // not bound, or the connection is gone
			}
			sent += float64(n)
			packets++
			d.t.probePackets.Add(1)
		}
	}
}
