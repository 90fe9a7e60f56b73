package media

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// Room is the media of one meeting: who may publish, the sessions and the
// published tracks.
//
// Its lock guards its own fields only and is never held across a call into
// pion or into a session: the meeting's owner takes it (through SFU.Allow),
// so it must only ever be held for a few map and slice operations. Work
// that talks to peer connections is snapshotted under the lock and done
// after it, by the caller or by the room's worker.
type Room struct {
	sfu  *SFU
	id   string
	work worker

	mu       sync.Mutex
	allowed  map[string]stage.Media // participant id -> kinds; absent: may not publish
	sessions map[string]*Session    // participant id -> its current session
	tracks   []*Track               // published and forwarding, in publication order

	// Counters of tracks that ended; live tracks keep their own.
	ended counters
	// Of the subscribers' estimators, live or gone.
	est estCounters

	speakerRunning bool                   // watchSpeakers runs
	spk            speakers               // its state: only watchSpeakers touches it
	activePID      atomic.Pointer[string] // the active speaker, for the bandwidth shares
	relay          *roomRelay             // in a cluster; set before the room is shared
	done           chan struct{}          // closed by close
	doneOnce       sync.Once
}

// counters are a track's, or a room's, running totals.
type counters struct {
	packetsIn, bytesIn   atomic.Uint64 // received from publishers
	packetsOut, bytesOut atomic.Uint64 // forwarded to subscribers
	retransmits          atomic.Uint64 // sent again on a subscriber's NACK
	keyframeRequests     atomic.Uint64 // PLIs sent to publishers
	layerSwitches        atomic.Uint64 // a subscriber moved to another simulcast layer
	probePackets         atomic.Uint64 // padding sent to probe a subscriber's link
}

// estCounters are the room's subscribers' estimators' running totals.
type estCounters struct {
	feedback atomic.Uint64 // transport-wide feedback packets read
	probes   atomic.Uint64 // probes sent
	probesOK atomic.Uint64 // probes that reached their target
	// RTCP packets from subscribers read on the direct path
	directRTCP atomic.Uint64
}

func (c *counters) add(o *counters) {
	c.packetsIn.Add(o.packetsIn.Load())
	c.bytesIn.Add(o.bytesIn.Load())
	c.packetsOut.Add(o.packetsOut.Load())
	c.bytesOut.Add(o.bytesOut.Load())
	c.retransmits.Add(o.retransmits.Load())
	c.keyframeRequests.Add(o.keyframeRequests.Load())
	c.layerSwitches.Add(o.layerSwitches.Load())
	c.probePackets.Add(o.probePackets.Load())
}

func newRoom(s *SFU, id string) *Room {
	return &Room{sfu: s, id: id, work: worker{wg: &s.wg}, allowed: map[string]stage.Media{}, sessions: map[string]*Session{},
		done: make(chan struct{})}
}

// allows reports whether m permits a track of source src.
func allows(m stage.Media, src protocol.Source) bool {
	switch src {
	case protocol.SourceMicrophone:
		return m.Audio
	case protocol.SourceCamera:
		return m.Video
	case protocol.SourceScreenshare:
		return m.Screenshare
	}
	return false
}

// allow records what pid may publish. Tracks it may no longer publish stop
// forwarding before allow returns; taking them off the subscribers and
// telling the publisher is left to the room's worker, in order.
func (r *Room) allow(pid string, m stage.Media, ok bool) {
	var stopped []*Track
	r.mu.Lock()
	if ok {
		r.allowed[pid] = m
	} else {
		delete(r.allowed, pid)
	}
	for _, t := range r.tracks {
		if t.pid == pid && (!ok || !allows(m, t.source)) {
			t.stop() // from here on, not one more packet is forwarded
			stopped = append(stopped, t)
		}
	}
	sess := r.sessions[pid]
	r.mu.Unlock()
	if len(stopped) == 0 {
		return
	}
	reason := protocol.StoppedStage
	if ok {
		reason = protocol.StoppedPermissions
	}
	r.work.do(func() {
		for _, t := range stopped {
			r.unpublish(t)
		}
		if sess != nil {
			sess.stoppedByServer(reason, stopped, !ok)
		}
	})
}

// publishing returns what pid may publish, and whether it may at all.
func (r *Room) publishing(pid string) (stage.Media, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.allowed[pid]
	return m, ok
}

// attach makes s its participant's current session.
func (r *Room) attach(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sessions[s.pid] = s
}

// publish starts forwarding t, if its participant may publish it now, and
// adds it to every subscriber.
func (r *Room) publish(t *Track) error {
	r.mu.Lock()
	s := t.sess
	m, ok := r.allowed[s.pid]
	var err error
	switch {
	case r.sessions[s.pid] != s:
		err = stage.Errorf(stage.ErrNotFound, "the session has ended")
	case !ok:
		err = stage.Errorf(stage.ErrInvalidStageStatus, "only participants on the stage publish media")
	case !allows(m, t.source):
		err = stage.Errorf(stage.ErrPermissionDenied, "the preset does not allow publishing "+string(t.source))
	}
	for _, o := range r.tracks {
		if err == nil && o.pid == t.pid && o.source == t.source {
			err = stage.Errorf(stage.ErrPermissionDenied, "already publishing a "+string(t.source)+" track")
		}
	}
	if err != nil {
		r.mu.Unlock()
		return err
	}
	subs := r.addTrackLocked(t, s)
	if r.relay != nil {
		r.relay.announce(t)
	}
	r.mu.Unlock()
	for _, sub := range subs {
		sub.send(t)
	}
	return nil
}

// addTrackLocked adds t to the room's tracks, starts watching speakers if
// t carries audio levels, and returns the sessions to send t to: every one
// but s. r.mu is held.
func (r *Room) addTrackLocked(t *Track, s *Session) []*Session {
	r.tracks = append(r.tracks, t)
	if t.levels.ext != 0 && !r.speakerRunning {
		select {
		case <-r.done:
		default:
			r.speakerRunning = true
			r.sfu.wg.Add(1)
			go r.watchSpeakers()
		}
	}
	return r.others(s)
}

// others returns every session but s. r.mu is held.
func (r *Room) others(s *Session) []*Session {
	out := make([]*Session, 0, len(r.sessions))
	for _, o := range r.sessions {
		if o != s {
			out = append(out, o)
		}
	}
	return out
}

// unpublish stops t and takes it off every subscriber. It is idempotent.
func (r *Room) unpublish(t *Track) {
	t.stop()
	r.mu.Lock()
	i := slices.Index(r.tracks, t)
	if i < 0 {
		r.mu.Unlock()
		return
	}
	r.tracks = slices.Delete(r.tracks, i, i+1)
	subs := r.others(nil)
	r.ended.add(&t.counters)
	r.mu.Unlock()
	if r.relay != nil {
		r.relay.withdraw(t)
	}
	for _, sub := range subs {
		sub.stopSending(t)
	}
	t.closeCache()
	r.sfu.log.Debug("track unpublished", "meeting", r.id, "participant", t.pid, "source", t.source)
}

// published returns the tracks a new subscriber s receives.
func (r *Room) published(s *Session) []*Track {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Track, 0, len(r.tracks))
	for _, t := range r.tracks {
		if t.sess != s {
			out = append(out, t)
		}
	}
	return out
}

// detach removes s and stops its tracks; it returns them, for the caller to
// unpublish.
func (r *Room) detach(s *Session) []*Track {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[s.pid] == s {
		delete(r.sessions, s.pid)
	}
	var own []*Track
	for _, t := range r.tracks {
		if t.sess == s {
			t.stop()
			own = append(own, t)
		}
	}
	return own
}

// stopOwn stops forwarding every track of s, at once.
func (r *Room) stopOwn(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.tracks {
		if t.sess == s {
			t.stop()
		}
	}
}

// close closes every session of the room, on the room's worker.
func (r *Room) close() {
	r.doneOnce.Do(func() { close(r.done) })
	if r.relay != nil {
		r.relay.close()
	}
	r.mu.Lock()
	sessions := slices.Collect(maps.Values(r.sessions))
	r.mu.Unlock()
	if len(sessions) == 0 {
		return
	}
	r.work.do(func() {
		for _, s := range sessions {
			s.Close()
		}
	})
}

// Stats are a meeting's media figures.
type Stats struct {
	Tracks, Subscribers  int
	PacketsIn, BytesIn   uint64
	PacketsOut, BytesOut uint64
	Retransmits          uint64
	KeyframeRequests     uint64
	LayerSwitches        uint64
	SimulcastLayers      int // layers received of the simulcast tracks
	PausedLayers         int // of those, layers the publisher was told to pause (dynacast)
	PausedDowns          int // simulcast tracks a subscriber receives no video of
	// OnLayer counts the simulcast tracks subscribers receive by the
	// layer they receive (0: the smallest the publisher sends).
	OnLayer      [maxLayers]int
	ProbePackets uint64 // padding packets sent to probe subscribers' links
	Probes       uint64 // probes sent
	ProbesOK     uint64 // of those, probes whose packets arrived at the rate probed
	Feedback     uint64 // transport-wide congestion control feedback packets from subscribers
	// Direct counts the subscriber connections whose media goes the
	// direct path (fastpath.go) rather than pion's write path.
	Direct int
	// DirectRTCP counts the RTCP packets from subscribers read on the
	// direct path.
	DirectRTCP uint64
	// Estimates holds the subscribers' bandwidth estimates, in bits a
	// second.
	Estimates []float64
}

func (r *Room) stats() Stats {
	r.mu.Lock()
	var c counters
	c.add(&r.ended)
	for _, t := range r.tracks {
		c.add(&t.counters)
	}
	st := Stats{Tracks: len(r.tracks)}
	tracks := slices.Clone(r.tracks)
	sessions := r.others(nil)
	r.mu.Unlock()
	st.LayerSwitches = c.layerSwitches.Load()
	for _, t := range tracks {
		if !t.simulcast {
			continue
		}
		t.layersMu.Lock()
		st.SimulcastLayers += len(t.layers)
		for _, l := range t.layers {
			if l.paused.Load() {
				st.PausedLayers++
			}
		}
		t.layersMu.Unlock()
		for _, d := range *t.downs.Load() {
			if cur := d.sim.cur.Load(); cur < 0 {
				st.PausedDowns++
			} else if cur < maxLayers {
				st.OnLayer[cur]++
			}
		}
	}
	st.PacketsIn, st.BytesIn = c.packetsIn.Load(), c.bytesIn.Load()
	st.PacketsOut, st.BytesOut = c.packetsOut.Load(), c.bytesOut.Load()
	st.Retransmits, st.KeyframeRequests = c.retransmits.Load(), c.keyframeRequests.Load()
	st.ProbePackets = c.probePackets.Load()
	st.Probes, st.ProbesOK, st.Feedback = r.est.probes.Load(), r.est.probesOK.Load(), r.est.feedback.Load()
	st.DirectRTCP = r.est.directRTCP.Load()
	for _, s := range sessions {
		if s.subscribed() {
			st.Subscribers++
			st.Estimates = append(st.Estimates, s.bwe.estimate())
			if s.direct != nil && s.direct.addr.Load() != nil {
				st.Direct++
			}
		}
	}
	return st
}
