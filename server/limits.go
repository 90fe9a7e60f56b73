package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
)

// ConnLimits bound what one client address may hold open. A whole company
// may reach the server from one address, so the limit on realtime
// connections, which carry a valid token, is high; the limit on
// connections that have not shown one is low.
type ConnLimits struct {
	// Unauthenticated bounds the TCP connections of one peer address that
	// do not carry an authenticated realtime connection (yet): HTTP
	// requests, upgrades in progress, idle keep-alives. Default 64.
	Unauthenticated int
	// Authenticated bounds the realtime connections of one client
	// address. Default 2,000.
	Authenticated int
	// TrustedProxies are the peers (reverse proxies, load balancers) whose
	// X-Forwarded-For header names the client. Connections from them are
	// not limited per peer; their clients are, by the address the header
	// gives. Nobody else's X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
}

func (l ConnLimits) withDefaults() ConnLimits {
	if l.Unauthenticated <= 0 {
		l.Unauthenticated = 64
	}
	if l.Authenticated <= 0 {
		l.Authenticated = 2000
	}
	return l
}

// counter counts connections by address.
type counter struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

// take counts one more for a, if that keeps it within limit.
func (c *counter) take(a netip.Addr, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[a] >= limit {
		return false
	}
	if c.n == nil {
		c.n = map[netip.Addr]int{}
	}
	c.n[a]++
	return true
}

func (c *counter) release(a netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[a]--; c.n[a] <= 0 {
		delete(c.n, a)
	}
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.limits.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func addrOf(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		a, _ := netip.ParseAddr(remote)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// clientAddr is the address of the client behind r: the peer, or, when the
// peer is a trusted proxy, the nearest address in X-Forwarded-For that is
// not one.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	a := addrOf(r.RemoteAddr)
	if !s.trusted(a) {
		return a
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return a // a hop we cannot read: stop believing the header there
		}
		if a = h.Unmap(); !s.trusted(a) {
			return a
		}
	}
	return a
}

// Listener returns ln with the per-address limit on unauthenticated
// connections: one past it is closed as soon as it is accepted.
func (s *Server) Listener(ln net.Listener) net.Listener { return &limitListener{Listener: ln, s: s} }

type limitListener struct {
	net.Listener
	s *Server
}

// Accept implements net.Listener.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		a := addrOf(c.RemoteAddr().String())
		if l.s.trusted(a) {
			return c, nil
		}
		if !l.s.unauth.take(a, l.s.limits.Unauthenticated) {
			l.s.log.Debug("connection refused: too many from one address", "addr", a)
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, s: l.s, addr: a}, nil
	}
}

// limitedConn is a connection counted against its address until it closes
// or carries an authenticated realtime connection.
type limitedConn struct {
	net.Conn
	s    *Server
	addr netip.Addr
	once sync.Once
}

// authenticated stops counting the connection as unauthenticated.
func (c *limitedConn) authenticated() { c.once.Do(func() { c.s.unauth.release(c.addr) }) }

// Close implements net.Conn.
func (c *limitedConn) Close() error {
	c.authenticated()
	return c.Conn.Close()
}

// plain returns the TCP connection under c, whose descriptor the raw
// writer may write to, or nil when c is encrypted (TLS): its frames must go
// through the TLS connection, never straight to the socket.
func plain(c net.Conn) net.Conn {
	if _, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return nil // *tls.Conn, or one the TLS demux peeked at
	}
	if lc, ok := c.(*limitedConn); ok {
		return lc.Conn // a TCP connection, or one the demux peeked at
	}
	return c
}

// limited returns the limitedConn under c (through TLS), or nil.
func limited(c net.Conn) *limitedConn {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn() // under TLS
	}
	lc, _ := c.(*limitedConn)
	return lc
}
