package media

import (
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// senderReports sends subscriber connection pc a sender report for each
// stream it receives every senderReportInterval, until the session ends.
// The SFU counts what it sends itself (downState), on the direct path and
// on pion's: pion's report interceptor sees only what goes through pion's
// write path, and cost a lock per packet on every connection.
func (s *Session) senderReports(pc *webrtc.PeerConnection) {
	tick := time.NewTicker(senderReportInterval)
	defer tick.Stop()
	var pkts []rtcp.Packet
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		downs := make([]*downTrack, 0, len(s.downs))
		for _, d := range s.downs {
			downs = append(downs, d)
		}
		s.mu.Unlock()
		now := time.Now()
		pkts = pkts[:0]
		for _, d := range downs {
			if sr := d.senderReport(now); sr != nil {
				pkts = append(pkts, sr)
			}
			if len(pkts) == reportsPerPacket {
				_ = pc.WriteRTCP(pkts) // a lost report is replaced by the next
				pkts = pkts[:0]
			}
		}
		if len(pkts) > 0 {
			_ = pc.WriteRTCP(pkts)
		}
	}
}

// reportsPerPacket is the most sender reports one compound RTCP packet
// carries: 28 bytes each, well within a datagram.
const reportsPerPacket = 32

// senderReport returns the sender report of d at now, nil if nothing was
// sent yet.
func (d *downTrack) senderReport(now time.Time) *rtcp.SenderReport {
	b := d.b.Load()
	if b == nil {
		return nil
	}
	s := &d.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.packets == 0 {
		return nil
	}
	// The RTP clock runs on from the newest packet sent.
	elapsed := now.UnixNano() - s.at
	rtpTime := s.ts + uint32(elapsed*int64(d.t.codec.ClockRate)/int64(time.Second))
	return &rtcp.SenderReport{SSRC: b.ssrc, NTPTime: ntpTime(now), RTPTime: rtpTime,
		PacketCount: s.packets, OctetCount: s.octets}
}

// ntpTime is t in NTP's 64-bit fixed-point format: seconds since 1900 in
// the high 32 bits, the fraction in the low.
func ntpTime(t time.Time) uint64 {
	secs := uint64(t.Unix() + 2208988800)
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return secs<<32 | frac
}
