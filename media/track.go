package media

import (
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
)

// keyframeInterval is the least time between two keyframe requests to a
// publisher: subscribers' PLIs and FIRs within it are merged into one.
const keyframeInterval = 250 * time.Millisecond

// Track is one published track: it reads the publisher's packets and
// forwards each to every subscriber.
type Track struct {
	sess   *Session
	pid    string
	uid    string
	id     string // the track id subscribers see
	source protocol.Source
	kind   webrtc.RTPCodecType
	codec  webrtc.RTPCodecParameters
	remote *webrtc.TrackRemote // nil for a simulcast track: see layers
	recv   *webrtc.RTPReceiver

	// A simulcast track has its layers instead of one remote track; each
	// subscriber receives one of them at a time (simulcast.go).
	simulcast bool
	layersMu  sync.Mutex
	layers    []*layer
	done      chan struct{} // closed by stop
	stopOnce  sync.Once
	since     int64 // unix ns the track was published

	levels levels // of an audio track: its speaking levels

	stopped atomic.Bool
	downsMu sync.Mutex                   // serializes writers of downs
	downs   atomic.Pointer[[]*downTrack] // copy on write: the forwarding loop reads it without a lock
	cache   *packetCache
	batch   *batchConn // nil: no batching
	counters

	kf keyframeThrottle

	// In a cluster (relay.go): origin names the node a remote track comes
	// from ("" for a track published here) and relay is its room's part
	// in the cluster; a local track's export sends the layers other nodes
	// want (exportMask) to them.
	origin     string
	relay      *roomRelay
	export     atomic.Pointer[exporter]
	exportMask atomic.Uint32
}

// exportPacket sends packet p of layer to the nodes that want it.
func (t *Track) exportPacket(layer int, p []byte) {
	if ex := t.export.Load(); ex != nil {
		ex.relay.PublishPacket(ex.subjects[layer], p)
	}
}

func newTrack(s *Session, remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver, src protocol.Source) *Track {
	t := &Track{sess: s, pid: s.pid, uid: s.uid, source: src, kind: remote.Kind(), codec: remote.Codec(),
		remote: remote, recv: recv, id: s.pid + ":" + string(src), batch: s.room.sfu.batch, done: make(chan struct{})}
	if remote.RID() != "" {
		t.simulcast, t.remote, t.since = true, nil, time.Now().UnixNano()
		t.cache = newPacketCache(1) // unused: each layer has its own
		t.downs.Store(&[]*downTrack{})
		return t
	}
	t.downs.Store(&[]*downTrack{})
	if t.kind == webrtc.RTPCodecTypeAudio && recv != nil {
		t.levels.ext = audioLevelExt(recv)
	}
	size := 128 // 2.5 s of Opus
	if t.kind == webrtc.RTPCodecTypeVideo {
		size = 1024 // about 4 s of 1 Mbit/s video; NACKs older than that are useless anyway
	}
	t.cache = newPacketCache(size)
	return t
}

// addDown adds a subscriber to the forwarding list.
func (t *Track) addDown(d *downTrack) {
	t.downsMu.Lock()
	downs := append(append([]*downTrack(nil), *t.downs.Load()...), d)
	t.downs.Store(&downs)
	t.downsMu.Unlock()
	// A simulcast subscriber gets its layer at the next choice, or when
	// pion binds its track (Bind asks for a keyframe).
}

// removeDown takes a subscriber off the forwarding list.
func (t *Track) removeDown(d *downTrack) {
	t.downsMu.Lock()
	defer t.downsMu.Unlock()
	old := *t.downs.Load()
	downs := make([]*downTrack, 0, len(old))
	for _, o := range old {
		if o != d {
			downs = append(downs, o)
		}
	}
	t.downs.Store(&downs)
}

// stop ends forwarding at once; the goroutine drains what still arrives.
func (t *Track) stop() {
	t.stopped.Store(true)
	t.stopOnce.Do(func() {
		if t.done != nil {
			close(t.done)
		}
	})
}

// forward is the track's one goroutine: read a packet, keep it for
// retransmission, write it to every subscriber. It allocates nothing per
// packet. It returns when the publisher's connection ends, and
// unpublishes the track.
func (t *Track) forward(r *Room) {
	defer r.unpublish(t)
	buf := make([]byte, maxPacket)
	var o outBuf
	for {
		n, _, err := t.remote.Read(buf)
		if err != nil {
			return
		}
		t.handle(buf[:n], &o)
	}
}

// outBuf is one goroutine's scratch space for writing to subscribers.
type outBuf struct {
	h   rtp.Header
	ext [2]byte // the transport-wide sequence number's extension
	buf []byte  // a packet read back from a cache; see cached
	enc []byte  // a packet encrypted for the direct path; see encrypted
}

// encrypted returns o's buffer for a packet the direct path encrypts.
func (o *outBuf) encrypted() []byte {
	if o.enc == nil {
		o.enc = make([]byte, maxPacket+srtpOverhead)
	}
	return o.enc
}

// cached returns o's buffer for a packet from a cache.
func (o *outBuf) cached() []byte {
	if o.buf == nil {
		o.buf = make([]byte, maxPacket)
	}
	return o.buf
}

// handle forwards one packet p from the publisher; o is scratch space.
func (t *Track) handle(p []byte, o *outBuf) {
	if t.stopped.Load() {
		return // still drained, so pion's buffers do not fill; never forwarded
	}
	h := &o.h
	hl, err := h.Unmarshal(p)
	if err != nil {
		return
	}
	t.packetsIn.Add(1)
	t.bytesIn.Add(uint64(len(p)))
	t.cache.put(h.SequenceNumber, p)
	if t.exportMask.Load()&1 != 0 {
		t.exportPacket(0, p)
	}
	t.levels.add(h)
	payload := p[hl:]
	sent := 0
	downs := *t.downs.Load()
	if t.batch != nil && len(downs) > 1 {
		t.batch.begin()
		defer t.batch.end()
	}
	now := time.Now().UnixNano()
	for _, d := range downs {
		if d.write(h, payload, o, now) {
			sent++
		}
	}
	if sent > 0 {
		t.packetsOut.Add(uint64(sent))
		t.bytesOut.Add(uint64(sent * (h.MarshalSize() + len(payload))))
	}
}

// stripExtensions drops the publisher's header extensions: their ids were
// negotiated with the publisher, not with the subscribers.
func stripExtensions(h *rtp.Header) {
	h.Extension = false
	h.ExtensionProfile = 0
	h.Extensions = h.Extensions[:0]
}

// requestKeyframe asks the publisher for a keyframe, at most once per
// keyframeInterval; a request within it is sent at its end.
func (t *Track) requestKeyframe() {
	if t.kind != webrtc.RTPCodecTypeVideo || t.stopped.Load() {
		return
	}
	if t.simulcast {
		t.choose(time.Now().UnixNano()) // asks for the keyframes subscribers wait for
		return
	}
	if t.origin != "" {
		t.kf.request(func() { t.relay.pli(t, 0) })
		return
	}
	t.kf.request(func() { t.sendPLI(t.remote.SSRC()) })
}

// sendPLI asks the publisher for a keyframe of stream ssrc, unless the
// track stopped meanwhile.
func (t *Track) sendPLI(ssrc webrtc.SSRC) {
	if t.stopped.Load() {
		return
	}
	if pc := t.sess.publisher(); pc != nil {
		t.keyframeRequests.Add(1)
		pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
	}
}

// keyframeThrottle sends keyframe requests (PLIs) for one stream at most
// once per keyframeInterval: one asked for within the interval is sent at
// its end, and those in between are merged into it.
type keyframeThrottle struct {
	mu      sync.Mutex
	last    time.Time
	pending bool // a request is scheduled for the end of the interval
}

// request runs send now, or once at the end of the current interval.
func (k *keyframeThrottle) request(send func()) {
	k.mu.Lock()
	if k.pending {
		k.mu.Unlock()
		return
	}
	if wait := keyframeInterval - time.Since(k.last); wait > 0 {
		k.pending = true
		k.mu.Unlock()
		time.AfterFunc(wait, func() {
			k.mu.Lock()
			k.pending = false
			k.mu.Unlock()
			k.request(send)
		})
		return
	}
	k.last = time.Now()
	k.mu.Unlock()
	send()
}

// closeCache frees the packet caches of an unpublished track.
func (t *Track) closeCache() {
	t.cache.reset()
	t.layersMu.Lock()
	for _, l := range t.layers {
		l.cache.reset()
	}
	t.layersMu.Unlock()
}

// maxPacket is the largest RTP packet the SFU handles.
const maxPacket = 1500

// packetCache keeps the last packets of a track by sequence number, for
// retransmissions. Its memory is allocated once.
type packetCache struct {
	mu   sync.Mutex
	buf  []byte
	lens []uint16
	seqs []uint16
}

func newPacketCache(n int) *packetCache {
	return &packetCache{buf: make([]byte, n*maxPacket), lens: make([]uint16, n), seqs: make([]uint16, n)}
}

func (c *packetCache) put(seq uint16, p []byte) {
	c.mu.Lock()
	if c.buf != nil {
		i := int(seq) % len(c.lens)
		c.lens[i] = uint16(copy(c.buf[i*maxPacket:(i+1)*maxPacket], p))
		c.seqs[i] = seq
	}
	c.mu.Unlock()
}

// get copies packet seq into dst and returns its length, or 0 when the
// cache no longer has it.
func (c *packetCache) get(seq uint16, dst []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return 0
	}
	i := int(seq) % len(c.lens)
	if c.lens[i] == 0 || c.seqs[i] != seq {
		return 0
	}
	return copy(dst, c.buf[i*maxPacket:i*maxPacket+int(c.lens[i])])
}

func (c *packetCache) reset() {
	c.mu.Lock()
	c.buf, c.lens, c.seqs = nil, []uint16{0}, []uint16{0}
	c.mu.Unlock()
}

// downTrack is one track as sent to one subscriber: the webrtc.TrackLocal
// the subscriber connection sends.
type downTrack struct {
	t        *Track
	sender   *webrtc.RTPSender
	b        atomic.Pointer[binding]
	sim      *simState   // of a simulcast track, else nil
	sess     *Session    // the subscriber's
	paused   atomic.Bool // of a track of one layer: the subscriber hides it
	st       downState
	renewing atomic.Bool // sendAnew was called for it
}

// binding is what a bound downTrack writes with.
type binding struct {
	ssrc uint32
	pt   uint8
	ws   webrtc.TrackLocalWriter
	twcc uint8        // the transport-wide sequence number's extension id; 0: not negotiated
	hist *sendHistory // the connection's, when twcc is set
}

// ID implements webrtc.TrackLocal.
func (d *downTrack) ID() string { return d.t.id }

// RID implements webrtc.TrackLocal.
func (d *downTrack) RID() string { return "" }

// StreamID implements webrtc.TrackLocal: the publisher's participant id.
func (d *downTrack) StreamID() string { return d.t.pid }

// Kind implements webrtc.TrackLocal.
func (d *downTrack) Kind() webrtc.RTPCodecType { return d.t.kind }

// Bind implements webrtc.TrackLocal: it picks the subscriber's payload type
// for the publisher's codec.
func (d *downTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	want := d.t.codec
	var match *webrtc.RTPCodecParameters
	for _, c := range ctx.CodecParameters() {
		if !strings.EqualFold(c.MimeType, want.MimeType) {
			continue
		}
		if match == nil || c.SDPFmtpLine == want.SDPFmtpLine {
			match = &c
		}
	}
	if match == nil {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	b := &binding{ssrc: uint32(ctx.SSRC()), pt: uint8(match.PayloadType), ws: ctx.WriteStream()}
	for _, e := range ctx.HeaderExtensions() {
		if e.URI == sdp.TransportCCURI && d.sess != nil && e.ID > 0 && e.ID < 15 {
			b.twcc, b.hist = uint8(e.ID), d.sess.sendHistory()
		}
	}
	d.b.Store(b)
	d.t.requestKeyframe()
	return *match, nil
}

// Unbind implements webrtc.TrackLocal.
func (d *downTrack) Unbind(webrtc.TrackLocalContext) error {
	d.b.Store(nil)
	return nil
}

// write sends one packet of the track to the subscriber at now (unix
// ns), on the direct path if the connection has one (fastpath.go); h is
// rewritten, and given the connection's transport-wide sequence number
// (stored in o.ext) if it has them; o is the caller's scratch space.
func (d *downTrack) write(h *rtp.Header, payload []byte, o *outBuf, now int64) bool {
	b := d.b.Load()
	if b == nil || d.paused.Load() {
		return false
	}
	h.SSRC, h.PayloadType = b.ssrc, b.pt
	if b.twcc != 0 {
		// The size counted is the packet's on the wire but for SRTP's
		// tag and the transport's headers: the same for every packet.
		seq := b.hist.add(rtpHeaderSize+8+len(payload), now)
		setTransportSeq(h, b.twcc, seq, o.ext[:])
	} else {
		stripExtensions(h)
	}
	if p := d.directPath(); p != nil {
		if addr, keys := p.addr.Load(), p.secrets.keys.Load(); addr != nil && keys != nil {
			if d.st.sendDirect(p, keys, *addr, h, payload, o.encrypted(), now) {
				return true
			}
		}
	}
	if !d.st.viaPion(h, len(payload), now) {
		if d.renewing.CompareAndSwap(false, true) {
			d.sess.sendAnew(d.t)
		}
		return false
	}
	_, err := b.ws.WriteRTP(h, payload)
	return err == nil
}

// directPath returns the subscriber connection's direct path, nil if it
// has none.
func (d *downTrack) directPath() *directPath {
	if d.sess == nil {
		return nil
	}
	return d.sess.direct
}

// rtpHeaderSize is an RTP header's size without CSRCs and extensions.
const rtpHeaderSize = 12

// readRTCP serves the subscriber's feedback for this track until the
// sender stops: retransmissions from the cache on NACK, keyframe requests
// forwarded to the publisher on PLI and FIR.
func (d *downTrack) readRTCP() {
	var o outBuf
	buf := make([]byte, maxPacket)
	for {
		n, _, err := d.sender.Read(buf)
		if err != nil {
			return
		}
		// A compound packet: transport-wide feedback, the most frequent,
		// is read in place; the rest through pion's parser.
		forEachRTCP(buf[:n], func(p []byte) {
			if isTWCC(p) {
				if d.sess != nil {
					d.sess.bwe.feedback(p, time.Now())
				}
				return
			}
			pkts, err := rtcp.Unmarshal(p)
			if err != nil {
				return
			}
			d.handleRTCP(pkts, &o)
		})
	}
}

// forEachRTCP calls f for each packet of compound RTCP packet b, as far
// as its lengths hold.
func forEachRTCP(b []byte, f func(p []byte)) {
	for len(b) >= 4 {
		size := (int(binary.BigEndian.Uint16(b[2:4])) + 1) * 4
		if size > len(b) {
			return
		}
		f(b[:size])
		b = b[size:]
	}
}

// handleRTCP serves a compound RTCP packet from the subscriber read on
// the direct path: each packet once, transport-wide feedback and receiver
// reports for the connection, the rest for the stream it names. o is
// the caller's scratch space.
func (s *Session) handleRTCP(b []byte, o *outBuf) {
	forEachRTCP(b, func(p []byte) {
		if isTWCC(p) {
			s.bwe.feedback(p, time.Now())
			return
		}
		pkts, err := rtcp.Unmarshal(p)
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			var ssrc uint32
			switch pkt := pkt.(type) {
			case *rtcp.ReceiverReport:
				now := time.Now()
				for _, r := range pkt.Reports {
					s.bwe.report(r.FractionLost, now)
				}
				continue
			case *rtcp.PictureLossIndication:
				ssrc = pkt.MediaSSRC
			case *rtcp.FullIntraRequest:
				ssrc = pkt.MediaSSRC
				if len(pkt.FIR) > 0 {
					ssrc = pkt.FIR[0].SSRC // RFC 5104: the media SSRC field is unused
				}
			case *rtcp.TransportLayerNack:
				ssrc = pkt.MediaSSRC
			default:
				continue
			}
			if d := s.downBySSRC(ssrc); d != nil {
				d.handleRTCP([]rtcp.Packet{pkt}, o)
			}
		}
	})
}

// downBySSRC returns the stream the subscriber receives as ssrc, nil if
// none.
func (s *Session) downBySSRC(ssrc uint32) *downTrack {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.downs {
		if b := d.b.Load(); b != nil && b.ssrc == ssrc {
			return d
		}
	}
	return nil
}

// handleRTCP serves RTCP packets other than transport-wide feedback.
func (d *downTrack) handleRTCP(pkts []rtcp.Packet, o *outBuf) {
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
			if d.sim != nil {
				d.t.requestLayerKeyframe(d.t.layer(max(d.sim.cur.Load(), d.sim.target.Load())))
			} else {
				d.t.requestKeyframe()
			}
		case *rtcp.ReceiverReport:
			if d.sess != nil {
				now := time.Now()
				for _, r := range p.Reports {
					d.sess.bwe.report(r.FractionLost, now)
				}
			}
		case *rtcp.TransportLayerNack:
			for _, pair := range p.Nacks {
				for _, seq := range pair.PacketList() {
					var n int
					if d.sim != nil {
						n = d.resendLayer(seq, o)
					} else {
						n = d.resend(seq, o)
					}
					if n > 0 {
						d.t.retransmits.Add(1)
					}
				}
			}
		}
	}
}

// resend sends packet seq to d again from the track's cache; it returns
// the packet's size, 0 if it was not sent.
func (d *downTrack) resend(seq uint16, o *outBuf) int {
	if d.t.stopped.Load() {
		return 0
	}
	buf := o.cached()
	n := d.t.cache.get(seq, buf)
	if n == 0 {
		return 0
	}
	hl, err := o.h.Unmarshal(buf[:n])
	if err != nil || !d.write(&o.h, buf[hl:n], o, time.Now().UnixNano()) {
		return 0
	}
	return n
}
