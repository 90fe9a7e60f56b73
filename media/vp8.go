package media

import "encoding/binary"

// vp8Desc is what the SFU reads of a VP8 RTP payload (RFC 7741): where the
// picture ids sit, to rewrite them, and whether the packet starts a
// keyframe, with the keyframe's size.
type vp8Desc struct {
	start    bool // the first packet of a frame (S set, partition 0)
	keyframe bool // start of a keyframe
	picLen   int  // 0 (no PictureID), 1 (7 bits) or 2 (15 bits)
	picOff   int  // offset of the PictureID in the payload
	picID    uint16
	tl0Off   int // offset of TL0PICIDX, 0 when absent
	tl0      uint8
	hdrLen   int // length of the payload descriptor
	width    int // of a keyframe, else 0
	height   int
}

// parseVP8 reads the descriptor of payload p; ok is false when p is too
// short to be VP8.
func parseVP8(p []byte) (d vp8Desc, ok bool) {
	if len(p) < 1 {
		return d, false
	}
	i := 1
	x := p[0]&0x80 != 0
	d.start = p[0]&0x10 != 0 && p[0]&0x0f == 0
	if x {
		if len(p) < 2 {
			return d, false
		}
		ext := p[1]
		i = 2
		if ext&0x80 != 0 { // I: PictureID
			if len(p) < i+1 {
				return d, false
			}
			d.picOff = i
			if p[i]&0x80 != 0 { // M: 15 bits
				if len(p) < i+2 {
					return d, false
				}
				d.picLen, d.picID = 2, binary.BigEndian.Uint16(p[i:])&0x7fff
				i += 2
			} else {
				d.picLen, d.picID = 1, uint16(p[i]&0x7f)
				i++
			}
		}
		if ext&0x40 != 0 { // L: TL0PICIDX
			if len(p) < i+1 {
				return d, false
			}
			d.tl0Off, d.tl0 = i, p[i]
			i++
		}
		if ext&0x30 != 0 { // T or K: one byte
			i++
		}
	}
	if len(p) < i {
		return d, false
	}
	d.hdrLen = i
	if d.start && len(p) > i && p[i]&0x01 == 0 { // P clear: a keyframe
		d.keyframe = true
		// The frame tag (3 bytes), the start code 9d 01 2a, then the
		// width and height, 14 bits each, little endian (RFC 6386 9.1).
		if f := p[i:]; len(f) >= 10 && f[3] == 0x9d && f[4] == 0x01 && f[5] == 0x2a {
			d.width = int(binary.LittleEndian.Uint16(f[6:]) & 0x3fff)
			d.height = int(binary.LittleEndian.Uint16(f[8:]) & 0x3fff)
		}
	}
	return d, true
}

// setPictureID writes v (wrapped to the field's width) as the payload's
// PictureID, keeping its width.
func (d *vp8Desc) setPictureID(p []byte, v uint16) {
	switch d.picLen {
	case 1:
		p[d.picOff] = byte(v & 0x7f)
	case 2:
		binary.BigEndian.PutUint16(p[d.picOff:], 0x8000|v&0x7fff)
	}
}

// setTL0 writes v as the payload's TL0PICIDX.
func (d *vp8Desc) setTL0(p []byte, v uint8) {
	if d.tl0Off > 0 {
		p[d.tl0Off] = v
	}
}

// VP8KeyframeSize returns the picture size of a VP8 RTP payload that
// starts a keyframe; ok is false for any other payload. Receivers use it to
// tell which simulcast layer they get.
func VP8KeyframeSize(payload []byte) (width, height int, ok bool) {
	d, valid := parseVP8(payload)
	if !valid || !d.keyframe || d.width == 0 {
		return 0, 0, false
	}
	return d.width, d.height, true
}
