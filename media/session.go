package media

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// answerTimeout bounds the wait for a subscriber's answer before the next
// offer may be sent.
const answerTimeout = 10 * time.Second

// gatherTimeout bounds ICE gathering. With the UDP mux it is immediate.
const gatherTimeout = 5 * time.Second

// maxCandidates bounds the remote candidates buffered before a remote
// description.
const maxCandidates = 64

// budget is the bit rate a simulcast track may take of the subscriber's
// estimate, less audio's reserve: a screen share all of it; a camera its
// share with the other cameras, the active speaker's counting twice; 0 for
// no limit.
func (s *Session) budget(t *Track) float64 {
	if s == nil || s.bwe == nil {
		return 0
	}
	return max((s.bwe.estimate()-audioReserve)*s.share(t), 1)
}

// share is the part of the estimate, less audio's reserve, that track t
// may take: all of it for a screen share; for a camera its share with the
// other cameras, the active speaker's counting twice.
func (s *Session) share(t *Track) float64 {
	if t.source == protocol.SourceScreenshare {
		return 1
	}
	weight, total := 1.0, float64(max(1, s.simDowns.Load()))
	if p := s.room.activePID.Load(); p != nil && *p != "" && *p != s.pid {
		total++ // the active speaker's camera counts twice
		if *p == t.pid {
			weight = 2
		}
	}
	return weight / total
}

// sendHistory returns the subscriber connection's send history, made on
// first use: a connection that negotiated no transport-wide feedback has
// none.
func (s *Session) sendHistory() *sendHistory {
	s.histOnce.Do(func() {
		s.hist = &sendHistory{}
		s.bwe.useTWCC(s.hist)
	})
	return s.hist
}

// lossy reports whether the subscriber's link lost enough to cut its
// estimate yet: only then may its video be paused for want of bandwidth.
func (s *Session) lossy() bool { return s != nil && s.bwe != nil && s.bwe.cutAt() != 0 }

// Signal sends a media event (protocol.EventMediaOffer, EventMediaStopped)
// to the session's client. It must not block.
type Signal func(event string, data any)

// Session is the media of one realtime connection: its publisher side
// (publisher.go: the connection the client offers, with its own tracks)
// and its subscriber side (subscriber.go: the connection the server
// offers, with everyone else's). A session ends with its connection.
//
// The session's lock guards both sides and is held across calls into its
// own peer connections; no lock of the room is ever taken while it is
// held, so a slow peer connection delays its own session only.
type Session struct {
	room   *Room
	pid    string
	uid    string
	signal Signal
	log    *slog.Logger

	pub atomic.Pointer[webrtc.PeerConnection] // for keyframe requests, without the lock

	mu     sync.Mutex
	closed bool
	publisherSide
	subscriberSide

	bwe      *estimator // the subscriber connection's bandwidth estimate
	histOnce sync.Once
	hist     *sendHistory // its packets, with transport-wide feedback; see sendHistory
	simDowns atomic.Int32 // simulcast camera tracks the subscriber receives

	neg      chan struct{} // the subscriber connection needs an offer
	answered chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
}

// NewSession starts the media of a realtime connection of participant pid
// (user uid) in meeting meetingID; it becomes the participant's current
// session. Media events reach the client through signal.
func (s *SFU) NewSession(meetingID, pid, uid string, signal Signal) *Session {
	sess := &Session{room: s.room(meetingID), pid: pid, uid: uid, signal: signal,
		log:            s.log.With("meeting", meetingID, "participant", pid),
		publisherSide:  publisherSide{sources: map[string]protocol.Source{}},
		subscriberSide: subscriberSide{downs: map[*Track]*downTrack{}},
		neg:            make(chan struct{}, 1), answered: make(chan struct{}, 1), done: make(chan struct{}), bwe: newEstimator(s.initialBWE)}
	sess.bwe.counts = &sess.room.est
	sess.room.attach(sess)
	return sess
}

func errClosed() error { return stage.Errorf(stage.ErrNotFound, "the media session has ended") }

// AddCandidate adds a client's trickled ICE candidate to one of its
// connections; an empty candidate marks the end of them.
func (s *Session) AddCandidate(p protocol.CandidateParams) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed()
	}
	pc, pending := s.pubPC, &s.pubCands
	if p.Target == protocol.TargetSubscriber {
		pc, pending = s.sub, &s.subCands
	}
	if pc == nil {
		return stage.Errorf(stage.ErrNotFound, "no "+string(p.Target)+" connection to add a candidate to")
	}
	if p.Candidate.Candidate == "" {
		return nil // the end of the client's candidates
	}
	c := webrtc.ICECandidateInit{Candidate: p.Candidate.Candidate, SDPMid: p.Candidate.SDPMid,
		SDPMLineIndex: p.Candidate.SDPMLineIndex, UsernameFragment: p.Candidate.UsernameFragment}
	if pc.RemoteDescription() == nil {
		if len(*pending) >= maxCandidates {
			return stage.Errorf(stage.ErrBadRequest, "too many candidates before the description")
		}
		*pending = append(*pending, c)
		return nil
	}
	if err := pc.AddICECandidate(c); err != nil {
		return stage.Errorf(stage.ErrBadRequest, "bad candidate: "+err.Error())
	}
	return nil
}

func waitGathered(ch <-chan struct{}) {
	t := time.NewTimer(gatherTimeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// Close ends the session: its tracks stop and leave every subscriber, it
// leaves every track it received, and both peer connections close.
func (s *Session) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	pub, sub, direct := s.pubPC, s.sub, s.direct
	s.pubPC = nil
	s.pub.Store(nil)
	received := make([]*Track, 0, len(s.downs))
	for t := range s.downs {
		received = append(received, t)
	}
	s.mu.Unlock()
	for _, t := range s.room.detach(s) {
		s.room.unpublish(t)
	}
	for _, t := range received {
		s.stopSending(t)
	}
	close(s.done)
	if pub != nil {
		pub.Close()
	}
	if sub != nil {
		sub.Close()
	}
	direct.update(nil, false)
	s.wg.Wait()
}
