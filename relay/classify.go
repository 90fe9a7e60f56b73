package relay

import "encoding/binary"

// stunMagic is the magic cookie every STUN message carries in bytes 4–7.
const stunMagic = 0x2112A442

// IsTURN reports whether datagram p, arriving on the SFU's UDP port, is for
// the TURN server: a ChannelData message (first byte 0x40–0x4F, a range
// DTLS (20–63) and RTP/RTCP (128–191) never start with), a STUN message of
// any method but Binding, or a Binding request without USERNAME (a client
// learning its address; ICE's connectivity checks always carry USERNAME).
// Everything else — ICE checks and their answers, DTLS, SRTP — is the
// SFU's. It looks at headers only and allocates nothing.
func IsTURN(p []byte) bool {
	if len(p) >= 4 && p[0] >= 0x40 && p[0] <= 0x4F {
		return true
	}
	if len(p) < 20 || p[0]&0xC0 != 0 || binary.BigEndian.Uint32(p[4:8]) != stunMagic {
		return false
	}
	t := binary.BigEndian.Uint16(p[0:2])
	method := t&0x000F | (t&0x00E0)>>1 | (t&0x3E00)>>2
	if method != 0x001 {
		return true
	}
	if t&0x0110 != 0 { // not a request: an indication or a response
		return false
	}
	return !hasAttr(p, 0x0006)
}

// IsSTUNStream reports whether b, the first bytes of a TCP connection, is a
// STUN message (TURN over TCP) rather than RFC 4571 framed STUN (ICE-TCP,
// whose first two bytes are a length, so the magic cookie comes two bytes
// later). It needs at least 8 bytes.
func IsSTUNStream(b []byte) bool {
	return len(b) >= 8 && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == stunMagic
}

// hasAttr reports whether STUN message p has an attribute of type t.
func hasAttr(p []byte, t uint16) bool {
	n := int(binary.BigEndian.Uint16(p[2:4]))
	if 20+n > len(p) {
		n = len(p) - 20
	}
	b := p[20 : 20+n]
	for len(b) >= 4 {
		at := binary.BigEndian.Uint16(b[0:2])
		l := int(binary.BigEndian.Uint16(b[2:4]))
		if at == t {
			return true
		}
		l = (l + 3) &^ 3
		if 4+l > len(b) {
			return false
		}
		b = b[4+l:]
	}
	return false
}
