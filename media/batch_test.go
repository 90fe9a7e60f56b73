package media

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

func udpPair(t testing.TB, n int) (*net.UDPConn, []*net.UDPConn) {
	t.Helper()
	s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var rs []*net.UDPConn
	for range n {
		r, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		r.SetReadBuffer(4 << 20)
		t.Cleanup(func() { r.Close() })
		rs = append(rs, r)
	}
	return s, rs
}

// Datagrams written inside a batch arrive, each to its address, with its
// bytes; outside a batch they go at once.
func TestBatchConn(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) {
		s, rs := udpPair(t, 3)
		testBatchConn(t, s, rs)
	})
	t.Run("every interface", func(t *testing.T) { // as cocmd serve listens by default: IPv6 where there is IPv6
		_, rs := udpPair(t, 3)
		c, err := net.ListenPacket("udp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		testBatchConn(t, c.(*net.UDPConn), rs)
	})
}

func testBatchConn(t *testing.T, s *net.UDPConn, rs []*net.UDPConn) {
	b := newBatchConn(s)
	b.begin()
	for round := range 50 { // more than a batch holds
		for i, r := range rs {
			addr := r.LocalAddr().(*net.UDPAddr).AddrPort()
			if _, err := b.WriteToAddrPort([]byte{byte(i), byte(round)}, addr); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.end()
	if _, err := b.WriteTo([]byte{9, 9}, rs[0].LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	for i, r := range rs {
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		for round := range 50 {
			n, _, err := r.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("socket %d, datagram %d: %v", i, round, err)
			}
			if !bytes.Equal(buf[:n], []byte{byte(i), byte(round)}) {
				t.Fatalf("socket %d got %v, want %v", i, buf[:n], []byte{byte(i), byte(round)})
			}
		}
	}
	n, _, err := rs[0].ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte{9, 9}) {
		t.Fatalf("the write outside a batch: %v %v", buf[:n], err)
	}
}

// The kernel's cost of a fan-out to 200 loopback sockets, drained by
// readers: one sendto per datagram, or sendmmsg through batchConn. On
// loopback the sender also pays for much of the receivers' side.
func BenchmarkSend200(b *testing.B) {
	s, rs := udpPair(b, 200)
	addrs := make([]netip.AddrPort, len(rs))
	for i, r := range rs {
		addrs[i] = r.LocalAddr().(*net.UDPAddr).AddrPort()
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := r.ReadFromUDPAddrPort(buf); err != nil {
					return
				}
			}
		}()
	}
	p := make([]byte, 1200)
	bc := newBatchConn(s)
	for _, batch := range []bool{false, true} {
		name := "sendto"
		if batch {
			name = "sendmmsg"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if batch {
					bc.begin()
				}
				for _, a := range addrs {
					bc.WriteToAddrPort(p, a)
				}
				if batch {
					bc.end()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/200, "ns/datagram")
		})
	}
	// The direct path's floor: each datagram an RTP packet encrypted with
	// its subscriber's own SRTP context (AES-128-GCM, as pion and
	// browsers choose) and sent in the fan-out's sendmmsg, as
	// downTrack.write does; nothing else of forwarding.
	b.Run("srtp+sendmmsg", func(b *testing.B) {
		keys := &srtpKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: bytes.Repeat([]byte{1}, 16), salt: bytes.Repeat([]byte{2}, 12)}
		path := &directPath{batch: bc}
		states := make([]downState, len(addrs))
		buf := make([]byte, 1500)
		h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 1}
		payload := p[:1200-12]
		for b.Loop() {
			h.SequenceNumber++
			h.Timestamp += 3000
			bc.begin()
			for i, a := range addrs {
				if !states[i].sendDirect(path, keys, a, &h, payload, buf, 0) {
					b.Fatal("sendDirect failed")
				}
			}
			bc.end()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/200, "ns/datagram")
	})
}
