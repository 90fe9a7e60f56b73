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
type Room struct {
	sfu *SFU
	id  string

	// mu guards the fields below, and every session's tracks and
	// subscriptions. Lock order: Room.mu, then Session.mu.
	mu       sync.Mutex
	allowed  map[string]stage.Media // participant id -> kinds; absent: may not publish
	sessions map[string]*Session    // participant id -> its current session
	tracks   []*Track               // published and forwarding, in publication order

	// Counters of tracks that ended; live tracks keep their own.
	ended counters
}

// counters are a track's, or a room's, running totals.
type counters struct {
	packetsIn, bytesIn   atomic.Uint64 // received from publishers
	packetsOut, bytesOut atomic.Uint64 // forwarded to subscribers
	retransmits          atomic.Uint64 // sent again on a subscriber's NACK
	keyframeRequests     atomic.Uint64 // PLIs sent to publishers
}

func (c *counters) add(o *counters) {
	c.packetsIn.Add(o.packetsIn.Load())
	c.bytesIn.Add(o.bytesIn.Load())
	c.packetsOut.Add(o.packetsOut.Load())
	c.bytesOut.Add(o.bytesOut.Load())
	c.retransmits.Add(o.retransmits.Load())
	c.keyframeRequests.Add(o.keyframeRequests.Load())
}

func newRoom(s *SFU, id string) *Room {
	return &Room{sfu: s, id: id, allowed: map[string]stage.Media{}, sessions: map[string]*Session{}}
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
	// Taking the tracks off every subscriber renegotiates with each: do
	// it off the caller's (the meeting owner's) goroutine.
	go func() {
		for _, t := range stopped {
			r.unpublish(t)
		}
		if sess != nil {
			sess.stoppedByServer(reason, stopped, !ok)
		}
	}()
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

// publish starts forwarding t, if its participant may publish it now, to
// every subscriber.
func (r *Room) publish(t *Track) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := t.sess
	if r.sessions[s.pid] != s || s.isClosed() {
		return stage.Errorf(stage.ErrNotFound, "the session has ended")
	}
	m, ok := r.allowed[s.pid]
	switch {
	case !ok:
		return stage.Errorf(stage.ErrInvalidStageStatus, "only participants on the stage publish media")
	case !allows(m, t.source):
		return stage.Errorf(stage.ErrPermissionDenied, "the preset does not allow publishing "+string(t.source))
	}
	for _, o := range r.tracks {
		if o.pid == t.pid && o.source == t.source {
			return stage.Errorf(stage.ErrPermissionDenied, "already publishing a "+string(t.source)+" track")
		}
	}
	r.tracks = append(r.tracks, t)
	for _, sub := range r.sessions {
		if sub != s {
			sub.subscribeLocked(t)
		}
	}
	return nil
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
	for _, sub := range r.sessions {
		sub.unsubscribeLocked(t)
	}
	r.ended.add(&t.counters)
	r.mu.Unlock()
	t.closeCache()
	r.sfu.log.Debug("track unpublished", "meeting", r.id, "participant", t.pid, "source", t.source)
}

// detach removes s: its tracks stop, and it leaves every track it received.
func (r *Room) detach(s *Session) []*Track {
	r.mu.Lock()
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
	r.mu.Unlock()
	return own
}

// close closes every session of the room.
func (r *Room) close() {
	r.mu.Lock()
	sessions := slices.Collect(maps.Values(r.sessions))
	r.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
}

// Stats are a meeting's media figures.
type Stats struct {
	Tracks, Subscribers  int
	PacketsIn, BytesIn   uint64
	PacketsOut, BytesOut uint64
	Retransmits          uint64
	KeyframeRequests     uint64
}

func (r *Room) stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c counters
	c.add(&r.ended)
	for _, t := range r.tracks {
		c.add(&t.counters)
	}
	st := Stats{Tracks: len(r.tracks), PacketsIn: c.packetsIn.Load(), BytesIn: c.bytesIn.Load(),
		PacketsOut: c.packetsOut.Load(), BytesOut: c.bytesOut.Load(),
		Retransmits: c.retransmits.Load(), KeyframeRequests: c.keyframeRequests.Load()}
	for _, s := range r.sessions {
		if s.subscribed() {
			st.Subscribers++
		}
	}
	return st
}
