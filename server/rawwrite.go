package server

import (
	"errors"
	"net"
	"syscall"
)

// rawWriter writes to a socket without ever blocking: what the socket has no
// room for is left to the caller. It uses the connection's file descriptor
// through syscall.RawConn, which holds the descriptor's write lock, so its
// writes never interleave with the net.Conn's own. One goroutine at a time
// may call write (the meeting's Client guarantees it).
type rawWriter struct {
	rc syscall.RawConn // nil when the connection has no descriptor
	do func(fd uintptr) bool

	// The arguments and results of do, kept here so that a write
	// allocates nothing.
	buf  []byte
	n    int
	werr error
}

// newRawWriter returns a writer to c's socket; with c nil (an encrypted
// connection), one that never writes and leaves everything to the caller's
// blocking writer.
func newRawWriter(c net.Conn) *rawWriter {
	w := &rawWriter{}
	if c == nil {
		return w
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return w
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return w
	}
	w.rc = rc
	w.do = func(fd uintptr) bool {
		for {
			w.n, w.werr = syscall.Write(int(fd), w.buf)
			if !errors.Is(w.werr, syscall.EINTR) {
				return true // never wait for room: report, and let the caller queue
			}
		}
	}
	return w
}

// write writes what it can of b at once and returns how much that was.
func (w *rawWriter) write(b []byte) (int, error) {
	if w.rc == nil {
		return 0, nil // the caller falls back to a blocking writer
	}
	w.buf = b
	err := w.rc.Write(w.do)
	n, werr := w.n, w.werr
	w.buf, w.werr = nil, nil
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
