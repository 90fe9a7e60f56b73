package media

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// The keys the direct path derives from pion's DTLS hooks are the keys
// pion's DTLS exports for SRTP, for each SRTP profile and for cipher
// suites of both PRF hashes.
func TestDTLSSecrets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		profile dtls.SRTPProtectionProfile
		suite   dtls.CipherSuiteID
	}{
		{"gcm/sha256", dtls.SRTP_AEAD_AES_128_GCM, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		{"hmac/sha256", dtls.SRTP_AES128_CM_HMAC_SHA1_80, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		{"gcm/sha384", dtls.SRTP_AEAD_AES_128_GCM, dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var secrets dtlsSecrets
			server, client := dtlsPair(t, tc.profile, tc.suite, &secrets)
			got := secrets.keys.Load()
			if got == nil {
				t.Fatal("no keys derived")
			}
			state, ok := server.ConnectionState()
			if !ok {
				t.Fatal("no connection state")
			}
			cfg := srtp.Config{Profile: srtpProfile(tc.profile)}
			if err := cfg.ExtractSessionKeysFromDTLS(&state, false); err != nil {
				t.Fatal(err)
			}
			if got.profile != cfg.Profile || !bytes.Equal(got.key, cfg.Keys.LocalMasterKey) || !bytes.Equal(got.salt, cfg.Keys.LocalMasterSalt) {
				t.Fatalf("derived %v %x %x, DTLS exports %v %x %x", got.profile, got.key, got.salt, cfg.Profile, cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt)
			}
			if !bytes.Equal(got.rkey, cfg.Keys.RemoteMasterKey) || !bytes.Equal(got.rsalt, cfg.Keys.RemoteMasterSalt) {
				t.Fatalf("derived the client's %x %x, DTLS exports %x %x", got.rkey, got.rsalt, cfg.Keys.RemoteMasterKey, cfg.Keys.RemoteMasterSalt)
			}
			// And the client decrypts what they encrypt.
			cstate, _ := client.ConnectionState()
			ccfg := srtp.Config{Profile: cfg.Profile}
			if err := ccfg.ExtractSessionKeysFromDTLS(&cstate, true); err != nil {
				t.Fatal(err)
			}
			enc, err := srtp.CreateContext(got.key, got.salt, got.profile)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := srtp.CreateContext(ccfg.Keys.RemoteMasterKey, ccfg.Keys.RemoteMasterSalt, ccfg.Profile)
			if err != nil {
				t.Fatal(err)
			}
			pkt, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 7, SequenceNumber: 1}, Payload: []byte("media")}).Marshal()
			ct, err := enc.EncryptRTP(nil, pkt, nil)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := dec.DecryptRTP(nil, ct, nil)
			if err != nil || !bytes.Equal(pt, pkt) {
				t.Fatalf("decrypted %x, %v", pt, err)
			}
		})
	}
}

// A second handshake on the same connection leaves its keys unknown: the
// direct path is off, pion's path carries on.
func TestDTLSSecrets_secondHandshake(t *testing.T) {
	var secrets dtlsSecrets
	dtlsPair(t, dtls.SRTP_AEAD_AES_128_GCM, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, &secrets)
	if secrets.keys.Load() == nil {
		t.Fatal("no keys after the first handshake")
	}
	dtlsPair(t, dtls.SRTP_AEAD_AES_128_GCM, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, &secrets)
	if secrets.keys.Load() != nil {
		t.Fatal("keys after a second handshake")
	}
}

// The key log's writer ignores what it does not understand.
func TestDTLSSecrets_keyLog(t *testing.T) {
	var s dtlsSecrets
	for _, line := range []string{"", "CLIENT_RANDOM zz 00\n", "OTHER 00 00\n", "CLIENT_RANDOM 00\n"} {
		if n, err := s.Write([]byte(line)); n != len(line) || err != nil {
			t.Errorf("Write(%q) = %d, %v", line, n, err)
		}
	}
	if s.master != nil {
		t.Errorf("a secret from garbage: %x", s.master)
	}
}

// dtlsPair completes a DTLS handshake over loopback UDP between a client
// and a server whose hooks feed secrets, and returns both ends.
func dtlsPair(t *testing.T, profile dtls.SRTPProtectionProfile, suite dtls.CipherSuiteID, secrets *dtlsSecrets) (server, client *dtls.Conn) {
	t.Helper()
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	shared := []dtls.Option{dtls.WithCertificates(cert), dtls.WithInsecureSkipVerify(true),
		dtls.WithSRTPProtectionProfiles(profile), dtls.WithCipherSuites(suite)}
	var sopts []dtls.ServerOption
	for _, o := range shared {
		sopts = append(sopts, o)
	}
	sopts = append(sopts, dtls.WithKeyLogWriter(secrets), dtls.WithServerHelloMessageHook(secrets.serverHello))
	server, err = dtls.ServerWithOptions(sc, cc.LocalAddr(), sopts...)
	if err != nil {
		t.Fatal(err)
	}
	var copts []dtls.ClientOption
	for _, o := range shared {
		copts = append(copts, o)
	}
	client, err = dtls.ClientWithOptions(cc, sc.LocalAddr(), copts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 1)
	go func() { errs <- client.HandshakeContext(ctx) }()
	if err := server.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return server, client
}

// A stream that moves between pion's path and the direct path stays
// decryptable across a rollover of its sequence numbers: the direct
// path's context starts from the count pion's reached, and once the
// direct path has sent across a rollover pion's path refuses the stream
// (it would count from where it stopped) so that it is sent anew.
func TestDownState_rollover(t *testing.T) {
	keys, p, recv, to := directLoop(t)
	pion, _ := srtp.CreateContext(keys.key, keys.salt, keys.profile) // pion's session, as it would encrypt
	dec, _ := srtp.CreateContext(keys.key, keys.salt, keys.profile)  // the subscriber's
	var st downState
	buf := make([]byte, maxPacket+srtpOverhead)
	rbuf := make([]byte, maxPacket+srtpOverhead)
	payload := []byte("a payload")
	seq := uint16(65000)
	check := func(ct []byte, what string) {
		t.Helper()
		if _, err := dec.DecryptRTP(nil, ct, nil); err != nil {
			t.Fatalf("%s, sequence number %d: %v", what, seq, err)
		}
	}
	// pion's path across the rollover, then the direct path.
	for i := range 1200 {
		h := rtp.Header{Version: 2, SSRC: 9, SequenceNumber: seq, Timestamp: uint32(i) * 3000}
		if i < 700 {
			if !st.viaPion(&h, len(payload), 0) {
				t.Fatalf("pion's path refused packet %d", i)
			}
			pkt, _ := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
			ct, err := pion.EncryptRTP(nil, pkt, nil)
			if err != nil {
				t.Fatal(err)
			}
			check(ct, "pion's path")
		} else {
			if !st.sendDirect(p, keys, to, &h, payload, buf, 0) {
				t.Fatalf("the direct path refused packet %d", i)
			}
			recv.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := recv.Read(rbuf)
			if err != nil {
				t.Fatal(err)
			}
			check(rbuf[:n], "the direct path")
		}
		seq++
	}
	if st.packets != 1200 || st.octets != 1200*uint32(len(payload)) {
		t.Errorf("counted %d packets, %d octets", st.packets, st.octets)
	}
	// A short spell on the direct path: pion's count still follows.
	h := rtp.Header{Version: 2, SSRC: 9, SequenceNumber: seq}
	if !st.viaPion(&h, 0, 0) {
		t.Fatal("pion's path refused the stream after 500 packets on the direct path")
	}
	// Across a rollover on the direct path, it does not.
	for range 70000 {
		seq++
		st.mu.Lock()
		st.extendLocked(9, seq) // what sendDirect counts
		st.mu.Unlock()
	}
	h = rtp.Header{Version: 2, SSRC: 9, SequenceNumber: seq + 1}
	if st.viaPion(&h, 0, 0) {
		t.Fatal("pion's path took a stream the direct path sent across a rollover")
	}
}

// directLoop returns AES-128-GCM keys, a direct path on a loopback socket
// and the socket it sends to, with its address; closed when t ends.
func directLoop(t *testing.T) (*srtpKeys, *directPath, *net.UDPConn, netip.AddrPort) {
	t.Helper()
	keys := &srtpKeys{profile: srtp.ProtectionProfileAeadAes128Gcm, key: bytes.Repeat([]byte{1}, 16), salt: bytes.Repeat([]byte{2}, 12)}
	send, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { send.Close() })
	recv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })
	return keys, &directPath{batch: newBatchConn(send)}, recv, recv.LocalAddr().(*net.UDPAddr).AddrPort()
}

// A stream that goes on under another SSRC is counted anew: its receiver
// knows nothing of the old one's rollovers, and decrypts it from a count
// of zero.
func TestDownState_newSSRC(t *testing.T) {
	keys, p, recv, to := directLoop(t)
	dec, _ := srtp.CreateContext(keys.key, keys.salt, keys.profile) // the subscriber's
	var st downState
	buf := make([]byte, maxPacket+srtpOverhead)
	rbuf := make([]byte, maxPacket+srtpOverhead)
	payload := []byte("a payload")
	send1 := func(ssrc uint32, seq uint16) {
		t.Helper()
		h := rtp.Header{Version: 2, SSRC: ssrc, SequenceNumber: seq}
		if !st.sendDirect(p, keys, to, &h, payload, buf, 0) {
			t.Fatalf("the direct path refused SSRC %d, sequence number %d", ssrc, seq)
		}
		recv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := recv.Read(rbuf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dec.DecryptRTP(nil, rbuf[:n], nil); err != nil {
			t.Fatalf("SSRC %d, sequence number %d: %v", ssrc, seq, err)
		}
	}
	// SSRC 9 across a rollover, then SSRC 10 from sequence number 100.
	for seq := uint16(65500); seq != 100; seq++ {
		send1(9, seq)
	}
	for seq := uint16(100); seq < 200; seq++ {
		send1(10, seq)
	}
}
