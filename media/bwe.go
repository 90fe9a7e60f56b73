package media

import (
	"sync"
	"time"
)

// A subscriber connection's bandwidth estimate, from the loss its receiver
// reports tell (RFC 3550 fraction lost), as GCC's loss-based controller
// does: more than 10 % lost cuts the estimate by half the loss; under 2 %
// raises it by 35 % at most every half second, and not for holdAfterCut
// after a cut (a layer that did not fit is not tried again at once); in
// between holds it. It costs nothing per forwarded packet: it reads RTCP
// only.
//
// Why not pion's GCC (transport-wide feedback, delay-based): its pacer and
// feedback bookkeeping sit on every forwarded packet, and it only climbs
// to 1.5 times what is sent, so without probing a subscriber on the
// smallest layer never earns the next one. A loss-based estimate climbs by
// itself and falls when a layer does not fit, which is what choosing a
// layer needs.
const (
	initialEstimate = 600_000    // bits/s: enough for a small and a middle layer
	minEstimate     = 30_000     // bits/s
	maxEstimate     = 20_000_000 // bits/s
	increaseEvery   = 500 * time.Millisecond
	increaseBy      = 1.35
	holdAfterCut    = 2 * time.Second
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
)

// estimator is one subscriber connection's estimate.
type estimator struct {
	mu         sync.Mutex
	bps        float64
	lastChange time.Time
	lastCut    time.Time
}

func newEstimator(initial float64) *estimator { return &estimator{bps: initial} }

// report takes one reception report's fraction lost (of 256) at now.
func (e *estimator) report(fractionLost uint8, now time.Time) {
	loss := float64(fractionLost) / 256
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case loss > 0.10:
		e.bps = max(minEstimate, e.bps*(1-0.5*loss))
		e.lastChange, e.lastCut = now, now
	case loss < 0.02 && now.Sub(e.lastChange) >= increaseEvery && now.Sub(e.lastCut) >= holdAfterCut:
		e.bps = min(maxEstimate, e.bps*increaseBy)
		e.lastChange = now
	}
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
