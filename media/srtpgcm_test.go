package media

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// The direct path's own GCM encryption writes, byte for byte, what
// pion/srtp's Context writes for the same packets — headers with CSRCs
// and extensions, across a rollover of the sequence number — for both
// AEAD profiles, and pion decrypts it.
func TestRTPGCM_matchesPion(t *testing.T) {
	for _, profile := range []srtp.ProtectionProfile{srtp.ProtectionProfileAeadAes128Gcm, srtp.ProtectionProfileAeadAes256Gcm} {
		keyLen, _ := profile.KeyLen()
		key, salt := make([]byte, keyLen), make([]byte, 12)
		rand.Read(key)
		rand.Read(salt)
		g, err := newRTPGCM(profile, key, salt)
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := srtp.CreateContext(key, salt, profile)
		dec, _ := srtp.CreateContext(key, salt, profile)
		buf := make([]byte, maxPacket+srtpOverhead)
		seq, index := uint16(65530), uint64(65530)
		for i := range 20 {
			h := rtp.Header{Version: 2, SSRC: 0xdeadbeef, SequenceNumber: seq, Timestamp: uint32(i) * 3000, PayloadType: 96, Marker: i%3 == 0}
			if i%2 == 1 {
				h.CSRC = []uint32{7, 8}
			}
			if i%4 >= 2 {
				if err := h.SetExtension(1, []byte{byte(i), 2}); err != nil {
					t.Fatal(err)
				}
				if err := h.SetExtension(3, []byte{9, 9, 9}); err != nil {
					t.Fatal(err)
				}
			}
			payload := bytes.Repeat([]byte{byte(i)}, 100+i*37)
			pkt, err := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want, err := enc.EncryptRTP(nil, pkt, nil)
			if err != nil {
				t.Fatal(err)
			}
			n := copy(buf, pkt)
			got := g.seal(buf[:n], h.MarshalSize(), h.SSRC, index)
			if !bytes.Equal(got, want) {
				t.Fatalf("profile %v, packet %d (sequence number %d): our SRTP differs from pion's\n got %x\nwant %x", profile, i, seq, got, want)
			}
			if &got[0] != &buf[0] {
				t.Fatalf("packet %d: sealed outside the buffer given", i)
			}
			if _, err := dec.DecryptRTP(nil, got, nil); err != nil {
				t.Fatalf("profile %v, packet %d: pion cannot decrypt it: %v", profile, i, err)
			}
			seq++
			index++
		}
	}
}

// Only the AEAD GCM profiles, with their 12-byte salts, are taken.
func TestRTPGCM_refuses(t *testing.T) {
	if _, err := newRTPGCM(srtp.ProtectionProfileAes128CmHmacSha1_80, make([]byte, 16), make([]byte, 14)); err == nil {
		t.Error("took AES_CM_128_HMAC_SHA1_80")
	}
	if _, err := newRTPGCM(srtp.ProtectionProfileAeadAes128Gcm, make([]byte, 16), make([]byte, 14)); err == nil {
		t.Error("took a 14-byte salt")
	}
	if _, err := newRTPGCM(srtp.ProtectionProfileAeadAes128Gcm, make([]byte, 15), make([]byte, 12)); err == nil {
		t.Error("took a 15-byte key")
	}
}

// BenchmarkSRTPSeal compares pion's Context with the direct path's own
// encryption (AES-128-GCM both) for 1,200-byte RTP packets, each packet
// encrypted for 1 or for 200 subscribers (each its own keys), as the
// fan-out does; ns/op is per encryption.
func BenchmarkSRTPSeal(b *testing.B) {
	h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 1}
	payload := make([]byte, 1200-12)
	buf := make([]byte, 1500)
	key := func(i int) ([]byte, []byte) {
		return bytes.Repeat([]byte{byte(i)}, 16), bytes.Repeat([]byte{byte(i >> 8), 2}, 6)
	}
	// A sealer returns, for subs subscribers' keys, what encrypts the
	// packet of header length n in buf for subscriber i.
	type sealer func(b *testing.B, subs int) func(i, n int)
	for _, impl := range []struct {
		name string
		make sealer
	}{
		{"pion", func(b *testing.B, subs int) func(i, n int) {
			ctxs := make([]*srtp.Context, subs)
			for i := range ctxs {
				k, s := key(i)
				ctxs[i], _ = srtp.CreateContext(k, s, srtp.ProtectionProfileAeadAes128Gcm)
			}
			var scratch rtp.Header
			return func(i, n int) {
				if _, err := ctxs[i].EncryptRTP(buf[:0], buf[:n+len(payload)], &scratch); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"own", func(_ *testing.B, subs int) func(i, n int) {
			gs := make([]*rtpGCM, subs)
			for i := range gs {
				k, s := key(i)
				gs[i], _ = newRTPGCM(srtp.ProtectionProfileAeadAes128Gcm, k, s)
			}
			return func(i, n int) { gs[i].seal(buf[:n+len(payload)], n, h.SSRC, uint64(h.SequenceNumber)) }
		}},
	} {
		for _, subs := range []int{1, 200} {
			b.Run(fmt.Sprintf("%s/%d", impl.name, subs), func(b *testing.B) {
				seal := impl.make(b, subs)
				i := 0
				for b.Loop() {
					if i++; i == subs {
						i = 0
						h.SequenceNumber++
					}
					n, _ := h.MarshalTo(buf)
					copy(buf[n:], payload)
					seal(i, n)
				}
			})
		}
	}
}
