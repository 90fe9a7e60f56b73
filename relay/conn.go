package relay

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"
)

// errNotMedia refuses a datagram for any address but the SFU's.
var errNotMedia = errors.New("relay: only the SFU's media socket may be reached")

// errNoTCPRelay refuses RFC 6062 TCP allocations: media is relayed over UDP.
var errNoTCPRelay = errors.New("relay: TCP relays are not offered")

// generator makes relays: a UDP socket per allocation, on the address the
// SFU is reached at on this machine, announced at the relay address.
type generator struct{ s *Server }

// Validate implements turn.RelayAddressGenerator.
func (g *generator) Validate() error { return nil }

// AllocatePacketConn implements turn.RelayAddressGenerator.
func (g *generator) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	s := g.s
	media, err := s.mediaLocal(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	uc, err := net.ListenUDP(conf.Network, &net.UDPAddr{IP: media.Addr().AsSlice()})
	if err != nil {
		return nil, nil, err
	}
	local := uc.LocalAddr().(*net.UDPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	rc := &relayConn{UDPConn: uc, s: s, local: local, media: media}
	s.relays.Store(local, rc)
	s.ports.Store(int(local.Port()), rc)
	ip := s.cfg.RelayIP
	if !ip.IsValid() {
		ip = media.Addr()
	}
	return rc, &net.UDPAddr{IP: ip.AsSlice(), Port: int(local.Port())}, nil
}

// AllocateListener implements turn.RelayAddressGenerator: refused.
func (g *generator) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errNoTCPRelay
}

// AllocateConn implements turn.RelayAddressGenerator: refused.
func (g *generator) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errNoTCPRelay
}

// mediaLocal is the SFU socket's address on this machine for network
// ("udp4" or "udp6").
func (s *Server) mediaLocal(network string) (netip.AddrPort, error) {
	port := uint16(s.cfg.MediaPort)
	b := s.cfg.MediaBind
	if !b.IsValid() || b.IsUnspecified() {
		if network == "udp6" {
			return netip.AddrPortFrom(netip.IPv6Loopback(), port), nil
		}
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), nil
	}
	b = b.Unmap()
	if b.Is4() != (network == "udp4") {
		return netip.AddrPort{}, errors.New("relay: the SFU has no address of family " + network)
	}
	return netip.AddrPortFrom(b, port), nil
}

// isMedia reports whether a is the SFU's socket as a client may name it.
func (s *Server) isMedia(a netip.AddrPort) bool {
	return int(a.Port()) == s.cfg.MediaPort && s.mediaV[a.Addr().Unmap()]
}

// relayConn is one allocation's relay. It sends only to the SFU, at its
// local address whatever address the client named, and takes only what
// comes from there, which it reports as coming from the address the
// client last named (the SFU's candidate the client checks).
type relayConn struct {
	*net.UDPConn
	s         *Server
	local     netip.AddrPort // the relay socket's own address
	media     netip.AddrPort // the SFU's, over this machine
	peer      atomic.Pointer[net.UDPAddr]
	transport atomic.Int32
	closeOnce sync.Once
}

// WriteTo implements net.PacketConn: the client's datagram to addr.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || !c.s.isMedia(ua.AddrPort()) {
		c.s.refused.Add(1)
		return 0, errNotMedia
	}
	if old := c.peer.Load(); old == nil || !old.IP.Equal(ua.IP) || old.Port != ua.Port {
		cp := *ua
		c.peer.Store(&cp)
	}
	c.s.toMedia[c.transport.Load()].Add(1)
	return c.UDPConn.WriteToUDPAddrPort(p, c.media)
}

// ReadFrom implements net.PacketConn: a datagram for the client. Anything
// not from the SFU is dropped.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.UDPConn.ReadFromUDPAddrPort(p)
		if err != nil {
			return n, nil, err
		}
		peer := c.peer.Load()
		if peer == nil || netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != c.media {
			continue
		}
		c.s.fromMedia[c.transport.Load()].Add(1)
		return n, peer, nil
	}
}

// Close implements net.PacketConn.
func (c *relayConn) Close() error {
	c.closeOnce.Do(func() {
		c.s.relays.Delete(c.local)
		c.s.ports.Delete(int(c.local.Port()))
	})
	return c.UDPConn.Close()
}

// idleTimeout closes a TURN connection over TCP that has sent nothing for
// this long: a live one carries ICE consent checks every few seconds.
const idleTimeout = 60 * time.Second

// tcpListener hands pion the TURN connections of every listener ServeTCP
// serves, each closed when idle.
type tcpListener struct {
	s     *Server
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once

	mu     sync.Mutex
	open   map[*idleConn]struct{}
	served map[net.Listener]struct{}
}

func newTCPListener(s *Server) *tcpListener {
	return &tcpListener{s: s, addr: &net.TCPAddr{}, conns: make(chan net.Conn), done: make(chan struct{}),
		open: map[*idleConn]struct{}{}, served: map[net.Listener]struct{}{}}
}

// ServeTCP serves TURN over the connections ln accepts, TCP or TLS (TLS
// already terminated: a connection with a ConnectionState method), until
// ln or the server is closed. It returns net.ErrClosed then.
func (s *Server) ServeTCP(ln net.Listener) error {
	l := s.tcp
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		return net.ErrClosed
	default:
	}
	l.served[ln] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.served, ln)
		l.mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		ic := &idleConn{Conn: c, l: l}
		if _, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
			ic.tls = true
			s.tlsSrc.Store(c.RemoteAddr().String(), struct{}{})
		}
		l.mu.Lock()
		l.open[ic] = struct{}{}
		l.mu.Unlock()
		select {
		case l.conns <- ic:
		case <-l.done:
			ic.Close()
			return net.ErrClosed
		}
	}
}

// Accept implements net.Listener, for pion.
func (l *tcpListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: it closes every listener ServeTCP serves,
// and every connection.
func (l *tcpListener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.mu.Lock()
	open, served := l.open, l.served
	l.open, l.served = map[*idleConn]struct{}{}, map[net.Listener]struct{}{}
	l.mu.Unlock()
	for ln := range served {
		ln.Close()
	}
	for c := range open {
		c.Close()
	}
	return nil
}

// Addr implements net.Listener.
func (l *tcpListener) Addr() net.Addr { return l.addr }

// idleConn is a TURN connection closed after idleTimeout without a byte.
type idleConn struct {
	net.Conn
	l    *tcpListener
	tls  bool
	once sync.Once
}

// Read implements net.Conn.
func (c *idleConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(idleTimeout))
	return c.Conn.Read(p)
}

// Close implements net.Conn. It reports no error: closing a connection
// its client already dropped (a TLS close_notify that cannot be sent) is
// nothing to act on.
func (c *idleConn) Close() error {
	c.once.Do(func() {
		if c.tls {
			c.l.s.tlsSrc.Delete(c.RemoteAddr().String())
		}
		c.l.mu.Lock()
		delete(c.l.open, c)
		c.l.mu.Unlock()
	})
	c.Conn.Close()
	return nil
}
