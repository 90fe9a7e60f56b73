package media

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"hash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// The direct path: how the SFU sends a subscriber its media without
// pion's per-connection write path.
//
// Pion writes each RTP packet through an interceptor chain, the
// connection's SRTP session (a channel check, a lock and a map lookup),
// the DTLS/SRTP demultiplexer, the ICE connection (its task loop's state,
// the selected pair, the pair's statistics) and the UDP mux's conn before
// it reaches the socket: at 200 subscribers those layers were a quarter
// of the server's CPU, more than the encryption itself. The direct path
// does what they do for a packet of media: it encrypts the packet with the
// connection's SRTP keys and queues it on the SFU's socket (batchConn) for
// the address of the ICE pair pion selected. Everything else — ICE checks
// and consent, DTLS, RTCP both ways, the pair's selection — stays pion's.
//
// Pion does not expose a connection's SRTP keys. The SFU derives them as
// pion does (RFC 5764: the DTLS exporter with the label
// "EXTRACTOR-dtls_srtp"), from what pion's DTLS hands to the hooks of a
// connection's settings: the ServerHello the SFU sends (the server's
// random, the cipher suite, the SRTP profile chosen) and the key log
// (the client's random and the master secret). A connection where the
// SFU is not the DTLS server (a client that answered setup:passive), whose
// keys are not known for any other reason, or whose selected pair is not
// UDP on the SFU's socket (ICE-TCP) keeps pion's path. With the AEAD GCM
// profiles (what pion and browsers choose) the direct path encrypts with
// its own rtpGCM, which takes the rollover count from downState's
// numbering; with the others, with a pion/srtp Context per track.

// srtpLabel is the exporter label of DTLS-SRTP's keying material (RFC 5764).
const srtpLabel = "EXTRACTOR-dtls_srtp"

// dtlsSecrets collects, from pion's DTLS hooks, what derives a subscriber
// connection's SRTP keys. Its methods are safe for concurrent use.
type dtlsSecrets struct {
	mu      sync.Mutex
	hellos  int // ServerHellos seen; more than one handshake: keys unknown
	server  [32]byte
	suite   uint16
	profile srtp.ProtectionProfile
	client  []byte
	master  []byte
	keys    atomic.Pointer[srtpKeys] // set once both halves are known
}

// srtpKeys are one connection's SRTP master keys: the SFU's, which it
// sends with, and the client's, which its RTCP comes with.
type srtpKeys struct {
	profile     srtp.ProtectionProfile
	key, salt   []byte
	rkey, rsalt []byte
}

// serverHello is the ServerHello hook: it records the message and
// returns it unchanged.
func (s *dtlsSecrets) serverHello(m handshake.MessageServerHello) handshake.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	random := m.Random.MarshalFixed()
	if s.hellos > 0 && random != s.server {
		s.hellos++ // a second handshake: its keys are not ours to guess
		s.keys.Store(nil)
		return &m
	}
	s.hellos = 1
	s.server = random
	if m.CipherSuiteID != nil {
		s.suite = *m.CipherSuiteID
	}
	for _, e := range m.Extensions {
		if u, ok := e.(*extension.UseSRTP); ok && len(u.ProtectionProfiles) == 1 {
			s.profile = srtpProfile(dtls.SRTPProtectionProfile(u.ProtectionProfiles[0]))
		}
	}
	s.deriveLocked()
	return &m
}

// Write is the key log's writer: pion's DTLS writes one line per
// handshake, "CLIENT_RANDOM <client random> <master secret>" in hex.
func (s *dtlsSecrets) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 || string(f[0]) != "CLIENT_RANDOM" {
		return len(line), nil
	}
	client, err1 := hex.DecodeString(string(f[1]))
	master, err2 := hex.DecodeString(string(f[2]))
	if err1 != nil || err2 != nil {
		return len(line), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client, s.master = client, master
	s.deriveLocked()
	return len(line), nil
}

func (s *dtlsSecrets) deriveLocked() {
	if s.hellos != 1 || s.master == nil || s.profile == 0 {
		return
	}
	k, err := deriveSRTPKeys(s.profile, s.suite, s.master, s.client, s.server[:])
	if err == nil {
		s.keys.Store(k)
	}
}

// deriveSRTPKeys returns the DTLS server's SRTP sending keys for a
// handshake's master secret and randoms (RFC 5705's exporter, RFC 5764's
// layout of the keying material).
func deriveSRTPKeys(profile srtp.ProtectionProfile, suite uint16, master, client, server []byte) (*srtpKeys, error) {
	keyLen, err := profile.KeyLen()
	if err != nil {
		return nil, err
	}
	saltLen, err := profile.SaltLen()
	if err != nil {
		return nil, err
	}
	if len(client) != 32 || len(server) != 32 {
		return nil, errors.New("media: a DTLS random is 32 bytes")
	}
	h := func() hash.Hash { return sha256.New() }
	switch dtls.CipherSuiteID(suite) {
	case dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
		h = sha512.New384
	}
	seed := make([]byte, 0, len(srtpLabel)+64)
	seed = append(append(append(seed, srtpLabel...), client...), server...)
	m, err := prf.PHash(master, seed, 2*keyLen+2*saltLen, h)
	if err != nil {
		return nil, err
	}
	// client key, server key, client salt, server salt
	return &srtpKeys{profile: profile,
		key: m[keyLen : 2*keyLen], salt: m[2*keyLen+saltLen : 2*keyLen+2*saltLen],
		rkey: m[:keyLen], rsalt: m[2*keyLen : 2*keyLen+saltLen]}, nil
}

// srtpProfile maps DTLS's name of an SRTP profile to SRTP's; 0 for one
// the SFU does not send with.
func srtpProfile(p dtls.SRTPProtectionProfile) srtp.ProtectionProfile {
	switch p {
	case dtls.SRTP_AEAD_AES_128_GCM:
		return srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AEAD_AES_256_GCM:
		return srtp.ProtectionProfileAeadAes256Gcm
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		return srtp.ProtectionProfileAes128CmHmacSha1_80
	case dtls.SRTP_AES128_CM_HMAC_SHA1_32:
		return srtp.ProtectionProfileAes128CmHmacSha1_32
	}
	return 0
}

// directPath is one subscriber connection's direct path: its keys and
// the UDP address pion's ICE selected, while both are known. The
// subscriber's RTCP from that address is read on it too: the socket's
// reader decrypts it and hands it to the session (receiveRTCP), where
// pion would pass it through four goroutines first (the UDP mux's, the
// ICE connection's, the SRTCP session's and the downTrack's reader).
type directPath struct {
	secrets dtlsSecrets
	batch   *batchConn
	sess    *Session
	addr    atomic.Pointer[netip.AddrPort] // nil: pion's path

	mu sync.Mutex // serializes update
	at *netip.AddrPort

	rmu    sync.Mutex // receiveRTCP's
	rkeys  *srtpKeys
	rctx   *srtp.Context
	rbuf   []byte
	o      outBuf
	passed time.Time // when an RTCP packet last went on to pion
}

// pionRTCPInterval is how often a direct subscriber's RTCP goes on to
// pion anyway: pion's ICE counts the connection's silence from the last
// packet it saw, and would call a connection whose RTCP it never sees
// disconnected when two of its keepalives go unanswered.
const pionRTCPInterval = time.Second

// update points the path at pc's selected pair, or turns it off when
// that pair is not UDP from the SFU's socket or the connection is not
// connected (pc may then be nil).
func (p *directPath) update(pc *webrtc.PeerConnection, connected bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var addr *netip.AddrPort
	if connected && p.secrets.keys.Load() != nil {
		var pair *webrtc.ICECandidatePair
		if t := pc.SCTP().Transport().ICETransport(); t != nil {
			pair, _ = t.GetSelectedCandidatePair()
		}
		addr = directAddr(pair)
	}
	if p.at != nil && (addr == nil || *addr != *p.at) {
		p.batch.routes.remove(*p.at, p)
	}
	if addr != nil {
		p.batch.routes.add(*addr, p)
	}
	p.at = addr
	p.addr.Store(addr)
}

// receiveRTCP serves SRTCP packet pkt from the subscriber; false if it
// leaves it to pion: one a second (pionRTCPInterval), and what it cannot
// decrypt.
func (p *directPath) receiveRTCP(pkt []byte) bool {
	keys := p.secrets.keys.Load()
	if keys == nil {
		return false
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	if now := time.Now(); now.Sub(p.passed) >= pionRTCPInterval {
		p.passed = now
		return false
	}
	if p.rkeys != keys {
		ctx, err := srtp.CreateContext(keys.rkey, keys.rsalt, keys.profile)
		if err != nil {
			return false
		}
		p.rkeys, p.rctx = keys, ctx
		p.rbuf = make([]byte, maxPacket)
	}
	out, err := p.rctx.DecryptRTCP(p.rbuf[:0], pkt, nil)
	if err != nil {
		return false
	}
	if p.sess.room != nil {
		p.sess.room.est.directRTCP.Add(1)
	}
	p.sess.handleRTCP(out, &p.o)
	return true
}

// isRTCP reports whether datagram b is RTCP (RFC 5761: payload types
// 192–223 in RTCP's place), not RTP, STUN or DTLS.
func isRTCP(b []byte) bool { return len(b) >= 8 && b[0]>>6 == 2 && b[1] >= 192 && b[1] <= 223 }

// rtcpRoutes maps the addresses of subscribers on the direct path to
// their paths, for the socket's reader.
type rtcpRoutes struct {
	mu sync.RWMutex
	m  map[netip.AddrPort]*directPath
}

func (r *rtcpRoutes) add(a netip.AddrPort, p *directPath) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[netip.AddrPort]*directPath{}
	}
	r.m[a] = p
}

// remove drops a's route if it is still p's.
func (r *rtcpRoutes) remove(a netip.AddrPort, p *directPath) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[a] == p {
		delete(r.m, a)
	}
}

func (r *rtcpRoutes) get(a netip.AddrPort) *directPath {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[netip.AddrPortFrom(a.Addr().Unmap(), a.Port())]
}

// directAddr returns the remote address of pair if the SFU can send to it
// from its UDP socket, else nil.
func directAddr(pair *webrtc.ICECandidatePair) *netip.AddrPort {
	if pair == nil || pair.Local == nil || pair.Remote == nil ||
		pair.Local.Protocol != webrtc.ICEProtocolUDP || pair.Remote.Protocol != webrtc.ICEProtocolUDP ||
		pair.Local.Typ != webrtc.ICECandidateTypeHost {
		return nil
	}
	ip, err := netip.ParseAddr(pair.Remote.Address)
	if err != nil {
		return nil
	}
	a := netip.AddrPortFrom(ip.Unmap(), pair.Remote.Port)
	return &a
}

// downState is what a downTrack keeps per packet sent, under one lock:
// its encryption on the direct path, the numbering SRTP needs to stay in
// step on both paths, and the counts of its sender reports.
type downState struct {
	mu sync.Mutex

	// The direct path's SRTP context (one SSRC of its own, so tracks
	// never wait on each other); nil while the track goes pion's way.
	keys *srtpKeys
	gcm  *rtpGCM       // for the AEAD GCM profiles
	ctx  *srtp.Context // for the others
	h    rtp.Header    // scratch for the context's parse

	// SRTP numbers a packet by its sequence number extended with a
	// rollover count, which each sender (the direct path's context,
	// pion's) works out from the packets it has seen. index is the
	// newest extended sequence number sent on either path; pionIndex the
	// newest pion's path sent (none: pion counts from zero), so that a
	// switch of paths starts the other from the right count.
	index, pionIndex uint64
	seen, pionSeen   bool
	stale            bool   // pion's count is behind: the track is sent anew
	ssrc             uint32 // of the stream counted; another starts anew

	// For sender reports: packets and payload octets sent, and the RTP
	// timestamp of the newest packet with when it was sent (unix ns).
	packets, octets uint32
	ts              uint32
	at              int64
}

// extendLocked returns the extended sequence number of seq in stream
// ssrc and keeps the newest. A stream of another SSRC is counted anew,
// from a rollover count of zero, as its receiver counts it.
func (s *downState) extendLocked(ssrc uint32, seq uint16) uint64 {
	if s.seen && ssrc != s.ssrc {
		s.seen, s.pionSeen, s.stale, s.ctx = false, false, false, nil
	}
	if !s.seen {
		s.seen, s.index, s.ssrc = true, uint64(seq), ssrc
		return s.index
	}
	diff := int64(int16(seq - uint16(s.index)))
	ext := uint64(int64(s.index) + diff)
	if diff > 0 {
		s.index = ext
	}
	return ext
}

// sendDirect encrypts the packet of h and payload into buf with keys and
// queues it for addr on the direct path p; false if it could not.
func (s *downState) sendDirect(p *directPath, keys *srtpKeys, addr netip.AddrPort, h *rtp.Header, payload, buf []byte, now int64) bool {
	n := h.MarshalSize()
	if n+len(payload)+srtpOverhead > len(buf) {
		return false
	}
	if _, err := h.MarshalTo(buf); err != nil {
		return false
	}
	copy(buf[n:], payload)
	s.mu.Lock()
	ext := s.extendLocked(h.SSRC, h.SequenceNumber)
	if s.keys != keys {
		s.keys, s.gcm, s.ctx = keys, nil, nil
		if g, err := newRTPGCM(keys.profile, keys.key, keys.salt); err == nil {
			s.gcm = g
		}
	}
	var out []byte
	var err error
	switch {
	case s.gcm != nil:
		// The rollover count is ext's: where pion's path left it, if
		// the track was there.
		out = s.gcm.seal(buf[:n+len(payload)], n, h.SSRC, ext)
	case s.ctx == nil:
		s.ctx, err = srtp.CreateContext(keys.key, keys.salt, keys.profile)
		if err != nil {
			s.mu.Unlock()
			return false
		}
		s.ctx.SetROC(h.SSRC, uint32(ext>>16)) // where pion's path left the count
		fallthrough
	default:
		out, err = s.ctx.EncryptRTP(buf[:0], buf[:n+len(payload)], &s.h)
	}
	if err == nil {
		s.countLocked(h, len(payload), now)
	}
	s.mu.Unlock()
	if err != nil {
		return false
	}
	_, err = p.batch.WriteToAddrPort(out, addr)
	return err == nil
}

// viaPion records that the packet of h goes pion's way, at now. False
// if pion's SRTP count can no longer follow (the direct path sent across
// a rollover since pion's last packet): the packet would not decrypt, and
// the stream must start anew, with a new SSRC.
func (s *downState) viaPion(h *rtp.Header, payload int, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := h.SequenceNumber
	ext := s.extendLocked(h.SSRC, seq)
	s.ctx = nil         // back on the direct path, start from pion's count
	last := uint64(seq) // a stream new to pion: its count starts at zero
	if s.pionSeen {
		last = s.pionIndex
	}
	if d := int64(ext - last); d >= 1<<15 || d <= -(1<<15) {
		s.stale = true
	}
	if s.stale {
		return false
	}
	if !s.pionSeen || int64(ext-s.pionIndex) > 0 {
		s.pionSeen, s.pionIndex = true, ext
	}
	s.countLocked(h, payload, now)
	return true
}

// countLocked counts a packet sent, for sender reports.
func (s *downState) countLocked(h *rtp.Header, payload int, now int64) {
	s.packets++
	if !h.Padding {
		s.octets += uint32(payload)
	}
	if s.packets == 1 || int32(h.Timestamp-s.ts) >= 0 {
		s.ts, s.at = h.Timestamp, now
	}
}

// srtpOverhead is the most SRTP adds to a packet: GCM's 16-byte tag
// (HMAC-SHA1-80 adds 10).
const srtpOverhead = 16
