package server

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cocmd/cocmd/internal/testcert"
)

// The shared port routes by the first byte: TLS and HTTP to the web, the
// rest (ICE-TCP's framed STUN) to the media; a connection that sends
// nothing is closed after the timeout; closing either side closes the port.
func TestSplitTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := SplitTCP(ln, 200*time.Millisecond)
	web, ice := r.Web, r.ICE
	send := func(first []byte) net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.Write(first)
		return c
	}
	expect := func(l net.Listener, want byte, what string) {
		t.Helper()
		got := make(chan byte, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			b := make([]byte, 1)
			io.ReadFull(c, b)
			got <- b[0]
		}()
		select {
		case b := <-got:
			if b != want {
				t.Fatalf("%s: first byte %#x, want %#x (the peeked byte must not be lost)", what, b, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not routed", what)
		}
	}
	send([]byte{0x16, 0x03, 0x01})
	expect(web, 0x16, "a TLS ClientHello")
	send([]byte("GET / HTTP/1.1\r\n"))
	expect(web, 'G', "an HTTP request")
	stunHeader := func(typ uint16) []byte { // a STUN header, its magic cookie in bytes 4-7
		return []byte{byte(typ >> 8), byte(typ), 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	}
	send(append([]byte{0x00, 0x38}, stunHeader(0x0001)...)) // RFC 4571 length, then a STUN binding request
	expect(ice, 0x00, "framed STUN")
	send(stunHeader(0x0003)) // a TURN Allocate request, unframed
	expect(r.TURN, 0x00, "TURN over TCP")

	silent := send(nil)
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a silent connection: %v, want it closed", err)
	}
	r.TURN.Close()
	if _, err := r.TURN.Accept(); err == nil {
		t.Fatal("the TURN route accepts after it was closed")
	}
	turned := send(stunHeader(0x0003))
	turned.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := turned.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("TURN over TCP after its route closed: %v, want the connection closed", err)
	}
	send([]byte("GET / HTTP/1.1\r\n"))
	expect(web, 'G', "an HTTP request after TURN's route closed") // the port still serves
	web.Close()
	if _, err := ice.Accept(); err == nil {
		t.Fatal("the media side accepts after the port was closed")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("the port is still open")
	}
}

// Over TLS, the port routes by ALPN: h2 and http/1.1 to the web as the
// *tls.Conn itself, stun.turn to TURN; without ALPN, by the first
// decrypted byte. Not TLS, a failed handshake, and an ACME TLS-ALPN-01
// validation (its handshake is all it wants) are closed.
func TestSplitTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = append(cfg.NextProtos, "acme-tls/1")
	web, turn := SplitTLS(ln, cfg, time.Second)
	defer web.Close()
	dial := func(alpn []string, first string) net.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: alpn})
		if err != nil {
			t.Fatalf("ALPN %q: %v", alpn, err)
		}
		t.Cleanup(func() { c.Close() })
		if first != "" {
			c.Write([]byte(first))
		}
		return c
	}
	expect := func(l net.Listener, what string, wantTLS bool, first byte) {
		t.Helper()
		type got struct {
			tls   bool
			first byte
		}
		ch := make(chan got, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_, isTLS := c.(*tls.Conn)
			b := make([]byte, 1)
			if first != 0 {
				io.ReadFull(c, b)
			}
			ch <- got{isTLS, b[0]}
		}()
		select {
		case g := <-ch:
			if g.tls != wantTLS || g.first != first {
				t.Fatalf("%s: *tls.Conn %v first %#x, want %v %#x", what, g.tls, g.first, wantTLS, first)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not routed", what)
		}
	}
	dial([]string{"h2"}, "")
	expect(web, "h2", true, 0)
	dial([]string{"http/1.1"}, "G")
	expect(web, "http/1.1", true, 'G')
	dial([]string{"stun.turn"}, "\x00")
	expect(turn, "stun.turn", true, 0x00)
	dial(nil, "\x00\x03")
	expect(turn, "TURN without ALPN", false, 0x00)
	dial(nil, "GET / HTTP/1.1\r\n")
	expect(web, "HTTP without ALPN", false, 'G')

	closed := func(c net.Conn, what string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("%s: the connection is open", what)
		}
	}
	closed(dial([]string{"acme-tls/1"}, ""), "an ACME validation")
	plain, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	closed(plain, "plain HTTP")
}
