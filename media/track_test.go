package media

import (
	"bytes"
	"sync"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
)

// capture is a subscriber's write stream that keeps what it is given.
type capture struct {
	mu   sync.Mutex
	pkts []rtp.Packet
}

func (c *capture) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := rtp.Packet{Header: *h, Payload: bytes.Clone(payload)}
	p.Header.Extensions = append([]rtp.Extension(nil), h.Extensions...)
	c.pkts = append(c.pkts, p)
	return len(payload), nil
}

func (c *capture) Write(b []byte) (int, error) { return len(b), nil }

// testTrack is a video track with n subscribers writing to captures.
func testTrack(n int) (*Track, []*downTrack, []*capture) {
	t := &Track{pid: "p", source: protocol.SourceCamera, kind: webrtc.RTPCodecTypeVideo, cache: newPacketCache(64)}
	var downs []*downTrack
	var caps []*capture
	for i := range n {
		c := &capture{}
		d := &downTrack{t: t}
		d.b.Store(&binding{ssrc: uint32(1000 + i), pt: uint8(100 + i), ws: c})
		downs, caps = append(downs, d), append(caps, c)
	}
	t.downs.Store(&downs)
	return t, downs, caps
}

// packet returns a marshalled RTP packet with a header extension.
func packet(t *testing.T, seq uint16, payload string) []byte {
	t.Helper()
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 9000, SSRC: 42}, Payload: []byte(payload)}
	if err := p.Header.SetExtension(3, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTrack_forwardsToEverySubscriber(t *testing.T) {
	tr, _, caps := testTrack(3)
	var h outBuf
	tr.handle(packet(t, 7, "hello"), &h)
	for i, c := range caps {
		if len(c.pkts) != 1 {
			t.Fatalf("subscriber %d got %d packets", i, len(c.pkts))
		}
		p := c.pkts[0]
		if p.SSRC != uint32(1000+i) || p.PayloadType != uint8(100+i) || p.SequenceNumber != 7 || p.Timestamp != 9000 || string(p.Payload) != "hello" {
			t.Errorf("subscriber %d got %+v", i, p)
		}
		if p.Extension || len(p.Extensions) > 0 {
			t.Errorf("subscriber %d got the publisher's header extensions", i)
		}
	}
	if tr.packetsIn.Load() != 1 || tr.packetsOut.Load() != 3 {
		t.Errorf("counters: in %d out %d", tr.packetsIn.Load(), tr.packetsOut.Load())
	}
	// Unbound subscribers (not negotiated yet) are skipped.
	(*tr.downs.Load())[1].b.Store(nil)
	tr.handle(packet(t, 8, "x"), &h)
	if len(caps[1].pkts) != 1 || len(caps[0].pkts) != 2 {
		t.Error("an unbound subscriber was written to")
	}
	// Garbage is dropped.
	tr.handle([]byte{1, 2, 3}, &h)
	if len(caps[0].pkts) != 2 {
		t.Error("garbage forwarded")
	}
}

// Once stopped (kick, leave), a track forwards nothing, whatever arrives.
func TestTrack_stoppedForwardsNothing(t *testing.T) {
	tr, downs, caps := testTrack(2)
	var h outBuf
	tr.handle(packet(t, 1, "a"), &h)
	tr.stop()
	for seq := uint16(2); seq < 100; seq++ {
		tr.handle(packet(t, seq, "after"), &h)
	}
	downs[0].resend(1, &h)
	for i, c := range caps {
		if len(c.pkts) != 1 {
			t.Errorf("subscriber %d got %d packets, want the 1 before the stop", i, len(c.pkts))
		}
	}
}

// NACKed packets are sent again from the cache, as they were, to the one
// subscriber that asked; packets the cache no longer has are not.
func TestTrack_retransmitsFromCache(t *testing.T) {
	tr, downs, caps := testTrack(2)
	var h outBuf
	for seq := uint16(65400); seq != 20; seq++ { // across the wrap
		tr.handle(packet(t, seq, "p"+string(rune('a'+seq%26))), &h)
	}
	before := len(caps[0].pkts)
	for _, seq := range []uint16{65535, 3, 65420} { // 65420: long gone, the cache holds 64
		if downs[0].resend(seq, &h) > 0 {
			tr.retransmits.Add(1)
		}
	}
	got := caps[0].pkts[before:]
	if len(got) != 2 || got[0].SequenceNumber != 65535 || got[1].SequenceNumber != 3 {
		t.Fatalf("retransmitted %v", got)
	}
	if string(got[0].Payload) != "p"+string(rune('a'+65535%26)) || got[0].SSRC != 1000 || got[0].Extension {
		t.Errorf("retransmission %+v", got[0])
	}
	if len(caps[1].pkts) != before {
		t.Error("the other subscriber got retransmissions")
	}
	if tr.retransmits.Load() != 2 {
		t.Errorf("retransmits = %d", tr.retransmits.Load())
	}
	tr.closeCache()
	if downs[0].resend(3, &h) > 0 {
		t.Error("resent from a closed cache")
	}
}

// The cost of forwarding one packet to 200 subscribers, without pion's
// encryption and the kernel: the SFU's own share.
func BenchmarkTrack_handle200(b *testing.B) {
	benchHandle200(b, func() *binding { return &binding{ssrc: 1, pt: 96, ws: discard{}} })
}

// The same with transport-wide sequence numbers: what they add to each
// packet forwarded (a number, a clock read, the send history).
func BenchmarkTrack_handle200TWCC(b *testing.B) {
	// A connection each, as in a meeting.
	benchHandle200(b, func() *binding { return &binding{ssrc: 1, pt: 96, ws: discard{}, twcc: 3, hist: &sendHistory{}} })
}

// benchHandle200 times forwarding to 200 subscribers bound by bind.
func benchHandle200(b *testing.B, bind func() *binding) {
	tr, downs, _ := testTrack(200)
	for _, d := range downs {
		d.b.Store(bind())
	}
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: 42}, Payload: make([]byte, 1100)}
	buf, _ := p.Marshal()
	var h outBuf
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf[2], buf[3] = byte(i>>8), byte(i)
		tr.handle(buf, &h)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/200, "ns/forward")
}

type discard struct{}

func (discard) WriteRTP(h *rtp.Header, payload []byte) (int, error) { return len(payload), nil }
func (discard) Write(b []byte) (int, error)                         { return len(b), nil }

// RTCP read on the direct path reaches the stream it names: a NACK is
// answered to that subscriber's stream only, from the cache; a NACK for
// a stream the subscriber does not receive, and garbage, change nothing.
func TestSession_handleRTCP(t *testing.T) {
	tr, downs, caps := testTrack(2)
	s := &Session{bwe: newEstimator(initialEstimate), subscriberSide: subscriberSide{downs: map[*Track]*downTrack{tr: downs[0]}}}
	var o outBuf
	for seq := uint16(1); seq <= 10; seq++ {
		tr.handle(packet(t, seq, "p"), &o)
	}
	before := [2]int{len(caps[0].pkts), len(caps[1].pkts)}
	compound, err := rtcp.Marshal([]rtcp.Packet{
		&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 1000, FractionLost: 0}}},
		&rtcp.TransportLayerNack{MediaSSRC: 1000, Nacks: []rtcp.NackPair{{PacketID: 4}}},
		&rtcp.TransportLayerNack{MediaSSRC: 1001, Nacks: []rtcp.NackPair{{PacketID: 5}}}, // not this session's
		&rtcp.TransportLayerNack{MediaSSRC: 77, Nacks: []rtcp.NackPair{{PacketID: 6}}},   // nobody's
	})
	if err != nil {
		t.Fatal(err)
	}
	s.handleRTCP(compound, &o)
	got := caps[0].pkts[before[0]:]
	if len(got) != 1 || got[0].SequenceNumber != 4 || got[0].SSRC != 1000 {
		t.Fatalf("retransmitted %+v", got)
	}
	if len(caps[1].pkts) != before[1] {
		t.Error("a NACK reached a stream of another session")
	}
	for _, junk := range [][]byte{nil, {0x80}, {0x81, 205, 0xff, 0xff}, compound[:10]} {
		s.handleRTCP(junk, &o)
	}
	if len(caps[0].pkts) != before[0]+1 {
		t.Error("garbage made packets")
	}
}
