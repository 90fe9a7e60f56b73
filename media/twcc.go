package media

import (
	"encoding/binary"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-
// extensions) on the subscriber connections, written by the SFU itself
// rather than by pion's interceptors: each packet sent to a subscriber
// carries a transport-wide sequence number, its send time and size are
// kept (sendHistory), and the subscriber's feedback, which says when each
// arrived, feeds its estimator (bwe.go). The cost per forwarded packet is
// an atomic add, a clock read and two atomic stores: no pacer, no
// goroutine, no allocation.

// historySize is how many sent packets a subscriber connection remembers
// for its feedback: over 2 s at 450 packets a second (four cameras of
// three layers and their audio), while feedback comes every 50–100 ms.
const historySize = 1024

// sendHistory numbers a subscriber connection's packets and remembers when
// each was sent and how large it was. Any goroutine may add; one reads
// (under estimator.mu). A slot is reused historySize packets later: a
// lookup checks that the slot still holds the sequence number asked for.
type sendHistory struct {
	next  atomic.Uint32
	slots [historySize]struct {
		meta atomic.Uint32 // seq<<16 | size (bytes, at most 65535)
		at   atomic.Int64  // unix ns
	}
}

// add numbers a packet of size bytes sent at now (unix ns).
func (h *sendHistory) add(size int, now int64) uint16 {
	seq := uint16(h.next.Add(1) - 1)
	s := &h.slots[seq%historySize]
	s.at.Store(now)
	s.meta.Store(uint32(seq)<<16 | uint32(min(size, 0xffff)))
	return seq
}

// lookup returns when packet seq was sent and its size, if it is still
// remembered.
func (h *sendHistory) lookup(seq uint16) (at int64, size int, ok bool) {
	s := &h.slots[seq%historySize]
	at = s.at.Load()
	m := s.meta.Load()
	if uint16(m>>16) != seq || at == 0 {
		return 0, 0, false
	}
	return at, int(m & 0xffff), true
}

// setTransportSeq puts a transport-wide sequence number in h under
// extension id, with ext (2 bytes, the caller's) as the extension's
// storage; h's other extensions have been stripped.
func setTransportSeq(h *rtp.Header, id uint8, seq uint16, ext []byte) {
	binary.BigEndian.PutUint16(ext, seq)
	h.Extensions = h.Extensions[:0]
	h.Extension = false
	h.SetExtension(id, ext)
}

// Packet statuses in transport-wide feedback.
const (
	tccNotReceived = rtcp.TypeTCCPacketNotReceived
	tccSmallDelta  = rtcp.TypeTCCPacketReceivedSmallDelta
	tccLargeDelta  = rtcp.TypeTCCPacketReceivedLargeDelta
)

// walkFeedback calls f for every packet fb reports, in order: its
// transport-wide sequence number and, if it arrived, its arrival time in
// µs on the receiver's clock (arrived false: reported lost). Feedback
// whose deltas run out before its statuses do, or whose chunks claim more
// packets than its count, is read as far as it makes sense and no
// further; it reports whether it was whole.
func walkFeedback(fb *rtcp.TransportLayerCC, f func(seq uint16, arrival int64, arrived bool)) bool {
	seq := fb.BaseSequenceNumber
	left := int(fb.PacketStatusCount)
	arrival := int64(fb.ReferenceTime) * 64_000 // 64 ms units
	deltas := fb.RecvDeltas
	status := func(s uint16) bool {
		if left == 0 {
			return false
		}
		left--
		switch s {
		case tccSmallDelta, tccLargeDelta:
			if len(deltas) == 0 || deltas[0] == nil {
				return false
			}
			arrival += deltas[0].Delta
			deltas = deltas[1:]
			f(seq, arrival, true)
		default: // not received, or the reserved symbol
			f(seq, 0, false)
		}
		seq++
		return true
	}
	for _, c := range fb.PacketChunks {
		switch c := c.(type) {
		case *rtcp.RunLengthChunk:
			for range c.RunLength {
				if !status(c.PacketStatusSymbol) {
					return left == 0 && len(deltas) == 0
				}
			}
		case *rtcp.StatusVectorChunk:
			for _, s := range c.SymbolList {
				if c.SymbolSize == rtcp.TypeTCCSymbolSizeOneBit && s == 1 {
					s = tccSmallDelta
				}
				if !status(s) {
					// The last chunk may hold statuses past the count:
					// not an error.
					return left == 0 && len(deltas) == 0
				}
			}
		default:
			return false
		}
	}
	return left == 0 && len(deltas) == 0
}
