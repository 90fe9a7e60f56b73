package server

import (
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkLoopbackSend is the floor under any fan-out measured on
// loopback: one non-blocking write of a 300-byte frame to a TCP socket whose
// reader is another goroutine, through the same path the fan-out uses. With
// many sockets written in turn, as a fan-out does, each write finds its
// socket's kernel state cold.
func BenchmarkLoopbackSend(b *testing.B) {
	for _, n := range []int{1, 1000, 5000} {
		b.Run(fmt.Sprint("sockets=", n), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(io.Discard, c); c.Close() }()
				}
			}()
			conns := make([]net.Conn, n)
			writers := make([]*rawWriter, n)
			for i := range conns {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns[i], writers[i] = c, newRawWriter(c)
			}
			frame := textFrame(make([]byte, 300)).([]byte)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if n, err := writers[i].write(frame); err != nil || n != len(frame) {
					if err != nil {
						b.Fatal(err)
					}
					conns[i].Write(frame[n:]) // the socket was full: wait for room
				}
				i = (i + 1) % len(conns)
			}
		})
	}
}
