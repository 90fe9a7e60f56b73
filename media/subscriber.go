package media

import (
	"strconv"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// subscriberSide is a session's receiving: the connection the server
// offers, with one downTrack per track of the others. Guarded by
// Session.mu.
type subscriberSide struct {
	sub      *webrtc.PeerConnection
	direct   *directPath               // nil: pion's write path only; set with sub
	subCands []webrtc.ICECandidateInit // before the subscriber's answer
	downs    map[*Track]*downTrack
	restart  bool // the next offer restarts ICE
}

func (s *Session) subscribed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sub != nil
}

// Subscribe opens the subscriber connection, with every track published
// so far; the offer follows as an event (protocol.EventMediaOffer), and a
// new one whenever a track comes or goes.
func (s *Session) Subscribe() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed()
	}
	if s.sub != nil {
		s.mu.Unlock()
		return stage.Errorf(stage.ErrBadRequest, "already subscribed")
	}
	var direct *directPath
	if b := s.room.sfu.batch; b != nil {
		direct = &directPath{batch: b, sess: s}
	}
	pc, err := s.room.sfu.subscriberAPI(direct).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		s.mu.Unlock()
		return stage.Errorf(stage.ErrInternal, "creating a peer connection: "+err.Error())
	}
	s.sub, s.direct = pc, direct
	s.mu.Unlock()
	if direct != nil {
		if t := pc.SCTP().Transport().ICETransport(); t != nil {
			t.OnSelectedCandidatePairChange(func(*webrtc.ICECandidatePair) {
				direct.update(pc, pc.ConnectionState() == webrtc.PeerConnectionStateConnected)
			})
		}
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		direct.update(pc, st == webrtc.PeerConnectionStateConnected)
		if st != webrtc.PeerConnectionStateConnected {
			return
		}
		// Whatever was sent before is lost: start every video with a
		// keyframe.
		s.mu.Lock()
		tracks := make([]*Track, 0, len(s.downs))
		for t := range s.downs {
			tracks = append(tracks, t)
		}
		s.mu.Unlock()
		for _, t := range tracks {
			t.requestKeyframe()
		}
	})
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.negotiator()
	}()
	go func() {
		defer s.wg.Done()
		s.senderReports(pc)
	}()
	// A track published from here on is sent by Room.publish; one
	// published meanwhile may be sent twice, which send ignores.
	for _, t := range s.room.published(s) {
		s.send(t)
	}
	return nil
}

// send adds t to the subscriber connection, if there is one and t still
// forwards.
func (s *Session) send(t *Track) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// t.stopped is read under the lock that stopSending takes after
	// stopping t: a track stopped meanwhile is never added after its
	// removal.
	if s.closed || s.sub == nil || s.downs[t] != nil || t.stopped.Load() {
		return
	}
	d := &downTrack{t: t, sess: s}
	if t.simulcast {
		d.sim = newSimState()
		if t.source != protocol.SourceScreenshare {
			s.simDowns.Add(1)
		}
	}
	sender, err := s.sub.AddTrack(d)
	if err != nil {
		s.log.Warn("adding a track to a subscriber", "err", err)
		return
	}
	d.sender = sender
	s.downs[t] = d
	t.addDown(d)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		d.readRTCP()
	}()
	s.renegotiate()
}

// stopSending takes t off the subscriber connection.
func (s *Session) stopSending(t *Track) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.downs[t]
	if d == nil {
		return
	}
	delete(s.downs, t)
	t.removeDown(d)
	if d.sim != nil && t.source != protocol.SourceScreenshare {
		s.simDowns.Add(-1)
	}
	if !s.closed {
		// Told now; the offer without the track takes a negotiation.
		s.signal(protocol.EventTrackEnded, protocol.TrackEnded{TrackID: t.id, ParticipantID: t.pid, Source: t.source})
		s.sub.RemoveTrack(d.sender)
		s.renegotiate()
	}
}

// sendAnew takes t off the subscriber connection and sends it again, as a
// new stream with an SSRC of its own: for a stream the connection can no
// longer send as it was (downState.viaPion).
func (s *Session) sendAnew(t *Track) {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		s.log.Info("sending a track anew: its SRTP numbering moved on while it went the direct path", "track", t.id)
		s.stopSending(t)
		s.send(t)
	}()
}

// SetTrackSize records the largest size the subscriber displays track id
// at: it receives the smallest simulcast layer at least that large, and no
// video at all at 0x0 (a hidden tile). A track of one layer is sent or,
// at 0x0, not.
func (s *Session) SetTrackSize(id string, width, height int) error {
	s.mu.Lock()
	var d *downTrack
	for t, dt := range s.downs {
		if t.id == id {
			d = dt
		}
	}
	s.mu.Unlock()
	if d == nil {
		return stage.Errorf(stage.ErrNotFound, "no track "+strconv.Quote(id)+" is being received")
	}
	hidden := width == 0 && height == 0
	if d.sim != nil {
		d.sim.want.Store(uint64(width)<<32 | uint64(height))
		d.t.choose(time.Now().UnixNano())
		return nil
	}
	if d.paused.Swap(hidden) && !hidden {
		d.t.requestKeyframe() // shown again: start on a keyframe
	}
	return nil
}

// RestartICE sends the subscriber connection a new offer that restarts
// ICE: its client lost the connection's path (a network change, a
// firewall) and gathers anew, through TURN if need be, without leaving the
// meeting.
func (s *Session) RestartICE() error {
	s.mu.Lock()
	if s.closed || s.sub == nil {
		s.mu.Unlock()
		return stage.Errorf(stage.ErrBadRequest, "not subscribed")
	}
	s.restart = true
	s.mu.Unlock()
	s.renegotiate()
	return nil
}

func (s *Session) renegotiate() {
	select {
	case s.neg <- struct{}{}:
	default: // one is due already
	}
}

// negotiator sends the subscriber connection's offers, one at a time: the
// next waits for the answer to the last (or for answerTimeout).
func (s *Session) negotiator() {
	for {
		select {
		case <-s.done:
			return
		case <-s.neg:
		}
		if !s.offer() {
			continue
		}
		t := time.NewTimer(answerTimeout)
		select {
		case <-s.done:
			t.Stop()
			return
		case <-s.answered:
			t.Stop()
		case <-t.C:
			s.log.Info("no answer to the subscriber offer")
		}
	}
}

// offer creates and sends an offer for the subscriber connection, with
// the description of every track it carries.
func (s *Session) offer() bool {
	s.mu.Lock()
	pc := s.sub
	if s.closed || pc == nil || len(pc.GetTransceivers()) == 0 {
		s.mu.Unlock()
		return false
	}
	offer, err := pc.CreateOffer(&webrtc.OfferOptions{ICERestart: s.restart})
	s.restart = false
	var gathered <-chan struct{}
	if err == nil {
		gathered = webrtc.GatheringCompletePromise(pc)
		err = pc.SetLocalDescription(offer)
	}
	if err != nil {
		s.mu.Unlock()
		s.log.Warn("creating a subscriber offer", "err", err)
		return false
	}
	mids := map[*webrtc.RTPSender]string{}
	for _, tr := range pc.GetTransceivers() {
		if snd := tr.Sender(); snd != nil {
			mids[snd] = tr.Mid()
		}
	}
	tracks := make([]protocol.MediaTrack, 0, len(s.downs))
	for t, d := range s.downs {
		tracks = append(tracks, protocol.MediaTrack{TrackID: t.id, StreamID: t.pid, Mid: mids[d.sender],
			ParticipantID: t.pid, UserID: t.uid, Kind: t.kind.String(), Source: t.source})
	}
	s.mu.Unlock()
	waitGathered(gathered)
	select { // an answer to an earlier offer, late, does not count
	case <-s.answered:
	default:
	}
	s.signal(protocol.EventMediaOffer, protocol.MediaOffer{SDP: pc.LocalDescription().SDP, Tracks: tracks})
	return true
}

// Answer applies the client's answer (SDP) to the last offer.
func (s *Session) Answer(answerSDP string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed()
	}
	if s.sub == nil || s.sub.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
		return stage.Errorf(stage.ErrBadRequest, "there is no offer to answer")
	}
	if err := s.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answerSDP}); err != nil {
		return stage.Errorf(stage.ErrBadRequest, "unusable answer: "+err.Error())
	}
	for _, c := range s.subCands {
		s.sub.AddICECandidate(c)
	}
	s.subCands = nil
	select {
	case s.answered <- struct{}{}:
	default:
	}
	return nil
}
