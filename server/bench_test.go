package server

import (
	"io"
	"net"
	"testing"
)

// BenchmarkLoopbackSend is the floor under any fan-out measured on
// loopback: one non-blocking write of a 300-byte frame to a TCP socket whose
// reader is another goroutine, through the same path the fan-out uses.
func BenchmarkLoopbackSend(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	w := newRawWriter(c)
	frame := textFrame(make([]byte, 300)).([]byte)
	b.ReportAllocs()
	for b.Loop() {
		if n, err := w.write(frame); err != nil || n != len(frame) {
			if err != nil {
				b.Fatal(err)
			}
			c.Write(frame[n:]) // the socket was full: wait for room
		}
	}
}
