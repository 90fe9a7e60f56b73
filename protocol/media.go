package protocol

import "strings"

// Media methods: WebRTC negotiation over the realtime connection. A
// participant has up to two peer connections with the server: a publisher
// connection it offers (its own tracks, only while it may publish) and a
// subscriber connection the server offers (everyone's on-stage tracks).
const (
	// MethodPublish sends the publisher connection's offer (PublishParams);
	// the result is the server's answer (SDP).
	MethodPublish = "media.publish"
	// MethodUnpublish stops every track the caller publishes and closes its
	// publisher connection.
	MethodUnpublish = "media.unpublish"
	// MethodSubscribe opens the subscriber connection: the server sends
	// EventMediaOffer now and whenever the set of tracks changes.
	MethodSubscribe = "media.subscribe"
	// MethodAnswer answers the last EventMediaOffer (SDP).
	MethodAnswer = "media.answer"
	// MethodCandidate adds a trickled ICE candidate of the client's
	// (CandidateParams).
	MethodCandidate = "media.candidate"
	// MethodRestartICE asks for an EventMediaOffer that restarts the
	// subscriber connection's ICE, when the client lost its path. (The
	// publisher connection restarts with a new MethodPublish offer.)
	MethodRestartICE = "media.restartIce"
	// MethodSetTrackSize says the largest size the client displays a
	// track it receives at (TrackSizeParams): the server sends the
	// smallest simulcast layer at least that large, and no video at all
	// for 0x0 (a hidden tile).
	MethodSetTrackSize = "media.setTrackSize"
)

// MaxTrackSize bounds the width and height of media.setTrackSize.
const MaxTrackSize = 16384

// TrackSizeParams is the params of media.setTrackSize.
type TrackSizeParams struct {
	TrackID string `json:"track_id"`
	Width   int    `json:"width"`
	Height  int    `json:"height"`
}

// IsMedia reports whether method is one of the media methods.
func IsMedia(method string) bool { return strings.HasPrefix(method, "media.") }

// Media events, sent to one connection. They carry no seq: they are not
// part of the meeting's order.
const (
	// EventMediaOffer is the server's offer for the subscriber connection,
	// with the tracks it carries (MediaOffer).
	EventMediaOffer = "media.offer"
	// EventMediaStopped tells a publisher that the server stopped its
	// tracks (MediaStopped).
	EventMediaStopped = "media.stopped"
	// EventActiveSpeaker tells who speaks (ActiveSpeaker), when it
	// changes: at most four times a second.
	EventActiveSpeaker = "media.activeSpeaker"
	// EventTrackEnded tells a subscriber that a track it receives ended
	// (TrackEnded), at once: the offer without it follows.
	EventTrackEnded = "media.trackEnded"
	// EventMediaLayers tells a simulcast publisher which layers of a
	// track someone receives (MediaLayers): it may stop encoding the
	// others until they are needed again (dynacast).
	EventMediaLayers = "media.layers"
)

// TrackEnded is media.trackEnded.
type TrackEnded struct {
	TrackID       string `json:"track_id"`
	ParticipantID string `json:"participant_id"`
	Source        Source `json:"source"`
}

// MediaLayers is media.layers: of the publisher's Source track, the rids
// someone receives or is about to; the others are not needed now.
type MediaLayers struct {
	Source Source   `json:"source"`
	Active []string `json:"active"`
}

// ActiveSpeaker is media.activeSpeaker: the active speaker (the loudest
// who speaks, held for a second against others; "" before anyone spoke)
// and everyone who speaks now, by participant id.
type ActiveSpeaker struct {
	ParticipantID string   `json:"participant_id"`
	Speaking      []string `json:"speaking"`
}

// Source is what a published track carries.
type Source string

// The track sources a preset's media permissions speak of.
const (
	SourceMicrophone  Source = "microphone"  // media.audio
	SourceCamera      Source = "camera"      // media.video
	SourceScreenshare Source = "screenshare" // media.screenshare
)

// Valid reports whether s is one of the known sources.
func (s Source) Valid() bool {
	return s == SourceMicrophone || s == SourceCamera || s == SourceScreenshare
}

// Kind is the media kind of the source's tracks: "audio" or "video".
func (s Source) Kind() string {
	if s == SourceMicrophone {
		return "audio"
	}
	return "video"
}

// MaxSDP bounds the size of an SDP in a request.
const MaxSDP = 48 << 10

// PublishParams is the params of media.publish. Sources names the source of
// each media section the client sends on, by mid; a sending section it does
// not name is a camera (video) or a microphone (audio).
type PublishParams struct {
	SDP     string            `json:"sdp"`
	Sources map[string]Source `json:"sources,omitempty"`
}

// SDPParams is the params of media.answer, and the result of media.publish.
type SDPParams struct {
	SDP string `json:"sdp"`
}

// Target names one of a participant's two peer connections.
type Target string

// The two peer connections.
const (
	TargetPublisher  Target = "publisher"
	TargetSubscriber Target = "subscriber"
)

// Candidate is an ICE candidate as the browser's RTCIceCandidateInit
// spells it.
type Candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// CandidateParams is the params of media.candidate.
type CandidateParams struct {
	Target    Target    `json:"target"`
	Candidate Candidate `json:"candidate"`
}

// MediaTrack describes one track of the subscriber connection: whose it is
// and what it carries. TrackID and StreamID are the track's msid (the
// stream id is the participant id), and Mid its media section.
type MediaTrack struct {
	TrackID       string `json:"track_id"`
	StreamID      string `json:"stream_id"`
	Mid           string `json:"mid"`
	ParticipantID string `json:"participant_id"`
	UserID        string `json:"user_id"`
	Kind          string `json:"kind"`
	Source        Source `json:"source"`
}

// MediaOffer is media.offer.
type MediaOffer struct {
	SDP    string       `json:"sdp"`
	Tracks []MediaTrack `json:"tracks"`
}

// Reasons the server gives in media.stopped.
const (
	StoppedStage       = "stage"       // the participant is no longer on stage (leave, kick)
	StoppedPermissions = "permissions" // its preset no longer allows these tracks
	StoppedFailed      = "failed"      // the publisher connection failed
)

// MediaStopped is media.stopped: the server stopped the publisher's tracks
// of these Sources (all of them when empty) and closed its publisher
// connection if none is left.
type MediaStopped struct {
	Reason  string   `json:"reason"`
	Sources []Source `json:"sources,omitempty"`
}

func decodeMedia(r Request) (any, error) {
	switch r.Method {
	case MethodUnpublish, MethodSubscribe, MethodRestartICE:
		return nil, strictEmpty(r.Params)
	case MethodPublish:
		var p PublishParams
		if err := strict(r.Params, &p); err != nil {
			return nil, err
		}
		if err := checkSDP(p.SDP); err != nil {
			return nil, err
		}
		for mid, s := range p.Sources {
			if !s.Valid() {
				return nil, badRequest("source %q of mid %q: use microphone, camera or screenshare", s, mid)
			}
		}
		return p, nil
	case MethodAnswer:
		var p SDPParams
		if err := strict(r.Params, &p); err != nil {
			return nil, err
		}
		return p, checkSDP(p.SDP)
	case MethodSetTrackSize:
		var p TrackSizeParams
		if err := strict(r.Params, &p); err != nil {
			return nil, err
		}
		if p.TrackID == "" || len(p.TrackID) > 256 {
			return nil, badRequest("%s needs a track_id of at most 256 bytes", r.Method)
		}
		if p.Width < 0 || p.Height < 0 || p.Width > MaxTrackSize || p.Height > MaxTrackSize {
			return nil, badRequest("size %dx%d: width and height are 0 to %d", p.Width, p.Height, MaxTrackSize)
		}
		return p, nil
	case MethodCandidate:
		var p CandidateParams
		if err := strict(r.Params, &p); err != nil {
			return nil, err
		}
		if p.Target != TargetPublisher && p.Target != TargetSubscriber {
			return nil, badRequest("target %q: use publisher or subscriber", p.Target)
		}
		return p, nil
	}
	return nil, badRequest("unknown method %q", r.Method)
}

func checkSDP(sdp string) error {
	switch {
	case sdp == "":
		return badRequest("missing sdp")
	case len(sdp) > MaxSDP:
		return badRequest("sdp of %d bytes is over the limit of %d", len(sdp), MaxSDP)
	case !strings.HasPrefix(sdp, "v=0"):
		return badRequest("malformed sdp: it does not start with v=0")
	}
	return nil
}

// ICEServer is a STUN or TURN server a client may use to reach media, as
// the browser's RTCIceServer spells it.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// MediaConfig is how a connection reaches media: in the welcome, and
// renewed in the result of auth.refresh (TURN credentials expire with the
// token they came with).
type MediaConfig struct {
	ICEServers []ICEServer `json:"ice_servers"`
}
