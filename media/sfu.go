// Package media is cocmd's SFU: it receives the tracks of the participants
// who may publish and forwards them to every participant that subscribes,
// over WebRTC (pion/webrtc v4), all on one UDP port.
//
// It decides nothing about the stage. The meeting owner tells it, through
// SFU.Allow, which participants may publish which kinds of media right now;
// everything else is refused, and revoking stops the participant's tracks
// at once, for every subscriber, whatever its client keeps sending.
//
// Each realtime connection has at most one Session, with up to two peer
// connections: a publisher connection the client offers (its own tracks)
// and a subscriber connection the server offers (everyone else's tracks).
// One goroutine per published track reads its packets, keeps them in a
// packet cache for retransmissions, and writes them to every subscriber.
package media

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/internal/pionlog"
	"github.com/cocmd/cocmd/stage"
)

// Config holds the SFU's settings.
type Config struct {
	// Conn is the UDP socket every peer connection shares. Required.
	Conn net.PacketConn
	// TCP, if set, carries ICE-TCP: passive TCP candidates on its port,
	// for clients whose networks block UDP. It can share the HTTPS port
	// (server.SplitTCP).
	TCP net.Listener
	// PublicIPs, if set, replace the addresses of the server's host
	// candidates: for a server behind 1:1 NAT (a cloud VM's public IP).
	PublicIPs []string
	// Divert, if set, takes the datagrams on Conn that are another
	// server's: the embedded TURN server shares the socket. Conn must be
	// a *net.UDPConn.
	Divert Divert
	// InitialEstimate is the bandwidth estimate a subscriber connection
	// starts from, in bits a second; 0 means 600 kbit/s (the smallest and
	// the middle layer, not the largest, until loss-free reports raise it).
	InitialEstimate int
	// Loopback offers loopback candidates too: for a server reached on
	// 127.0.0.1 (tests, everything on one machine).
	Loopback bool
	// Logger receives the SFU's logs; nil means slog.Default().
	Logger *slog.Logger
	// Relay, in a cluster, carries tracks to and from the other nodes'
	// SFUs (relay.go).
	Relay Relay
}

// SFU is the media plane of one server. Its methods are safe for
// concurrent use.
type SFU struct {
	initialBWE float64
	api        *webrtc.API // subscriber connections without the direct path
	subSE      webrtc.SettingEngine
	subME      *webrtc.MediaEngine
	subIR      *interceptor.Registry
	pubAPI     *webrtc.API // publisher connections: with transport-wide congestion control feedback
	mux        ice.UDPMux
	tcpMux     ice.TCPMux // nil without ICE-TCP
	batch      *batchConn // nil if the socket is not a *net.UDPConn
	log        *slog.Logger
	relay      Relay

	mu     sync.Mutex
	rooms  map[string]*Room
	closed bool
	wg     sync.WaitGroup // the rooms' workers
}

// New returns an SFU serving peer connections on cfg.Conn.
func New(cfg Config) (*SFU, error) {
	if cfg.Conn == nil {
		return nil, errors.New("media: a UDP socket is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	conn := cfg.Conn
	if _, ok := conn.(*net.UDPConn); !ok && cfg.Divert != nil {
		return nil, errors.New("media: sharing the socket (Divert) needs a *net.UDPConn")
	}
	var batch *batchConn
	if uc, ok := cfg.Conn.(*net.UDPConn); ok {
		// Room for bursts to many subscribers (keyframes): the kernel
		// caps this at net.core.wmem_max / rmem_max.
		uc.SetWriteBuffer(4 << 20)
		uc.SetReadBuffer(4 << 20)
		batch = newBatchConn(uc)
		batch.divert = cfg.Divert
		conn = batch
	}
	me, err := mediaEngine()
	if err != nil {
		return nil, err
	}
	ir, err := interceptors(false)
	if err != nil {
		return nil, err
	}
	pubME, err := mediaEngine()
	if err != nil {
		return nil, err
	}
	pubIR, err := interceptors(true)
	if err != nil {
		return nil, err
	}
	lf := pionlog.Factory(log)
	mux := webrtc.NewICEUDPMux(lf.NewLogger("ice"), conn)
	var se webrtc.SettingEngine
	se.LoggerFactory = lf
	se.SetICEUDPMux(mux)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(cfg.Loopback)
	nets := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	var tcpMux ice.TCPMux
	if cfg.TCP != nil {
		tcpMux = webrtc.NewICETCPMux(lf.NewLogger("ice-tcp"), cfg.TCP, 64)
		se.SetICETCPMux(tcpMux)
		nets = append(nets, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6)
	}
	se.SetNetworkTypes(nets)
	se.SetICETimeouts(5*time.Second, 15*time.Second, 2*time.Second)
	// Where the SFU controls ICE (the subscriber connections), nominate a
	// working pair sooner than pion's defaults (1 s for a peer-reflexive
	// remote candidate, 2 s for a relayed one) would: the SFU's own
	// candidates are few and fixed, a client behind NAT or on ICE-TCP is
	// always peer-reflexive here, and its UDP pair, when there is one,
	// succeeds within these waits. bench media -paths measures the join
	// → first packet time this buys.
	se.SetPrflxAcceptanceMinWait(200 * time.Millisecond)
	se.SetRelayAcceptanceMinWait(500 * time.Millisecond)
	if len(cfg.PublicIPs) > 0 {
		err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{External: cfg.PublicIPs,
			AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteReplace})
		if err != nil {
			return nil, fmt.Errorf("media: public IPs %v: %w", cfg.PublicIPs, err)
		}
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pubAPI := webrtc.NewAPI(webrtc.WithMediaEngine(pubME), webrtc.WithInterceptorRegistry(pubIR), webrtc.WithSettingEngine(se))
	initial := float64(cfg.InitialEstimate)
	if initial <= 0 {
		initial = initialEstimate
	}
	return &SFU{initialBWE: initial, api: api, subSE: se, subME: me, subIR: ir, pubAPI: pubAPI, mux: mux, tcpMux: tcpMux, batch: batch, log: log, relay: cfg.Relay, rooms: map[string]*Room{}}, nil
}

// subscriberAPI returns the API a subscriber connection is made with: the
// SFU's, or one whose DTLS hooks give p the connection's secrets, for its
// direct path.
func (s *SFU) subscriberAPI(p *directPath) *webrtc.API {
	if p == nil {
		return s.api
	}
	se := s.subSE
	se.SetDTLSKeyLogWriter(&p.secrets)
	se.SetDTLSServerHelloMessageHook(p.secrets.serverHello)
	return webrtc.NewAPI(webrtc.WithMediaEngine(s.subME), webrtc.WithInterceptorRegistry(s.subIR), webrtc.WithSettingEngine(se))
}

// videoFeedback is the RTCP feedback the SFU handles for video: NACKs (it
// retransmits from its cache), PLI and FIR (forwarded to the publisher).
var videoFeedback = []webrtc.RTCPFeedback{
	{Type: webrtc.TypeRTCPFBNACK},
	{Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"},
	{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
}

// mediaEngine lists the codecs the SFU forwards. Publisher and subscribers
// negotiate from the same list, so a track's codec is always one every
// subscriber accepts. The header extensions negotiated are those that name
// a packet's media section and simulcast layer (mid, rid, repaired rid):
// pion needs them to tell a publisher's layers apart; the audio level
// (ssrc-audio-level), for the active speaker; and transport-wide
// congestion control (its header extension and transport-cc feedback):
// the SFU's feedback lets a publisher's browser adapt its sending rate,
// and so its simulcast layers, to its uplink, and a subscriber's feedback
// drives the SFU's estimate of its downlink (bwe.go). Extension ids are
// per connection, so the SFU strips the publisher's extensions before it
// forwards a packet.
func mediaEngine() (*webrtc.MediaEngine, error) {
	m := &webrtc.MediaEngine{}
	codecs := []struct {
		webrtc.RTPCodecParameters
		kind webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}}, webrtc.RTPCodecTypeAudio},
		{webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFeedback}}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{PayloadType: 102, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: videoFeedback,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{PayloadType: 108, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: videoFeedback,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"}}, webrtc.RTPCodecTypeVideo},
	}
	for _, c := range codecs {
		c.RTCPFeedback = append(slices.Clone(c.RTCPFeedback), webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC})
		if err := m.RegisterCodec(c.RTPCodecParameters, c.kind); err != nil {
			return nil, fmt.Errorf("media: registering %s: %w", c.MimeType, err)
		}
	}
	exts := []struct {
		uri  string
		kind webrtc.RTPCodecType
	}{
		{sdp.SDESMidURI, webrtc.RTPCodecTypeVideo},
		{sdp.SDESMidURI, webrtc.RTPCodecTypeAudio},
		{sdp.SDESRTPStreamIDURI, webrtc.RTPCodecTypeVideo},
		{sdp.SDESRepairRTPStreamIDURI, webrtc.RTPCodecTypeVideo},
		{sdp.AudioLevelURI, webrtc.RTPCodecTypeAudio},
		{sdp.TransportCCURI, webrtc.RTPCodecTypeVideo},
		{sdp.TransportCCURI, webrtc.RTPCodecTypeAudio},
	}
	for _, e := range exts {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: e.uri}, e.kind); err != nil {
			return nil, fmt.Errorf("media: registering header extension %s: %w", e.uri, err)
		}
	}
	return m, nil
}

// senderReportInterval is how often each stream to a subscriber gets a
// sender report, for lip sync (and the receiver's RTT): every 2 s, where
// pion's default is 1 s and RFC 3550 suggests no less than 5 s; libwebrtc
// sends one a second for video and every 5 s for audio. The reports of a
// connection's streams go together, in one compound packet
// (Session.senderReports): at one a second each, through pion's report
// interceptor, they were 8 % of the server's time with 50 subscribers.
const senderReportInterval = 2 * time.Second

// interceptors returns the interceptors of publisher connections
// (publisher) or of subscriber connections. Publishers' connections
// receive: NACKs for what their packets lose on the way in, receiver
// reports and transport-wide congestion control feedback to the
// publisher (a goroutine per connection, so on publishers' connections
// only). Subscribers' connections have none: the SFU sends their sender
// reports itself (Session.senderReports), reads their RTCP raw
// (downTrack.readRTCP) and answers their NACKs from its own per-track
// cache, not from a cache per subscriber; most of their media does not go
// through pion's write path at all (fastpath.go).
func interceptors(publisher bool) (*interceptor.Registry, error) {
	ir := &interceptor.Registry{}
	if !publisher {
		return ir, nil
	}
	fb, err := twcc.NewSenderInterceptor()
	if err != nil {
		return nil, err
	}
	gen, err := nack.NewGeneratorInterceptor()
	if err != nil {
		return nil, err
	}
	rr, err := report.NewReceiverInterceptor()
	if err != nil {
		return nil, err
	}
	ir.Add(fb)
	ir.Add(gen)
	ir.Add(rr)
	return ir, nil
}

// room returns the room of meeting id, creating it.
func (s *SFU) room(id string) *Room {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[id]
	if r == nil {
		r = newRoom(s, id)
		r.startRelay() // subscribes, never waits on the network
		s.rooms[id] = r
	}
	return r
}

// Allow sets what participant pid of meeting meetingID may publish now:
// the kinds in m when ok, nothing otherwise. Tracks it may no longer
// publish stop before Allow returns: not one more of their packets is
// forwarded. The meeting owner calls it after every change that matters.
func (s *SFU) Allow(meetingID, pid string, m stage.Media, ok bool) {
	if !ok {
		// A meeting without a room has nothing to revoke: most calls
		// are for viewers off stage, and make no room.
		s.mu.Lock()
		r := s.rooms[meetingID]
		s.mu.Unlock()
		if r != nil {
			r.allow(pid, m, false)
		}
		return
	}
	s.room(meetingID).allow(pid, m, true)
}

// Forget drops what the SFU knows of a meeting that is no longer live. Its
// sessions, if any are left, are closed on a goroutine of the room's: Forget
// returns at once.
func (s *SFU) Forget(meetingID string) {
	s.mu.Lock()
	r := s.rooms[meetingID]
	delete(s.rooms, meetingID)
	s.mu.Unlock()
	if r != nil {
		r.close()
	}
}

// Close closes every session and the UDP mux.
func (s *SFU) Close() error {
	s.mu.Lock()
	rooms := s.rooms
	s.rooms = map[string]*Room{}
	s.closed = true
	s.mu.Unlock()
	for _, r := range rooms {
		r.close()
	}
	s.wg.Wait()
	if s.tcpMux != nil {
		s.tcpMux.Close()
	}
	return s.mux.Close()
}
