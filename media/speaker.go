package media

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
)

// Active speaker detection, from the audio levels publishers put in their
// packets (the ssrc-audio-level header extension, RFC 6464: 0 is the
// loudest, 127 silence, in -dBov).
const (
	// speakerInterval is how often a room looks at its audio levels, and
	// so the most often it tells who speaks.
	speakerInterval = 250 * time.Millisecond
	// speakingLevel is the loudest level that is still silence: a track
	// whose average over a window is below it speaks.
	speakingLevel = 60
	// speakerSmoothing weighs a window against the past (exponential
	// smoothing of the average level).
	speakerSmoothing = 0.5
	// speakerHold is how long another participant must be louder than the
	// active speaker, who still speaks, before it takes over: a cough does
	// not move the big tile.
	speakerHold = time.Second
)

// levels accumulates an audio track's levels between two looks.
type levels struct {
	ext   uint8         // the header extension's id; 0: the publisher sends none
	sum   atomic.Uint64 // of the levels since the last look
	count atomic.Uint64
	avg   float64 // smoothed; only the room's speaker goroutine touches it
}

// audioLevelExt returns the id the publisher negotiated for audio levels,
// or 0.
func audioLevelExt(recv *webrtc.RTPReceiver) uint8 {
	for _, e := range recv.GetParameters().HeaderExtensions {
		if e.URI == sdp.AudioLevelURI {
			return uint8(e.ID)
		}
	}
	return 0
}

// add takes the level of packet h, if it has one.
func (l *levels) add(h *rtp.Header) {
	if l.ext == 0 {
		return
	}
	if b := h.GetExtension(l.ext); len(b) > 0 {
		l.sum.Add(uint64(b[0] & 0x7f))
		l.count.Add(1)
	}
}

// look folds the levels since the last look into the smoothed average and
// returns it; silence when nothing came.
func (l *levels) look() float64 {
	n, sum := l.count.Swap(0), l.sum.Swap(0)
	level := 127.0
	if n > 0 {
		level = float64(sum) / float64(n)
	}
	if l.avg == 0 {
		l.avg = 127
	}
	l.avg = speakerSmoothing*l.avg + (1-speakerSmoothing)*level
	return l.avg
}

// speakers is a room's view of who speaks.
type speakers struct {
	active      string          // participant id; "" for nobody yet
	speaking    map[string]bool // participant id -> speaks
	challenger  string
	challengeAt time.Time
}

// decide takes the smoothed levels of the room's audio tracks (participant
// id -> level) at now and returns whether what it tells changed: who
// speaks, and the active speaker — the loudest who speaks, once louder
// than the active speaker for speakerHold, or at once when the active
// speaker stops. The last active speaker stays so while nobody speaks.
func (sp *speakers) decide(lv map[string]float64, now time.Time) bool {
	changed := false
	speaking := map[string]bool{}
	loudest, best := "", 128.0
	for pid, l := range lv {
		if l < speakingLevel {
			speaking[pid] = true
			if l < best || l == best && pid < loudest {
				loudest, best = pid, l
			}
		}
	}
	if len(speaking) != len(sp.speaking) {
		changed = true
	}
	for pid := range speaking {
		if !sp.speaking[pid] {
			changed = true
		}
	}
	sp.speaking = speaking
	switch {
	case loudest == "" || loudest == sp.active:
		sp.challenger = ""
	case sp.active == "" || !speaking[sp.active]:
		sp.active, sp.challenger, changed = loudest, "", true
	case loudest != sp.challenger:
		sp.challenger, sp.challengeAt = loudest, now
	case now.Sub(sp.challengeAt) >= speakerHold:
		sp.active, sp.challenger, changed = loudest, "", true
	}
	return changed
}

// event is what the room tells its sessions.
func (sp *speakers) event() protocol.ActiveSpeaker {
	e := protocol.ActiveSpeaker{ParticipantID: sp.active, Speaking: make([]string, 0, len(sp.speaking))}
	for pid := range sp.speaking {
		e.Speaking = append(e.Speaking, pid)
	}
	slices.Sort(e.Speaking)
	return e
}

// watchSpeakers is a room's speaker goroutine: it runs while the room has
// audio tracks that carry levels, and tells every session when who speaks
// changes.
func (r *Room) watchSpeakers() {
	defer r.sfu.wg.Done()
	tick := time.NewTicker(speakerInterval)
	defer tick.Stop()
	for {
		select {
		case <-r.done:
			return
		case now := <-tick.C:
			r.mu.Lock()
			var audio []*Track
			for _, t := range r.tracks {
				if t.kind == webrtc.RTPCodecTypeAudio && t.levels.ext != 0 {
					audio = append(audio, t)
				}
			}
			if len(audio) == 0 {
				r.speakerRunning = false
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
			lv := make(map[string]float64, len(audio))
			for _, t := range audio {
				l := t.levels.look()
				if old, ok := lv[t.pid]; !ok || l < old { // a participant's loudest track
					lv[t.pid] = l
				}
			}
			if !r.spk.decide(lv, now) {
				continue
			}
			active := r.spk.active
			r.activePID.Store(&active)
			e := r.spk.event()
			r.mu.Lock()
			sessions := r.others(nil)
			r.mu.Unlock()
			for _, s := range sessions {
				s.signal(protocol.EventActiveSpeaker, e)
			}
		}
	}
}
