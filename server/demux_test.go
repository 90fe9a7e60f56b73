package server

import (
	"io"
	"net"
	"testing"
	"time"
)

// The shared port routes by the first byte: TLS and HTTP to the web, the
// rest (ICE-TCP's framed STUN) to the media; a connection that sends
// nothing is closed after the timeout; closing either side closes the port.
func TestSplitTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web, ice := SplitTCP(ln, 200*time.Millisecond)
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
	send([]byte{0x00, 0x38, 0x00, 0x01}) // RFC 4571 length, then a STUN binding request
	expect(ice, 0x00, "framed STUN")

	silent := send(nil)
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a silent connection: %v, want it closed", err)
	}
	web.Close()
	if _, err := ice.Accept(); err == nil {
		t.Fatal("the media side accepts after the port was closed")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("the port is still open")
	}
}
