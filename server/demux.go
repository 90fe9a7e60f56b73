package server

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// SplitTCP shares one TCP port between the web (HTTP or TLS) and ICE-TCP
// media, told apart by a connection's first byte: a TLS ClientHello starts
// with 0x16, an HTTP request with a letter, while ICE-TCP's framed STUN
// (RFC 4571: a two-byte length, then a STUN message) starts with a byte
// that is neither. It returns the two listeners; closing either closes ln
// and ends both (the server shutting down).
// A connection that sends nothing for peekTimeout is closed.
func SplitTCP(ln net.Listener, peekTimeout time.Duration) (web, ice net.Listener) {
	d := &demux{ln: ln, timeout: peekTimeout}
	d.web, d.ice = newChanListener(ln), newChanListener(ln)
	go d.run()
	return d.web, d.ice
}

type demux struct {
	ln       net.Listener
	web, ice *chanListener
	timeout  time.Duration
}

func (d *demux) run() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			d.web.fail(err)
			d.ice.fail(err)
			return
		}
		go d.route(c)
	}
}

// route peeks at c's first byte, on c's own goroutine: a slow client never
// holds the others up.
func (d *demux) route(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(d.timeout))
	pc := &peekedConn{Conn: c, r: bufio.NewReaderSize(c, 512)}
	b, err := pc.r.Peek(1)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	to := d.ice
	if isWeb(b[0]) {
		to = d.web
	}
	if !to.put(pc) {
		c.Close()
	}
}

// isWeb reports whether a connection that starts with b is TLS or HTTP.
func isWeb(b byte) bool { return b == 0x16 || (b >= 'A' && b <= 'Z') }

// peekedConn is a connection whose first bytes were read ahead.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

// Read implements net.Conn.
func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// SyscallConn gives writers the socket itself (reads go through the
// buffer, which only ever holds what came first).
func (c *peekedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("demux: not a socket")
	}
	return sc.SyscallConn()
}

// SetWriteBuffer sets the socket's send buffer, if it is TCP.
func (c *peekedConn) SetWriteBuffer(n int) error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.SetWriteBuffer(n)
	}
	return nil
}

// chanListener is a net.Listener fed by the demux.
type chanListener struct {
	ln     net.Listener // the shared one
	addr   net.Addr
	conns  chan net.Conn
	mu     sync.Mutex
	err    error
	closed chan struct{}
	once   sync.Once
}

func newChanListener(ln net.Listener) *chanListener {
	return &chanListener{ln: ln, addr: ln.Addr(), conns: make(chan net.Conn, 64), closed: make(chan struct{})}
}

func (l *chanListener) put(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) fail(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
	l.once.Do(func() { close(l.closed) })
}

// Accept implements net.Listener.
func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: it closes the shared listener, which
// ends the other side too.
func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	err := l.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Addr implements net.Listener.
func (l *chanListener) Addr() net.Addr { return l.addr }
