package media

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"

	"github.com/pion/srtp/v3"
)

// rtpGCM encrypts RTP packets with SRTP's AEAD_AES_128_GCM or
// AEAD_AES_256_GCM transform (RFC 7714) — the profiles browsers and pion
// negotiate first — for the direct path. pion/srtp's Context does the
// same, but per packet it also parses the header again, looks up the
// SSRC's state in a map and works out the rollover count, all of which
// the direct path already knows (downState numbers every packet): at 200
// subscribers that was a third of the encryption's cost. It keeps no
// state per packet, so one rtpGCM serves any SSRC and any order, one
// packet at a time.
type rtpGCM struct {
	aead cipher.AEAD
	salt [12]byte // the session salt
	iv   [12]byte // scratch: a nonce on the stack escapes to the heap
}

// SRTP's key derivation labels (RFC 3711 section 4.3.2).
const (
	labelSRTPEncryption = 0x00
	labelSRTPSalt       = 0x02
)

// newRTPGCM returns the RTP encryption of a master key and salt, or an
// error if the profile is not one of the AEAD GCM ones.
func newRTPGCM(profile srtp.ProtectionProfile, masterKey, masterSalt []byte) (*rtpGCM, error) {
	switch profile {
	case srtp.ProtectionProfileAeadAes128Gcm, srtp.ProtectionProfileAeadAes256Gcm:
	default:
		return nil, errors.New("media: not an AEAD GCM profile")
	}
	if len(masterSalt) != 12 {
		return nil, errors.New("media: an AEAD GCM master salt is 12 bytes")
	}
	key, err := srtpKDF(labelSRTPEncryption, masterKey, masterSalt, len(masterKey))
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block) // 12-byte nonce, 16-byte tag: RFC 7714's
	if err != nil {
		return nil, err
	}
	g := &rtpGCM{aead: aead}
	salt, err := srtpKDF(labelSRTPSalt, masterKey, masterSalt, len(masterSalt))
	if err != nil {
		return nil, err
	}
	copy(g.salt[:], salt)
	return g, nil
}

// srtpKDF is SRTP's key derivation with a key derivation rate of zero
// (RFC 3711 section 4.3.1 and appendix B.3, which RFC 7714 section 11
// keeps): AES in counter mode under the master key, from the master salt
// (left-aligned in the block) with the label at its eighth byte, the
// counter in the last two.
func srtpKDF(label byte, masterKey, masterSalt []byte, n int) ([]byte, error) {
	block, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, err
	}
	if len(masterSalt) > aes.BlockSize-2 {
		return nil, errors.New("media: SRTP master salt too long")
	}
	var in [aes.BlockSize]byte
	copy(in[:], masterSalt)
	in[7] ^= label
	out := make([]byte, (n+aes.BlockSize-1)/aes.BlockSize*aes.BlockSize)
	for i := 0; i*aes.BlockSize < n; i++ {
		binary.BigEndian.PutUint16(in[aes.BlockSize-2:], uint16(i))
		block.Encrypt(out[i*aes.BlockSize:], in[:])
	}
	return out[:n], nil
}

// seal encrypts in place the RTP packet pkt, whose header is its first
// headerLen bytes, as packet index (rollover count << 16 | sequence
// number) of ssrc, and returns the SRTP packet: the header, the encrypted
// payload and the 16-byte tag, which must fit in pkt's capacity.
func (g *rtpGCM) seal(pkt []byte, headerLen int, ssrc uint32, index uint64) []byte {
	// The nonce: 0x0000, SSRC, ROC, SEQ, XORed with the session salt
	// (RFC 7714 section 8.1).
	iv := &g.iv
	*iv = [12]byte{}
	binary.BigEndian.PutUint32(iv[2:], ssrc)
	binary.BigEndian.PutUint32(iv[6:], uint32(index>>16))
	binary.BigEndian.PutUint16(iv[10:], uint16(index))
	for i := range iv {
		iv[i] ^= g.salt[i]
	}
	// The header is the associated data; the payload is encrypted where
	// it lies.
	return g.aead.Seal(pkt[:headerLen], iv[:], pkt[headerLen:], pkt[:headerLen])
}
