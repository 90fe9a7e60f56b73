package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cocmd/cocmd/relay"
)

// TCPRoutes are the listeners SplitTCP feeds from one port.
type TCPRoutes struct {
	// Web gets TLS and plain HTTP. Closing it closes the port.
	Web net.Listener
	// ICE gets ICE-TCP (RFC 4571 framed STUN). Closing it closes the port.
	ICE net.Listener
	// TURN gets TURN over TCP (STUN messages, unframed). Closing it
	// closes it alone: its connections are closed from then on (close it
	// if no TURN server serves it).
	TURN net.Listener
}

// SplitTCP shares one TCP port between the web (HTTP or TLS), ICE-TCP
// media and TURN over TCP, told apart by a connection's first bytes: a TLS
// ClientHello starts with 0x16, an HTTP request with a letter; a STUN
// message (TURN) has its magic cookie at bytes 4–7, while ICE-TCP's framed
// STUN (a two-byte length first) has it two bytes later. Closing Web or
// ICE closes ln and ends every route (the server shutting down).
// A connection that has not told what it is within peekTimeout is closed.
func SplitTCP(ln net.Listener, peekTimeout time.Duration) TCPRoutes {
	d := &demux{ln: ln, timeout: peekTimeout}
	d.web, d.ice, d.turn = newChanListener(ln, true), newChanListener(ln, true), newChanListener(ln, false)
	go d.run()
	return TCPRoutes{Web: d.web, ICE: d.ice, TURN: d.turn}
}

type demux struct {
	ln             net.Listener
	web, ice, turn *chanListener
	timeout        time.Duration
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
			d.turn.fail(err)
			return
		}
		go d.route(c)
	}
}

// route peeks at c's first bytes, on c's own goroutine: a slow client never
// holds the others up.
func (d *demux) route(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(d.timeout))
	pc := &peekedConn{Conn: c, r: bufio.NewReaderSize(c, 512)}
	b, err := pc.r.Peek(1)
	to := d.web
	if err == nil && !isWeb(b[0]) {
		to = d.ice
		if b, err = pc.r.Peek(8); err == nil && relay.IsSTUNStream(b) {
			to = d.turn
		}
	}
	c.SetReadDeadline(time.Time{})
	if err != nil || !to.put(pc) {
		c.Close()
	}
}

// ALPN protocol ids the TLS port tells apart.
const (
	alpnH2      = "h2"
	alpnHTTP1   = "http/1.1"
	alpnTURN    = "stun.turn" // RFC 7443
	alpnACMETLS = "acme-tls/1"
)

// SplitTLS terminates TLS, with cfg, on the connections of ln and routes
// them: a connection that negotiated h2 or http/1.1 goes to web as the
// *tls.Conn itself (HTTP/2 needs it), one that negotiated stun.turn to
// turn; one that negotiated nothing is told by its first decrypted byte (a
// STUN message's is 0x00 or 0x01, a request line's a letter). A
// connection that is not TLS, or whose handshake fails or takes longer
// than timeout, is closed; so is an ACME TLS-ALPN-01 validation, once its
// handshake has shown the challenge certificate. Closing web closes ln;
// closing turn closes turn alone.
func SplitTLS(ln net.Listener, cfg *tls.Config, timeout time.Duration) (web, turn net.Listener) {
	cfg = cfg.Clone()
	for _, p := range []string{alpnH2, alpnHTTP1, alpnTURN} {
		if !slices.Contains(cfg.NextProtos, p) {
			cfg.NextProtos = append(cfg.NextProtos, p)
		}
	}
	t := &tlsDemux{ln: ln, cfg: cfg, timeout: timeout, web: newChanListener(ln, true), turn: newChanListener(ln, false)}
	go t.run()
	return t.web, t.turn
}

type tlsDemux struct {
	ln        net.Listener
	cfg       *tls.Config
	timeout   time.Duration
	web, turn *chanListener
}

func (t *tlsDemux) run() {
	for {
		c, err := t.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.web.fail(err)
			t.turn.fail(err)
			return
		}
		go t.route(c)
	}
}

func (t *tlsDemux) route(c net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	tc := tls.Server(c, t.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return
	}
	var conn net.Conn = tc
	to := t.web
	switch tc.ConnectionState().NegotiatedProtocol {
	case alpnH2, alpnHTTP1:
	case alpnTURN:
		to = t.turn
		if lc := limited(c); lc != nil {
			lc.authenticated() // TURN authenticates, and has its own bounds
		}
	case "":
		deadline, _ := ctx.Deadline()
		tc.SetReadDeadline(deadline)
		pc := &peekedTLSConn{Conn: tc, r: bufio.NewReaderSize(tc, 512)}
		b, err := pc.r.Peek(1)
		tc.SetReadDeadline(time.Time{})
		if err != nil {
			c.Close()
			return
		}
		if b[0] <= 0x01 {
			to = t.turn
			if lc := limited(c); lc != nil {
				lc.authenticated()
			}
		}
		conn = pc
	default: // acme-tls/1: the handshake was the whole validation
		c.Close()
		return
	}
	if !to.put(conn) {
		c.Close()
	}
}

// peekedTLSConn is a TLS connection whose first decrypted bytes were read
// ahead. It is still encrypted: ConnectionState and NetConn are the TLS
// connection's.
type peekedTLSConn struct {
	*tls.Conn
	r *bufio.Reader
}

// Read implements net.Conn.
func (c *peekedTLSConn) Read(p []byte) (int, error) { return c.r.Read(p) }

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

// chanListener is a net.Listener fed by a demux.
type chanListener struct {
	ln     net.Listener // the shared one
	shared bool         // closing this listener closes ln
	addr   net.Addr
	conns  chan net.Conn
	mu     sync.Mutex
	err    error
	closed chan struct{}
	once   sync.Once
}

func newChanListener(ln net.Listener, shared bool) *chanListener {
	return &chanListener{ln: ln, shared: shared, addr: ln.Addr(), conns: make(chan net.Conn, 64), closed: make(chan struct{})}
}

func (l *chanListener) put(c net.Conn) bool {
	select {
	case <-l.closed:
		return false
	default:
	}
	select {
	case l.conns <- c:
		select {
		case <-l.closed: // closed meanwhile: nobody will accept c
			l.drain()
		default:
		}
		return true
	case <-l.closed:
		return false
	}
}

// drain closes the connections routed here and never accepted.
func (l *chanListener) drain() {
	for {
		select {
		case c := <-l.conns:
			c.Close()
		default:
			return
		}
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

// Close implements net.Listener: if the listener is shared, it closes the
// shared listener, which ends the other routes too.
func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	if !l.shared {
		l.drain()
		return nil
	}
	err := l.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Addr implements net.Listener.
func (l *chanListener) Addr() net.Addr { return l.addr }
