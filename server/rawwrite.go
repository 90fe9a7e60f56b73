package server

import (
	"errors"
	"net"
	"syscall"
)

// rawWriter writes to a socket without ever blocking: what the socket has no
// room for is left to the caller. It uses the connection's file descriptor
// through syscall.RawConn, which holds the descriptor's write lock, so its
// writes never interleave with the net.Conn's own.
type rawWriter struct {
	rc syscall.RawConn // nil when the connection has no descriptor
}

func newRawWriter(c net.Conn) rawWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return rawWriter{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return rawWriter{}
	}
	return rawWriter{rc: rc}
}

// write writes what it can of b at once and returns how much that was.
func (r rawWriter) write(b []byte) (int, error) {
	if r.rc == nil {
		return 0, nil // the caller falls back to a blocking writer
	}
	var n int
	var werr error
	err := r.rc.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if !errors.Is(werr, syscall.EINTR) {
				return true // never wait for room: report and let the caller queue
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if errors.Is(werr, syscall.EAGAIN) {
		return 0, nil
	}
	if werr != nil {
		return 0, werr
	}
	return max(n, 0), nil
}
