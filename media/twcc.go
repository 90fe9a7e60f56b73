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
// an atomic add and an atomic store: no pacer, no goroutine, no
// allocation.

// historySize is how many sent packets a subscriber connection remembers
// for its feedback: over a second at 450 packets a second (four cameras of
// three layers and their audio), while feedback comes every 50–250 ms.
const historySize = 512

// sendHistory numbers a subscriber connection's packets and remembers when
// each was sent and how large it was, in one word a packet: 4 KB a
// connection, one store a packet. Any goroutine may add; one reads (under
// estimator.mu). A slot is reused historySize packets later: a lookup
// checks that the slot still holds the sequence number asked for.
type sendHistory struct {
	next  atomic.Uint32
	slots [historySize]atomic.Uint64 // seq<<48 | size<<32 | sent time in µs, the low 32 bits
}

// add numbers a packet of size bytes sent at now (unix ns).
func (h *sendHistory) add(size int, now int64) uint16 {
	seq := uint16(h.next.Add(1) - 1)
	h.slots[seq%historySize].Store(uint64(seq)<<48 | uint64(min(size, 0xffff))<<32 | uint64(uint32(now/1000)))
	return seq
}

// lookup returns when packet seq was sent (unix ns, as close to now as
// the 32-bit µs clock of the slot allows: within 71 minutes) and its
// size, if it is still remembered.
func (h *sendHistory) lookup(seq uint16, now int64) (at int64, size int, ok bool) {
	v := h.slots[seq%historySize].Load()
	if v == 0 || uint16(v>>48) != seq {
		return 0, 0, false
	}
	return sentAt(uint32(v), now), int(v >> 32 & 0xffff), true
}

// sentAt widens a slot's 32-bit µs clock to unix ns, taking the time
// nearest now.
func sentAt(us uint32, now int64) int64 {
	return now + int64(int32(us-uint32(now/1000)))*1000
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

// isTWCC reports whether RTCP packet p (one of a compound packet) is
// transport-wide feedback: transport layer feedback (205), format 15.
func isTWCC(p []byte) bool { return len(p) >= 4 && p[1] == 205 && p[0]&0x1f == 15 }

// walkFeedback calls f for every packet transport-wide feedback fb (one
// RTCP packet, as received) reports, in order: its transport-wide
// sequence number and, if it arrived, its arrival time in µs on the
// receiver's clock (arrived false: reported lost). It reads the wire
// format itself, allocating nothing: feedback comes from every subscriber
// ten or more times a second. Feedback that ends before its statuses or
// deltas do is read as far as it makes sense and no further; it reports
// whether it was whole.
func walkFeedback(fb []byte, f func(seq uint16, arrival int64, arrived bool)) bool {
	const head = 20 // header, two SSRCs, base, count, reference time, feedback count
	if len(fb) < head {
		return false
	}
	if n := (int(binary.BigEndian.Uint16(fb[2:4])) + 1) * 4; n <= len(fb) {
		fb = fb[:n]
	}
	if fb[0]&0x20 != 0 { // padded: the last byte says how much
		if pad := int(fb[len(fb)-1]); pad > 0 && pad <= len(fb)-head {
			fb = fb[:len(fb)-pad]
		}
	}
	if len(fb) < head {
		return false
	}
	seq := binary.BigEndian.Uint16(fb[12:14])
	count := int(binary.BigEndian.Uint16(fb[14:16]))
	ref := int64(binary.BigEndian.Uint32(fb[16:20]) >> 8) // 24 bits
	// The chunks first, to find where the deltas start.
	chunks := fb[head:]
	nchunks := 0
	for covered := 0; covered < count; nchunks++ {
		if 2*nchunks+2 > len(chunks) {
			return false
		}
		covered += chunkLen(binary.BigEndian.Uint16(chunks[2*nchunks:]))
	}
	deltas := chunks[2*nchunks:]
	arrival := ref * 64_000 // 64 ms units
	left := count
	for i := range nchunks {
		c := binary.BigEndian.Uint16(chunks[2*i:])
		for k := range min(chunkLen(c), left) {
			left--
			switch chunkSymbol(c, k) {
			case tccSmallDelta:
				if len(deltas) < 1 {
					return false
				}
				arrival += int64(deltas[0]) * 250
				deltas = deltas[1:]
				f(seq, arrival, true)
			case tccLargeDelta:
				if len(deltas) < 2 {
					return false
				}
				arrival += int64(int16(binary.BigEndian.Uint16(deltas))) * 250
				deltas = deltas[2:]
				f(seq, arrival, true)
			default: // not received, or the reserved symbol
				f(seq, 0, false)
			}
			seq++
		}
	}
	return true
}

// chunkLen is how many statuses packet status chunk c holds.
func chunkLen(c uint16) int {
	switch {
	case c&0x8000 == 0: // run length
		return int(c & 0x1fff)
	case c&0x4000 == 0: // status vector of 1-bit symbols
		return 14
	default: // of 2-bit symbols
		return 7
	}
}

// chunkSymbol is status k of chunk c.
func chunkSymbol(c uint16, k int) uint16 {
	switch {
	case c&0x8000 == 0:
		return c >> 13 & 3
	case c&0x4000 == 0:
		return c >> (13 - k) & 1 // 1: received, small delta
	default:
		return c >> (12 - 2*k) & 3
	}
}
