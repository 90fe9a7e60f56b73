package media

import (
	"maps"
	"strconv"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// publisherSide is a session's publishing: the connection its client
// offers, with the client's own tracks. Guarded by Session.mu.
type publisherSide struct {
	pubPC    *webrtc.PeerConnection
	pubCands []webrtc.ICECandidateInit // before the publisher's offer
	sources  map[string]protocol.Source
}

func (s *Session) publisher() *webrtc.PeerConnection { return s.pub.Load() }

// maxSections bounds the media sections of one offer: a publisher sends at
// most one track of each of three sources, and a browser may keep a few
// stopped sections besides. Each section costs a transceiver.
const maxSections = 16

// sending returns the media sections of an offer the client sends on, by
// mid, with their sources, or an error naming what is wrong with them.
func sending(offer *sdp.SessionDescription, named map[string]protocol.Source) (map[string]protocol.Source, error) {
	if n := len(offer.MediaDescriptions); n > maxSections {
		return nil, stage.Errorf(stage.ErrBadRequest, "the offer has "+strconv.Itoa(n)+" media sections, more than "+strconv.Itoa(maxSections))
	}
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

// Publish answers the publisher connection's offer (SDP), if the
// participant may publish every track it sends; sources names the source of
// each media section by mid (by default the camera and the microphone). It
// returns the answer.
func (s *Session) Publish(offerSDP string, sources map[string]protocol.Source) (string, error) {
	allowed, ok := s.room.publishing(s.pid)
	if !ok {
		return "", stage.Errorf(stage.ErrInvalidStageStatus, "only participants on the stage publish media")
	}
	offer := webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP}
	parsed, err := offer.Unmarshal()
	if err != nil {
		return "", stage.Errorf(stage.ErrBadRequest, "malformed sdp: "+err.Error())
	}
	srcs, err := sending(parsed, sources)
	if err != nil {
		return "", err
	}
	for _, src := range srcs {
		if !allows(allowed, src) {
			return "", stage.Errorf(stage.ErrPermissionDenied, "the preset does not allow publishing "+string(src))
		}
	}
	pc, gathered, err := s.answerPublisher(offer, srcs)
	if err != nil {
		return "", err
	}
	waitGathered(gathered)
	return pc.LocalDescription().SDP, nil
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
	s.room.stopOwn(s)
	pc.Close() // the tracks' goroutines end and unpublish them
	if reason != "" {
		s.signal(protocol.EventMediaStopped, protocol.MediaStopped{Reason: reason})
	}
}

// Unpublish stops every track the client publishes and closes its
// publisher connection.
func (s *Session) Unpublish() {
	s.mu.Lock()
	pc := s.pubPC
	s.mu.Unlock()
	s.dropPublisher(pc, "")
}

// stoppedByServer tells the client its tracks were stopped, and closes its
// publisher connection if it may publish nothing any more.
func (s *Session) stoppedByServer(reason string, tracks []*Track, closePub bool) {
	if closePub {
		s.Unpublish()
	}
	srcs := make([]protocol.Source, len(tracks))
	for i, t := range tracks {
		srcs[i] = t.source
	}
	s.signal(protocol.EventMediaStopped, protocol.MediaStopped{Reason: reason, Sources: srcs})
}
