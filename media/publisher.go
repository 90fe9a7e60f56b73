package media

import (
	"maps"
	"slices"
	"strconv"
	"strings"

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
	rids     map[string][]string // simulcast rids, by mid: fixed for the connection's life
	simTrack map[string]*Track   // the simulcast track of a mid, made by its first layer
}

func (s *Session) publisher() *webrtc.PeerConnection { return s.pub.Load() }

// maxSections bounds the media sections of one offer: a publisher sends at
// most one track of each of three sources, and a browser may keep a few
// stopped sections besides. Each section costs a transceiver.
const maxSections = 16

// sending returns the media sections of an offer the client sends on, by
// mid, with their sources and simulcast rids, or an error naming what is
// wrong with them.
func sending(offer *sdp.SessionDescription, named map[string]protocol.Source) (map[string]protocol.Source, map[string][]string, error) {
	if n := len(offer.MediaDescriptions); n > maxSections {
		return nil, nil, stage.Errorf(stage.ErrBadRequest, "the offer has "+strconv.Itoa(n)+" media sections, more than "+strconv.Itoa(maxSections))
	}
	out := map[string]protocol.Source{}
	rids := map[string][]string{}
	count := map[protocol.Source]int{}
	for _, md := range offer.MediaDescriptions {
		kind := md.MediaName.Media
		if kind == "application" {
			return nil, nil, stage.Errorf(stage.ErrBadRequest, "data channels are not part of the protocol")
		}
		if kind != "audio" && kind != "video" {
			return nil, nil, stage.Errorf(stage.ErrBadRequest, "media section of kind "+kind+" is not supported")
		}
		if _, ok := md.Attribute("recvonly"); ok {
			continue
		}
		if _, ok := md.Attribute("inactive"); ok || md.MediaName.Port.Value == 0 {
			continue
		}
		mid, _ := md.Attribute("mid")
		if mid == "" {
			return nil, nil, stage.Errorf(stage.ErrBadRequest, "a media section has no mid")
		}
		src, ok := named[mid]
		if !ok {
			src = protocol.SourceCamera
			if kind == "audio" {
				src = protocol.SourceMicrophone
			}
		}
		if src.Kind() != kind {
			return nil, nil, stage.Errorf(stage.ErrBadRequest, "mid "+mid+" is "+kind+", not "+string(src))
		}
		count[src]++
		if count[src] > 1 {
			return nil, nil, stage.Errorf(stage.ErrPermissionDenied, "more than one "+string(src)+" track: a participant publishes at most one of each source")
		}
		out[mid] = src
		r, err := simulcastRIDs(md, mid, kind)
		if err != nil {
			return nil, nil, err
		}
		if len(r) > 0 {
			rids[mid] = r
		}
	}
	for mid := range named {
		if _, ok := out[mid]; !ok {
			return nil, nil, stage.Errorf(stage.ErrBadRequest, "sources names mid "+mid+", which the offer does not send on")
		}
	}
	return out, rids, nil
}

// simulcastRIDs returns the rids a media section sends (a=rid:… send):
// at most maxLayers, distinct, of letters, digits, - and _, on video only.
func simulcastRIDs(md *sdp.MediaDescription, mid, kind string) ([]string, error) {
	var rids []string
	for _, a := range md.Attributes {
		if a.Key != "rid" {
			continue
		}
		f := strings.Fields(a.Value)
		if len(f) < 2 || f[1] != "send" {
			continue
		}
		id := f[0]
		if id == "" || len(id) > 16 || strings.IndexFunc(id, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) >= 0 {
			return nil, stage.Errorf(stage.ErrBadRequest, "mid "+mid+": rid "+strconv.Quote(id)+" is not 1-16 letters, digits, - or _")
		}
		if slices.Contains(rids, id) {
			return nil, stage.Errorf(stage.ErrBadRequest, "mid "+mid+": rid "+id+" twice")
		}
		rids = append(rids, id)
	}
	if len(rids) > maxLayers {
		return nil, stage.Errorf(stage.ErrBadRequest, "mid "+mid+": "+strconv.Itoa(len(rids))+" simulcast layers, more than "+strconv.Itoa(maxLayers))
	}
	if len(rids) > 0 && kind != "video" {
		return nil, stage.Errorf(stage.ErrBadRequest, "mid "+mid+": simulcast is for video")
	}
	return rids, nil
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
	srcs, rids, err := sending(parsed, sources)
	if err != nil {
		return "", err
	}
	for _, src := range srcs {
		if !allows(allowed, src) {
			return "", stage.Errorf(stage.ErrPermissionDenied, "the preset does not allow publishing "+string(src))
		}
	}
	pc, gathered, err := s.answerPublisher(offer, srcs, rids)
	if err != nil {
		return "", err
	}
	waitGathered(gathered)
	return pc.LocalDescription().SDP, nil
}

// answerPublisher applies an offer to the publisher connection (made if
// there is none) and sets its answer; the answer is complete when gathered
// is closed.
func (s *Session) answerPublisher(offer webrtc.SessionDescription, srcs map[string]protocol.Source, rids map[string][]string) (*webrtc.PeerConnection, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errClosed()
	}
	pc, fresh := s.pubPC, s.pubPC == nil
	if !fresh {
		for mid, r := range rids {
			if old, ok := s.rids[mid]; ok && !slices.Equal(old, r) {
				return nil, nil, stage.Errorf(stage.ErrBadRequest, "mid "+mid+": the simulcast rids changed during the call")
			}
		}
	}
	if fresh {
		var err error
		if pc, err = s.room.sfu.pubAPI.NewPeerConnection(webrtc.Configuration{}); err != nil {
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
		s.rids, s.simTrack = map[string][]string{}, map[string]*Track{}
	}
	maps.Copy(s.rids, rids)
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
		if remote.RID() != "" {
			s.publishLayer(mid, src, remote, recv)
			return
		}
		t := newTrack(s, remote, recv, src)
		if !s.publishOrRefuse(t, recv) {
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

// publishOrRefuse publishes t, or, when the room refuses it (not on stage,
// a source the preset does not allow, one of the source already), stops
// it and its receiver and says so.
func (s *Session) publishOrRefuse(t *Track, recv *webrtc.RTPReceiver) bool {
	if err := s.room.publish(t); err != nil {
		s.log.Info("track refused", "source", t.source, "err", err)
		t.stop()
		t.closeCache()
		recv.Stop()
		return false
	}
	return true
}

// publishLayer takes a simulcast layer of media section mid: the first
// makes (and publishes) the track, the others join it as layers.
func (s *Session) publishLayer(mid string, src protocol.Source, remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	s.mu.Lock()
	if s.simTrack == nil {
		s.mu.Unlock()
		return
	}
	t, first := s.simTrack[mid], false
	if t == nil || t.stopped.Load() {
		t, first = newTrack(s, remote, recv, src), true
		s.simTrack[mid] = t
	}
	s.mu.Unlock()
	l := t.addLayer(remote)
	if l == nil {
		s.log.Info("simulcast layer refused: too many, or its rid twice", "rid", remote.RID())
		return
	}
	if first {
		if !s.publishOrRefuse(t, recv) {
			return
		}
		s.log.Debug("simulcast track published", "source", src, "codec", t.codec.MimeType)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			t.chooser()
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t.forwardLayer(s.room, l)
	}()
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
