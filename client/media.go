package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/internal/pionlog"
	"github.com/cocmd/cocmd/protocol"
)

// Source is what a track carries: a camera, a microphone or a screen.
type Source = protocol.Source

// The sources a preset's media permissions speak of.
const (
	SourceMicrophone  = protocol.SourceMicrophone
	SourceCamera      = protocol.SourceCamera
	SourceScreenshare = protocol.SourceScreenshare
)

// LocalTrack is a track to publish, and what it carries.
type LocalTrack struct {
	Track  webrtc.TrackLocal
	Source Source
	// Layers, if set, are simulcast: the same video at other qualities,
	// sent beside Track as encodings of one media section. Track and each
	// layer then need a rid of their own (webrtc.WithRTPStreamID), at most
	// three in all; the server sends each subscriber the one that suits it.
	Layers []webrtc.TrackLocal
	// OnLayers, if set, is called with the rids of the layers someone
	// receives when that changes: the others may stop being encoded until
	// they are needed again (dynacast). It runs on the client's reader:
	// it must not block.
	OnLayers func(active []string)
	// OnKeyframeRequest, if set, is called when the server asks for a
	// keyframe (a new subscriber, or one that lost the picture).
	OnKeyframeRequest func()
}

// RemoteTrack is a track of another participant, as received. Read its
// packets with ReadRTP (from the embedded *webrtc.TrackRemote).
type RemoteTrack struct {
	*webrtc.TrackRemote
	ParticipantID string
	UserID        string
	Source        Source
	Receiver      *webrtc.RTPReceiver

	pc *webrtc.PeerConnection
	m  *Meeting
}

// SetSize tells the server the largest size the track is displayed at,
// in pixels: of a simulcast track, it sends the smallest layer at least
// that large; at 0x0 (a hidden tile) it sends no video at all, until a
// size is set again.
func (t *RemoteTrack) SetSize(ctx context.Context, width, height int) error {
	return t.m.call(ctx, protocol.MethodSetTrackSize, protocol.TrackSizeParams{TrackID: t.ID(), Width: width, Height: height}, nil)
}

// RequestKeyframe asks the track's publisher, through the server, for a
// keyframe (a picture loss indication): for a decoder that lost the
// picture. The server merges requests, at most one per 250 ms.
func (t *RemoteTrack) RequestKeyframe() error {
	return t.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(t.SSRC())}})
}

// TrackAdded: a track of a participant on stage started arriving.
type TrackAdded struct{ Track *RemoteTrack }

// TrackRemoved: a track stopped (its participant left the stage, was
// kicked, stopped publishing or left); no more of its packets arrive.
type TrackRemoved struct{ Track *RemoteTrack }

// LayersUpdate: of this participant's simulcast track of Source, the
// layers (rids) someone receives changed; the others are not needed now.
type LayersUpdate struct {
	Source Source
	Active []string
}

// Name implements Event.
func (LayersUpdate) Name() string { return "layersUpdate" }

// ActiveSpeaker: who speaks changed. ParticipantID is the active speaker
// (the loudest who speaks, held for a second against others), Speaking
// everyone who speaks now.
type ActiveSpeaker struct {
	ParticipantID string
	Speaking      []string
}

// Name implements Event.
func (ActiveSpeaker) Name() string { return "activeSpeaker" }

// PublishingStopped: the server stopped tracks this participant published,
// because of Reason (protocol.StoppedStage: no longer on stage;
// StoppedPermissions: the preset changed; StoppedFailed: the connection
// failed). Sources lists them; empty means all.
type PublishingStopped struct {
	Reason  string
	Sources []Source
}

// Name implements Event.
func (TrackAdded) Name() string { return "trackAdded" }

// Name implements Event.
func (TrackRemoved) Name() string { return "trackRemoved" }

// Name implements Event.
func (PublishingStopped) Name() string { return "publishingStopped" }

// Media publishes this participant's tracks and receives the others'.
type Media struct {
	m   *Meeting
	api *webrtc.API

	mu         sync.Mutex
	pub        *webrtc.PeerConnection
	pubSources map[string]Source // of pub's media sections, by mid
	local      []LocalTrack      // published, to publish again after a reconnect
	sub        *webrtc.PeerConnection
	subscribed bool
	described  map[string]protocol.MediaTrack // track id -> description, from the last offer
	remote     map[string]*RemoteTrack        // track id -> track
	speaker    protocol.ActiveSpeaker         // the last media.activeSpeaker
	offers     chan protocol.MediaOffer
	stop       chan struct{} // closed when the subscription ends
	stopCtx    context.CancelFunc
	wg         sync.WaitGroup

	// Reconnects are handled in order, one at a time, off the reader.
	lifeMu      sync.Mutex
	lifeQ       []func()
	lifeRunning bool
}

// later runs fn after the lifecycle work queued before it.
func (md *Media) later(fn func()) {
	md.lifeMu.Lock()
	defer md.lifeMu.Unlock()
	md.lifeQ = append(md.lifeQ, fn)
	if !md.lifeRunning {
		md.lifeRunning = true
		go md.lifeWorker()
	}
}

func (md *Media) lifeWorker() {
	for {
		md.lifeMu.Lock()
		if len(md.lifeQ) == 0 {
			md.lifeRunning = false
			md.lifeMu.Unlock()
			return
		}
		fn := md.lifeQ[0]
		md.lifeQ = md.lifeQ[1:]
		md.lifeMu.Unlock()
		fn()
	}
}

// NewWebRTCAPI returns the pion API the client uses when Options.WebRTC is
// nil: the default codecs and interceptors, no mDNS, and loopback
// candidates (so a server on 127.0.0.1 is reachable), over UDP and TCP.
// Pion logs to log (nil discards).
func NewWebRTCAPI(log *slog.Logger) (*webrtc.API, error) {
	// UDP first; TCP (active candidates, toward the server's ICE-TCP)
	// when UDP does not get through.
	return NewWebRTCAPIOn(log, webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6)
}

// NewWebRTCAPIOn is NewWebRTCAPI with host candidates of the given network
// types only: a client whose network blocks UDP, say, or a test or a
// benchmark of one path. (Relay candidates come from the TURN servers,
// whatever these are.)
func NewWebRTCAPIOn(log *slog.Logger, networks ...webrtc.NetworkType) (*webrtc.API, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.LoggerFactory = pionlog.Factory(log)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes(networks)
	// Audio levels (a publisher that sets them tells the server who
	// speaks; mediasource.OpenOggLevels does).
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// gathered sets desc as pc's local description and waits for its
// candidates: the SDP sent then holds them all.
func gathered(ctx context.Context, pc *webrtc.PeerConnection, desc webrtc.SessionDescription) error {
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish sends tracks to the meeting. The participant must be allowed to
// publish them now: ON_STAGE in a webinar (else the error matches
// ErrInvalidStageStatus), with a preset that allows each source (else
// ErrPermissionDenied). It replaces what was published before. When the
// server stops the tracks (a kick, leave, a preset change), a
// PublishingStopped event says so.
func (md *Media) Publish(ctx context.Context, tracks ...LocalTrack) error {
	if len(tracks) == 0 {
		return errors.New("client: Publish needs tracks")
	}
	md.Unpublish(ctx)
	pc, err := md.api.NewPeerConnection(md.m.rtcConfig())
	if err != nil {
		return err
	}
	sources := map[int]Source{}
	var trs []*webrtc.RTPTransceiver
	var simulcast []ridsOf
	for i, t := range tracks {
		first := t.Track
		var rids []*ridTrack
		if len(t.Layers) > 0 {
			// Simulcast: every packet names its media section and layer.
			rt := &ridTrack{TrackLocal: t.Track}
			first, rids = rt, append(rids, rt)
		}
		tr, err := pc.AddTransceiverFromTrack(first, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			pc.Close()
			return err
		}
		for _, l := range t.Layers {
			rt := &ridTrack{TrackLocal: l}
			rids = append(rids, rt)
			if err := tr.Sender().AddEncoding(rt); err != nil {
				pc.Close()
				return fmt.Errorf("client: simulcast layer %q: %w", l.RID(), err)
			}
		}
		simulcast = append(simulcast, ridsOf{tr, rids})
		sources[i] = t.Source
		trs = append(trs, tr)
		snd, onKey := tr.Sender(), t.OnKeyframeRequest
		read := []func() ([]rtcp.Packet, error){func() ([]rtcp.Packet, error) { p, _, err := snd.ReadRTCP(); return p, err }}
		for _, l := range t.Layers {
			rid := l.RID()
			read = append(read, func() ([]rtcp.Packet, error) { p, _, err := snd.ReadSimulcastRTCP(rid); return p, err })
		}
		for _, readRTCP := range read {
			go func() { // the interceptors (NACK responder, reports) need RTCP read
				for {
					pkts, err := readRTCP()
					if err != nil {
						return
					}
					for _, p := range pkts {
						switch p.(type) {
						case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
							if onKey != nil {
								onKey()
							}
						}
					}
				}
			}()
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = gathered(ctx, pc, offer)
	}
	if err != nil {
		pc.Close()
		return err
	}
	for _, s := range simulcast { // their mids are known now
		for _, rt := range s.tracks {
			rt.setMid(s.tr.Mid())
		}
	}
	p := protocol.PublishParams{SDP: pc.LocalDescription().SDP, Sources: map[string]Source{}}
	for i, tr := range trs {
		p.Sources[tr.Mid()] = sources[i]
	}
	var ans protocol.SDPParams
	if err := md.m.call(ctx, protocol.MethodPublish, p, &ans); err != nil {
		pc.Close()
		return err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans.SDP}); err != nil {
		pc.Close()
		return err
	}
	md.mu.Lock()
	md.pub, md.local, md.pubSources = pc, tracks, p.Sources
	md.mu.Unlock()
	pc.OnICEConnectionStateChange(func(st webrtc.ICEConnectionState) {
		if lost(st) {
			md.later(func() { md.restartPublisher(pc) })
		}
	})
	return nil
}

// lost reports whether a connection in ICE state st lost its path: then
// the client restarts ICE.
func lost(st webrtc.ICEConnectionState) bool {
	return st == webrtc.ICEConnectionStateDisconnected || st == webrtc.ICEConnectionStateFailed
}

// restartPublisher restarts the ICE of publisher connection pc, if it is
// still the one and still without a path: a new offer, gathered afresh
// (through the TURN servers of the latest credentials), sent with the same
// sources. The server keeps the tracks; they flow again once ICE connects.
func (md *Media) restartPublisher(pc *webrtc.PeerConnection) {
	md.mu.Lock()
	sources := md.pubSources
	current := md.pub == pc
	md.mu.Unlock()
	if !current || !lost(pc.ICEConnectionState()) {
		return
	}
	md.m.log.Info("restarting the publisher connection's ICE", "state", pc.ICEConnectionState())
	ctx, cancel := context.WithTimeout(md.m.ctx, 20*time.Second)
	defer cancel()
	pc.SetConfiguration(md.m.rtcConfig())
	offer, err := pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err == nil {
		err = gathered(ctx, pc, offer)
	}
	var ans protocol.SDPParams
	if err == nil {
		err = md.m.call(ctx, protocol.MethodPublish, protocol.PublishParams{SDP: pc.LocalDescription().SDP, Sources: sources}, &ans)
	}
	if err == nil {
		err = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans.SDP})
	}
	if err != nil {
		md.m.log.Warn("restarting the publisher connection's ICE", "err", err)
	}
}

// restartSubscriber asks the server for an offer that restarts the ICE of
// subscriber connection pc, if it is still the one and still without a
// path.
func (md *Media) restartSubscriber(pc *webrtc.PeerConnection) {
	md.mu.Lock()
	current := md.sub == pc
	md.mu.Unlock()
	if !current || !lost(pc.ICEConnectionState()) {
		return
	}
	md.m.log.Info("restarting the subscriber connection's ICE", "state", pc.ICEConnectionState())
	pc.SetConfiguration(md.m.rtcConfig())
	ctx, cancel := context.WithTimeout(md.m.ctx, 20*time.Second)
	defer cancel()
	if err := md.m.call(ctx, protocol.MethodRestartICE, nil, nil); err != nil {
		md.m.log.Warn("restarting the subscriber connection's ICE", "err", err)
	}
}

// setICEServers gives both connections the latest ICE servers, for their
// next ICE restart.
func (md *Media) setICEServers() {
	cfg := md.m.rtcConfig()
	md.mu.Lock()
	pcs := []*webrtc.PeerConnection{md.pub, md.sub}
	md.mu.Unlock()
	for _, pc := range pcs {
		if pc != nil {
			if err := pc.SetConfiguration(cfg); err != nil {
				md.m.log.Warn("updating the ICE servers", "err", err)
			}
		}
	}
}

// Unpublish stops publishing.
func (md *Media) Unpublish(ctx context.Context) error {
	md.mu.Lock()
	pc := md.pub
	md.pub, md.local = nil, nil
	md.mu.Unlock()
	if pc == nil {
		return nil
	}
	pc.Close()
	return md.m.call(ctx, protocol.MethodUnpublish, nil, nil)
}

// Subscribe starts receiving the tracks of everyone on stage: a TrackAdded
// event for each, now and as others join the stage, and TrackRemoved when
// one ends. The subscription survives reconnects.
func (md *Media) Subscribe(ctx context.Context) error {
	md.mu.Lock()
	if md.subscribed {
		md.mu.Unlock()
		return nil
	}
	md.subscribed = true
	md.mu.Unlock()
	if err := md.startSubscriber(ctx); err != nil {
		md.mu.Lock()
		md.subscribed = false
		md.mu.Unlock()
		return err
	}
	return nil
}

func (md *Media) startSubscriber(ctx context.Context) error {
	pc, err := md.api.NewPeerConnection(md.m.rtcConfig())
	if err != nil {
		return err
	}
	pc.OnICEConnectionStateChange(func(st webrtc.ICEConnectionState) {
		if lost(st) {
			md.later(func() { md.restartSubscriber(pc) })
		}
	})
	offers, stop := make(chan protocol.MediaOffer, 16), make(chan struct{})
	subCtx, cancel := context.WithCancel(md.m.ctx)
	md.mu.Lock()
	md.sub, md.offers, md.stop, md.stopCtx = pc, offers, stop, cancel
	md.described = map[string]protocol.MediaTrack{}
	md.mu.Unlock()
	pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) { md.onTrack(pc, t, r) })
	md.wg.Add(1)
	go func() {
		defer md.wg.Done()
		md.answerOffers(subCtx, pc, offers, stop)
	}()
	if err := md.m.call(ctx, protocol.MethodSubscribe, nil, nil); err != nil {
		md.endSubscriber()
		return err
	}
	return nil
}

// endSubscriber closes the subscriber connection; every track is removed.
func (md *Media) endSubscriber() {
	md.mu.Lock()
	pc, stop, cancel := md.sub, md.stop, md.stopCtx
	md.sub, md.offers, md.stop, md.stopCtx = nil, nil, nil, nil
	removed := md.remote
	md.remote = nil
	md.mu.Unlock()
	if pc == nil {
		return
	}
	close(stop)
	cancel()
	pc.Close()
	md.wg.Wait()
	for _, t := range removed {
		md.m.events.push(TrackRemoved{Track: t})
	}
}

// event takes a media event from the reader; it never blocks.
func (md *Media) event(msg protocol.Message) {
	switch msg.Event {
	case protocol.EventMediaOffer:
		var o protocol.MediaOffer
		if err := json.Unmarshal(msg.Data, &o); err != nil {
			md.m.log.Warn("ignoring a malformed media offer", "err", err)
			return
		}
		md.mu.Lock()
		ch := md.offers
		md.mu.Unlock()
		if ch == nil {
			return
		}
		select {
		case ch <- o:
		default: // offers come one at a time, each after the last answer
			md.m.log.Warn("dropping a media offer: too many pending")
		}
	case protocol.EventMediaStopped:
		var s protocol.MediaStopped
		if err := json.Unmarshal(msg.Data, &s); err != nil {
			return
		}
		md.mu.Lock()
		pc := md.pub
		if len(s.Sources) == 0 || s.Reason == protocol.StoppedStage || s.Reason == protocol.StoppedFailed {
			md.pub, md.local, md.pubSources = nil, nil, nil
		} else {
			pc = nil
		}
		md.mu.Unlock()
		if pc != nil {
			go pc.Close()
		}
		md.m.events.push(PublishingStopped{Reason: s.Reason, Sources: s.Sources})
	case protocol.EventTrackEnded:
		var e protocol.TrackEnded
		if err := json.Unmarshal(msg.Data, &e); err != nil {
			return
		}
		md.mu.Lock()
		t := md.remote[e.TrackID]
		delete(md.remote, e.TrackID)
		md.mu.Unlock()
		if t != nil {
			md.m.events.push(TrackRemoved{Track: t})
		}
	case protocol.EventMediaLayers:
		var l protocol.MediaLayers
		if err := json.Unmarshal(msg.Data, &l); err != nil {
			return
		}
		md.mu.Lock()
		var on func([]string)
		for _, t := range md.local {
			if t.Source == l.Source {
				on = t.OnLayers
			}
		}
		md.mu.Unlock()
		if on != nil {
			on(l.Active)
		}
		md.m.events.push(LayersUpdate{Source: l.Source, Active: l.Active})
	case protocol.EventActiveSpeaker:
		var a protocol.ActiveSpeaker
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			return
		}
		md.mu.Lock()
		md.speaker = a
		md.mu.Unlock()
		md.m.events.push(ActiveSpeaker{ParticipantID: a.ParticipantID, Speaking: a.Speaking})
	}
}

// ActiveSpeaker returns the active speaker's participant id ("" before
// anyone spoke) and who speaks now, as the server last told (at most four
// times a second).
func (md *Media) ActiveSpeaker() (active string, speaking []string) {
	md.mu.Lock()
	defer md.mu.Unlock()
	return md.speaker.ParticipantID, slices.Clone(md.speaker.Speaking)
}

// Speaking reports whether participant pid speaks now.
func (md *Media) Speaking(pid string) bool {
	md.mu.Lock()
	defer md.mu.Unlock()
	return slices.Contains(md.speaker.Speaking, pid)
}

// answerOffers answers the server's offers for the subscriber connection.
func (md *Media) answerOffers(subCtx context.Context, pc *webrtc.PeerConnection, offers <-chan protocol.MediaOffer, stop <-chan struct{}) {
	for {
		var o protocol.MediaOffer
		select {
		case <-stop:
			return
		case o = <-offers:
		}
		md.mu.Lock()
		gone := []*RemoteTrack{}
		desc := make(map[string]protocol.MediaTrack, len(o.Tracks))
		for _, t := range o.Tracks {
			desc[t.TrackID] = t
		}
		for id, t := range md.remote {
			if _, ok := desc[id]; !ok {
				gone = append(gone, t)
				delete(md.remote, id)
			}
		}
		md.described = desc
		md.mu.Unlock()
		for _, t := range gone {
			md.m.events.push(TrackRemoved{Track: t})
		}
		ctx, cancel := context.WithTimeout(subCtx, 10*time.Second)
		err := md.answer(ctx, pc, o.SDP)
		cancel()
		if err != nil {
			md.m.log.Warn("answering a media offer", "err", err)
		}
	}
}

func (md *Media) answer(ctx context.Context, pc *webrtc.PeerConnection, sdp string) error {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		return err
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return err
	}
	if err := gathered(ctx, pc, ans); err != nil {
		return err
	}
	return md.m.call(ctx, protocol.MethodAnswer, protocol.SDPParams{SDP: pc.LocalDescription().SDP}, nil)
}

func (md *Media) onTrack(pc *webrtc.PeerConnection, t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
	md.mu.Lock()
	if md.sub != pc {
		md.mu.Unlock()
		return
	}
	d, ok := md.described[t.ID()]
	if !ok { // not described: take what the msid says
		d = protocol.MediaTrack{TrackID: t.ID(), ParticipantID: t.StreamID(), Kind: t.Kind().String()}
	}
	rt := &RemoteTrack{TrackRemote: t, ParticipantID: d.ParticipantID, UserID: d.UserID, Source: d.Source, Receiver: r, pc: pc, m: md.m}
	if md.remote == nil {
		md.remote = map[string]*RemoteTrack{}
	}
	md.remote[t.ID()] = rt
	md.mu.Unlock()
	md.m.events.push(TrackAdded{Track: rt})
}

// RemoteTracks returns the tracks being received.
func (md *Media) RemoteTracks() []*RemoteTrack {
	md.mu.Lock()
	defer md.mu.Unlock()
	return slices.Collect(maps.Values(md.remote))
}

// disconnected ends the media of a lost connection: the server ended it
// with the connection. What was published is kept, to publish again.
func (md *Media) disconnected() {
	md.mu.Lock()
	pub := md.pub
	md.pub = nil
	md.mu.Unlock()
	if pub != nil {
		pub.Close()
	}
	md.endSubscriber()
}

// reconnected restores the media on a new connection.
func (md *Media) reconnected() {
	md.mu.Lock()
	subscribed, local := md.subscribed, md.local
	md.local = nil
	md.mu.Unlock()
	ctx, cancel := context.WithTimeout(md.m.ctx, 30*time.Second)
	defer cancel()
	if subscribed {
		md.endSubscriber()
		if err := md.startSubscriber(ctx); err != nil {
			md.m.log.Warn("subscribing again after a reconnect", "err", err)
		}
	}
	if len(local) > 0 {
		if err := md.Publish(ctx, local...); err != nil {
			md.m.log.Info("publishing again after a reconnect", "err", err)
			md.m.events.push(PublishingStopped{Reason: protocol.StoppedStage})
		}
	}
}

// close ends both connections.
func (md *Media) close() {
	md.mu.Lock()
	pub := md.pub
	md.pub, md.local, md.subscribed = nil, nil, false
	md.mu.Unlock()
	if pub != nil {
		pub.Close()
	}
	md.endSubscriber()
}
