package media

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/sdp/v3"
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

// Signal sends a media event (protocol.EventMediaOffer, EventMediaStopped)
// to the session's client. It must not block.
type Signal func(event string, data any)

// Session is the media of one realtime connection: its publisher and
// subscriber peer connections. A session ends with its connection.
type Session struct {
	room   *Room
	pid    string
	uid    string
	signal Signal
	log    *slog.Logger

	pub atomic.Pointer[webrtc.PeerConnection] // for keyframe requests, without the lock

	mu       sync.Mutex
	closed   bool
	pubPC    *webrtc.PeerConnection
	pubCands []webrtc.ICECandidateInit // before the publisher's offer
	sources  map[string]protocol.Source
	sub      *webrtc.PeerConnection
	subCands []webrtc.ICECandidateInit // before the subscriber's answer
	downs    map[*Track]*downTrack     // changed under Room.mu and mu

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
		log:     s.log.With("meeting", meetingID, "participant", pid),
		sources: map[string]protocol.Source{}, downs: map[*Track]*downTrack{},
		neg: make(chan struct{}, 1), answered: make(chan struct{}, 1), done: make(chan struct{})}
	sess.room.attach(sess)
	return sess
}

// Handle executes one media request (a protocol.Method* of media, with
// the params protocol.DecodeRequest returned).
func (s *Session) Handle(method string, params any) (any, error) {
	switch method {
	case protocol.MethodPublish:
		return s.publish(params.(protocol.PublishParams))
	case protocol.MethodUnpublish:
		s.unpublish()
		return protocol.Empty{}, nil
	case protocol.MethodSubscribe:
		return protocol.Empty{}, s.subscribe()
	case protocol.MethodAnswer:
		return protocol.Empty{}, s.answer(params.(protocol.SDPParams))
	case protocol.MethodCandidate:
		return protocol.Empty{}, s.candidate(params.(protocol.CandidateParams))
	}
	return nil, stage.Errorf(stage.ErrBadRequest, "unknown method "+method)
}

func (s *Session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Session) subscribed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sub != nil
}

func (s *Session) publisher() *webrtc.PeerConnection { return s.pub.Load() }

func errClosed() error { return stage.Errorf(stage.ErrNotFound, "the media session has ended") }

// sending returns the media sections of an offer the client sends on, by
// mid, with their sources, or an error naming what is wrong with them.
func sending(offer *sdp.SessionDescription, named map[string]protocol.Source) (map[string]protocol.Source, error) {
	out := map[string]protocol.Source{}
	count := map[protocol.Source]int{}
	for _, md := range offer.MediaDescriptions {
		kind := md.MediaName.Media
		if kind == "application" {
			return nil, stage.Errorf(stage.ErrBadRequest, "data channels are not part of the protocol")
		}
		if kind != "audio" && kind != "video" {
			return nil, stage.Errorf(stage.ErrBadRequest, "media section of kind "+kind+" is not supported")
		}
		if _, ok := md.Attribute("recvonly"); ok {
			continue
		}
		if _, ok := md.Attribute("inactive"); ok || md.MediaName.Port.Value == 0 {
			continue
		}
		mid, _ := md.Attribute("mid")
		if mid == "" {
			return nil, stage.Errorf(stage.ErrBadRequest, "a media section has no mid")
		}
		src, ok := named[mid]
		if !ok {
			src = protocol.SourceCamera
			if kind == "audio" {
				src = protocol.SourceMicrophone
			}
		}
		if src.Kind() != kind {
			return nil, stage.Errorf(stage.ErrBadRequest, "mid "+mid+" is "+kind+", not "+string(src))
		}
		count[src]++
		if count[src] > 1 {
			return nil, stage.Errorf(stage.ErrPermissionDenied, "more than one "+string(src)+" track: a participant publishes at most one of each source")
		}
		out[mid] = src
	}
	for mid := range named {
		if _, ok := out[mid]; !ok {
			return nil, stage.Errorf(stage.ErrBadRequest, "sources names mid "+mid+", which the offer does not send on")
		}
	}
	return out, nil
}

// publish answers the publisher connection's offer, if the participant may
// publish every track it offers.
func (s *Session) publish(p protocol.PublishParams) (any, error) {
	allowed, ok := s.room.publishing(s.pid)
	if !ok {
		return nil, stage.Errorf(stage.ErrInvalidStageStatus, "only participants on the stage publish media")
	}
	offer := webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: p.SDP}
	parsed, err := offer.Unmarshal()
	if err != nil {
		return nil, stage.Errorf(stage.ErrBadRequest, "malformed sdp: "+err.Error())
	}
	srcs, err := sending(parsed, p.Sources)
	if err != nil {
		return nil, err
	}
	for _, src := range srcs {
		if !allows(allowed, src) {
			return nil, stage.Errorf(stage.ErrPermissionDenied, "the preset does not allow publishing "+string(src))
		}
	}

	pc, gathered, err := s.answerPublisher(offer, srcs)
	if err != nil {
		return nil, err
	}
	waitGathered(gathered)
	return protocol.SDPParams{SDP: pc.LocalDescription().SDP}, nil
}

// answerPublisher applies an offer to the publisher connection (made if
// there is none) and sets its answer; the answer is complete when gathered
// is closed.
func (s *Session) answerPublisher(offer webrtc.SessionDescription, srcs map[string]protocol.Source) (*webrtc.PeerConnection, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errClosed()
	}
	pc, fresh := s.pubPC, s.pubPC == nil
	if fresh {
		var err error
		if pc, err = s.room.sfu.api.NewPeerConnection(webrtc.Configuration{}); err != nil {
			return nil, nil, stage.Errorf(stage.ErrInternal, "creating a peer connection: "+err.Error())
		}
		s.watchPublisher(pc)
	}
	if err := pc.SetRemoteDescription(offer); err != nil {
		if fresh {
			pc.Close()
		}
		return nil, nil, stage.Errorf(stage.ErrBadRequest, "unusable offer: "+err.Error())
	}
	if fresh {
		s.pubPC = pc
		s.pub.Store(pc)
	}
	clear(s.sources)
	maps.Copy(s.sources, srcs)
	for _, c := range s.pubCands {
		pc.AddICECandidate(c)
	}
	s.pubCands = nil
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return nil, nil, stage.Errorf(stage.ErrBadRequest, "cannot answer the offer: "+err.Error())
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return nil, nil, stage.Errorf(stage.ErrBadRequest, "cannot answer the offer: "+err.Error())
	}
	return pc, gathered, nil
}

func waitGathered(ch <-chan struct{}) {
	t := time.NewTimer(gatherTimeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// watchPublisher installs the publisher connection's handlers.
func (s *Session) watchPublisher(pc *webrtc.PeerConnection) {
	pc.OnTrack(func(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		mid := ""
		if tr := recv.RTPTransceiver(); tr != nil {
			mid = tr.Mid()
		}
		s.mu.Lock()
		src, ok := s.sources[mid]
		s.mu.Unlock()
		if !ok {
			src = protocol.SourceCamera
			if remote.Kind() == webrtc.RTPCodecTypeAudio {
				src = protocol.SourceMicrophone
			}
		}
		t := newTrack(s, remote, recv, src)
		if err := s.room.publish(t); err != nil {
			s.log.Info("track refused", "source", src, "err", err)
			t.stop()
			t.closeCache()
			recv.Stop()
			return
		}
		s.log.Debug("track published", "source", src, "codec", t.codec.MimeType)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			t.forward(s.room)
		}()
	})
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateFailed {
			s.log.Info("publisher connection failed")
			s.dropPublisher(pc, protocol.StoppedFailed)
		}
	})
}

// dropPublisher closes the publisher connection pc, if it is still the
// session's, stopping its tracks; reason, if set, is told to the client.
func (s *Session) dropPublisher(pc *webrtc.PeerConnection, reason string) {
	s.mu.Lock()
	if s.pubPC != pc || pc == nil {
		s.mu.Unlock()
		return
	}
	s.pubPC = nil
	s.pub.Store(nil)
	s.pubCands = nil
	s.mu.Unlock()
	s.room.mu.Lock()
	for _, t := range s.room.tracks {
		if t.sess == s {
			t.stop()
		}
	}
	s.room.mu.Unlock()
	pc.Close() // the tracks' goroutines end and unpublish them
	if reason != "" {
		s.signal(protocol.EventMediaStopped, protocol.MediaStopped{Reason: reason})
	}
}

// unpublish: the client stops publishing.
func (s *Session) unpublish() {
	s.mu.Lock()
	pc := s.pubPC
	s.mu.Unlock()
	s.dropPublisher(pc, "")
}

// stoppedByServer tells the client its tracks were stopped, and closes its
// publisher connection if it may publish nothing any more.
func (s *Session) stoppedByServer(reason string, tracks []*Track, closePub bool) {
	if closePub {
		s.mu.Lock()
		pc := s.pubPC
		s.mu.Unlock()
		s.dropPublisher(pc, "")
	}
	srcs := make([]protocol.Source, len(tracks))
	for i, t := range tracks {
		srcs[i] = t.source
	}
	s.signal(protocol.EventMediaStopped, protocol.MediaStopped{Reason: reason, Sources: srcs})
}

// subscribe opens the subscriber connection, with every track published
// so far; the offer follows as an event.
func (s *Session) subscribe() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed()
	}
	if s.sub != nil {
		s.mu.Unlock()
		return stage.Errorf(stage.ErrBadRequest, "already subscribed")
	}
	pc, err := s.room.sfu.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		s.mu.Unlock()
		return stage.Errorf(stage.ErrInternal, "creating a peer connection: "+err.Error())
	}
	s.sub = pc
	s.mu.Unlock()
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			// Whatever was sent before is lost: start every video
			// with a keyframe.
			s.room.mu.Lock()
			s.mu.Lock()
			for t := range s.downs {
				t.requestKeyframe()
			}
			s.mu.Unlock()
			s.room.mu.Unlock()
		}
	})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.negotiator()
	}()
	s.room.mu.Lock()
	for _, t := range s.room.tracks {
		if t.sess != s {
			s.subscribeLocked(t)
		}
	}
	s.room.mu.Unlock()
	return nil
}

// subscribeLocked adds t to the subscriber connection. Room.mu is held.
func (s *Session) subscribeLocked(t *Track) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.sub == nil || s.downs[t] != nil || t.stopped.Load() {
		return
	}
	d := &downTrack{t: t}
	sender, err := s.sub.AddTrack(d)
	if err != nil {
		s.log.Warn("adding a track to a subscriber", "err", err)
		return
	}
	d.sender = sender
	s.downs[t] = d
	downs := append(append([]*downTrack(nil), *t.downs.Load()...), d)
	t.downs.Store(&downs)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		d.readRTCP()
	}()
	s.renegotiate()
}

// unsubscribeLocked takes t off the subscriber connection. Room.mu is held.
func (s *Session) unsubscribeLocked(t *Track) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.downs[t]
	if d == nil {
		return
	}
	delete(s.downs, t)
	old := *t.downs.Load()
	downs := make([]*downTrack, 0, len(old))
	for _, o := range old {
		if o != d {
			downs = append(downs, o)
		}
	}
	t.downs.Store(&downs)
	if !s.closed {
		s.sub.RemoveTrack(d.sender)
		s.renegotiate()
	}
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
	offer, err := pc.CreateOffer(nil)
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

// answer applies the client's answer to the last offer.
func (s *Session) answer(p protocol.SDPParams) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed()
	}
	if s.sub == nil || s.sub.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
		return stage.Errorf(stage.ErrBadRequest, "there is no offer to answer")
	}
	if err := s.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: p.SDP}); err != nil {
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

// candidate adds a client's ICE candidate to one of its connections.
func (s *Session) candidate(p protocol.CandidateParams) error {
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

// Close ends the session: its tracks stop and leave every subscriber, and
// both peer connections close.
func (s *Session) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	pub, sub := s.pubPC, s.sub
	s.pubPC = nil
	s.pub.Store(nil)
	s.mu.Unlock()
	for _, t := range s.room.detach(s) {
		s.room.unpublish(t)
	}
	s.room.mu.Lock()
	s.mu.Lock()
	subscribed := slices.Collect(maps.Keys(s.downs))
	s.mu.Unlock()
	for _, t := range subscribed {
		s.unsubscribeLocked(t)
	}
	s.room.mu.Unlock()
	close(s.done)
	if pub != nil {
		pub.Close()
	}
	if sub != nil {
		sub.Close()
	}
	s.wg.Wait()
}
