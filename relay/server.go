// Package relay is cocmd's embedded TURN server (pion/turn), for clients
// whose networks let nothing through but a relay: UDP blocked, or every
// port but TCP 443.
//
// It shares the server's ports instead of opening its own: TURN/UDP
// arrives on the SFU's UDP socket (the SFU's reader hands over what IsTURN
// recognises, through Deliver), TURN over TCP and over TLS on the HTTP(S)
// port (the port's demultiplexers route them to ServeTCP).
//
// It is not an open relay. An allocation may send to the SFU's own socket
// and to nothing else: permissions are granted only for the SFU's
// addresses, and every datagram is checked for the SFU's port too (the
// permission hook sees no port). What goes to the SFU is delivered to the
// socket's local address on this machine, whatever address the client
// named, so relaying works where the public address is on no interface (a
// cloud VM's 1:1 NAT) and without the network hairpinning it back.
//
// Credentials follow the TURN REST scheme (Credentials): the server hands
// them to each participant with its token; expiry is checked when an
// allocation is made, so refreshes keep a long viewer's allocation alive.
package relay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/cocmd/cocmd/internal/pionlog"
)

// Config holds the TURN server's settings.
type Config struct {
	// Secret is the shared secret of the credentials. Required.
	Secret []byte
	// Realm is the TURN realm; default "cocmd".
	Realm string
	// UDP is the SFU's UDP socket, which TURN/UDP shares: datagrams reach
	// the TURN server through Deliver, and it answers on UDP. Nil: no
	// TURN/UDP.
	UDP net.PacketConn
	// MediaPort is the SFU socket's port.
	MediaPort int
	// MediaBind is the address the SFU socket is bound to; unspecified (or
	// invalid) means every address, reached over loopback.
	MediaBind netip.Addr
	// MediaIPs are the addresses clients know the SFU by: its public
	// addresses and its interfaces'. An allocation may send to these, at
	// MediaPort, and nowhere else.
	MediaIPs []netip.Addr
	// RelayIP is the address relays are announced at (the public address);
	// default: the address the SFU is reached at over loopback.
	RelayIP netip.Addr
	// MaxAllocations bounds one participant's allocations; default 16 (two
	// peer connections, three transports each, and ICE restarts).
	MaxAllocations int
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock credentials are checked against; nil means time.Now.
	Now func() time.Time
}

// Transport is how a client reaches the TURN server.
type Transport int

// The transports, as Stats counts them.
const (
	UDP Transport = iota
	TCP
	TLS
	numTransports
)

// String returns "udp", "tcp" or "tls".
func (t Transport) String() string {
	switch t {
	case UDP:
		return "udp"
	case TCP:
		return "tcp"
	case TLS:
		return "tls"
	}
	return "unknown"
}

// Stats counts what the server did since it started.
type Stats struct {
	// Allocations is the number of allocations now.
	Allocations int
	// Created counts allocations made, by the client's transport.
	Created [numTransports]int64
	// ToMedia counts datagrams relayed to the SFU, by transport.
	ToMedia [numTransports]int64
	// FromMedia counts datagrams relayed from the SFU, by transport.
	FromMedia [numTransports]int64
	// Refused counts requests refused: bad, forged or expired
	// credentials, over quota, or for a peer that is not the SFU.
	Refused int64
}

// Server is a running TURN server.
type Server struct {
	cfg    Config
	turn   *turn.Server
	udp    *sharedUDP // nil without TURN/UDP
	tcp    *tcpListener
	log    *slog.Logger
	now    func() time.Time
	mediaV map[netip.Addr]bool

	relays sync.Map // netip.AddrPort (local, unmapped) → *relayConn
	ports  sync.Map // relay port → *relayConn
	tlsSrc sync.Map // remote address string → struct{}, connections over TLS

	mu     sync.Mutex
	perWho map[string]int // allocations per participant

	created, toMedia, fromMedia [numTransports]atomic.Int64
	refused                     atomic.Int64
}

// New starts a TURN server.
func New(cfg Config) (*Server, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("relay: a shared secret is required")
	}
	if cfg.MediaPort <= 0 || cfg.MediaPort > 65535 {
		return nil, errors.New("relay: the SFU's port is required")
	}
	if cfg.Realm == "" {
		cfg.Realm = "cocmd"
	}
	if cfg.MaxAllocations <= 0 {
		cfg.MaxAllocations = 16
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, perWho: map[string]int{}, mediaV: map[netip.Addr]bool{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, ip := range cfg.MediaIPs {
		s.mediaV[ip.Unmap()] = true
	}
	if !cfg.MediaBind.IsValid() || cfg.MediaBind.IsUnspecified() {
		s.mediaV[netip.MustParseAddr("127.0.0.1")] = true
		s.mediaV[netip.IPv6Loopback()] = true
	} else {
		s.mediaV[cfg.MediaBind.Unmap()] = true
	}
	gen := &generator{s: s}
	perm := func(_ net.Addr, peer net.IP) bool {
		ip, ok := netip.AddrFromSlice(peer)
		if !ok || !s.mediaV[ip.Unmap()] {
			s.refused.Add(1)
			s.log.Debug("TURN permission refused: not the SFU", "peer", peer)
			return false
		}
		return true
	}
	tc := turn.ServerConfig{
		LoggerFactory: pionlog.Factory(s.log),
		Realm:         cfg.Realm,
		AuthHandler:   s.auth,
		QuotaHandler:  s.quota,
		EventHandler: turn.EventHandler{
			OnAuth: func(_, _ net.Addr, _, _, _, _ string, ok bool) {
				if !ok {
					s.refused.Add(1)
				}
			},
			OnAllocationCreated: s.allocated,
			OnAllocationDeleted: func(_, _ net.Addr, _, who, _ string) {
				s.mu.Lock()
				if s.perWho[who]--; s.perWho[who] <= 0 {
					delete(s.perWho, who)
				}
				s.mu.Unlock()
			},
		},
	}
	if cfg.UDP != nil {
		s.udp = &sharedUDP{PacketConn: cfg.UDP, in: make(chan datagram, 1024), done: make(chan struct{})}
		tc.PacketConnConfigs = []turn.PacketConnConfig{{PacketConn: s.udp, RelayAddressGenerator: gen, PermissionHandler: perm}}
	}
	s.tcp = newTCPListener(s)
	tc.ListenerConfigs = []turn.ListenerConfig{{Listener: s.tcp, RelayAddressGenerator: gen, PermissionHandler: perm}}
	t, err := turn.NewServer(tc)
	if err != nil {
		return nil, err
	}
	s.turn = t
	return s, nil
}

// auth answers pion's question "what is this username's key?". A username
// that is not the server's REST form, or whose expiry has passed when it
// asks for an allocation, has none; a forged password fails the message
// integrity check that follows.
func (s *Server) auth(ra *turn.RequestAttributes) (string, []byte, bool) {
	exp, who, err := parseUsername(ra.Username)
	if err != nil {
		s.refused.Add(1)
		s.log.Debug("TURN username refused", "username", ra.Username, "err", err)
		return "", nil, false
	}
	if ra.Method == stun.MethodAllocate && !s.now().Before(exp) {
		s.refused.Add(1)
		s.log.Debug("TURN credentials expired", "participant", who, "expired", exp)
		return "", nil, false
	}
	return who, turn.GenerateAuthKey(ra.Username, ra.Realm, Password(s.cfg.Secret, ra.Username)), true
}

// quota admits an allocation of participant who (the user id auth gave).
func (s *Server) quota(who, _ string, _ net.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perWho[who] >= s.cfg.MaxAllocations {
		s.refused.Add(1)
		return false
	}
	return true
}

func (s *Server) allocated(src, _ net.Addr, _, who, _ string, relayAddr net.Addr, _ int) {
	s.mu.Lock()
	s.perWho[who]++
	s.mu.Unlock()
	t := UDP
	if _, ok := src.(*net.TCPAddr); ok {
		t = TCP
		if _, ok := s.tlsSrc.Load(src.String()); ok {
			t = TLS
		}
	}
	s.created[t].Add(1)
	if ua, ok := relayAddr.(*net.UDPAddr); ok {
		if rc, ok := s.ports.Load(ua.Port); ok {
			rc.(*relayConn).transport.Store(int32(t))
		}
	}
}

// Deliver hands the TURN server a datagram that arrived on the SFU's
// socket from from (one IsTURN recognised). It copies p and never blocks:
// when the server is behind, the datagram is dropped, as the network
// would. Datagrams from the server's own relays are dropped: a relay
// relaying to the TURN server itself would allocate relays without end.
func (s *Server) Deliver(p []byte, from netip.AddrPort) {
	if s.udp == nil {
		return
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if _, ok := s.relays.Load(from); ok {
		return
	}
	d := datagram{b: append([]byte(nil), p...), from: net.UDPAddrFromAddrPort(from)}
	select {
	case s.udp.in <- d:
	default:
	}
}

// Is reports whether a datagram that arrived on the SFU's socket is the
// TURN server's (IsTURN); with Deliver, it lets the SFU share its socket
// (media.Divert).
func (s *Server) Is(p []byte) bool { return s.udp != nil && IsTURN(p) }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{Allocations: s.turn.AllocationCount(), Refused: s.refused.Load()}
	for t := range numTransports {
		st.Created[t] = s.created[t].Load()
		st.ToMedia[t] = s.toMedia[t].Load()
		st.FromMedia[t] = s.fromMedia[t].Load()
	}
	return st
}

// Close stops the server: its allocations, its TCP and TLS connections
// and the listeners ServeTCP serves. The SFU's socket stays open.
func (s *Server) Close() error {
	return s.turn.Close() // closes s.udp and s.tcp
}

// datagram is one TURN/UDP datagram handed over by the SFU's reader.
type datagram struct {
	b    []byte
	from *net.UDPAddr
}

// sharedUDP is the TURN server's view of the SFU's socket: it reads what
// Deliver hands over and writes straight to the socket.
type sharedUDP struct {
	net.PacketConn
	in   chan datagram
	done chan struct{}
	once sync.Once
}

// ReadFrom implements net.PacketConn.
func (c *sharedUDP) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(p, d.b), d.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

// Close stops reading; the socket is the SFU's, and stays open.
func (c *sharedUDP) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// WriteMetrics writes the server's counters in the Prometheus text format.
func (s *Server) WriteMetrics(w io.Writer) error {
	st := s.Stats()
	b := &strings.Builder{}
	b.WriteString("# HELP cocmd_turn_allocations TURN allocations now.\n# TYPE cocmd_turn_allocations gauge\n")
	fmt.Fprintf(b, "cocmd_turn_allocations %d\n", st.Allocations)
	b.WriteString("# HELP cocmd_turn_allocations_created_total TURN allocations made, by the client's transport.\n# TYPE cocmd_turn_allocations_created_total counter\n")
	for t := range numTransports {
		fmt.Fprintf(b, "cocmd_turn_allocations_created_total{transport=%q} %d\n", t, st.Created[t])
	}
	b.WriteString("# HELP cocmd_turn_relayed_datagrams_total Datagrams relayed between clients and the SFU, by the client's transport and direction.\n# TYPE cocmd_turn_relayed_datagrams_total counter\n")
	for t := range numTransports {
		fmt.Fprintf(b, "cocmd_turn_relayed_datagrams_total{transport=%q,direction=\"to_media\"} %d\n", t, st.ToMedia[t])
		fmt.Fprintf(b, "cocmd_turn_relayed_datagrams_total{transport=%q,direction=\"from_media\"} %d\n", t, st.FromMedia[t])
	}
	b.WriteString("# HELP cocmd_turn_refused_total TURN requests refused: credentials, quota, or a peer that is not the SFU.\n# TYPE cocmd_turn_refused_total counter\n")
	fmt.Fprintf(b, "cocmd_turn_refused_total %d\n", st.Refused)
	_, err := io.WriteString(w, b.String())
	return err
}
