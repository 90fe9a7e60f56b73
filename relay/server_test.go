package relay

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("relay-test-secret-0123456789")

// fakeSFU stands for the SFU: it owns the UDP socket the TURN server
// shares, hands TURN datagrams over as the SFU's reader does, and echoes
// everything else to its sender, recording who sent it.
type fakeSFU struct {
	conn *net.UDPConn
	srv  *Server
	now  atomic.Int64 // the server's clock, unix seconds

	mu   sync.Mutex
	from []netip.AddrPort
	done chan struct{}
}

func startRelay(t *testing.T, mutate func(*Config)) *fakeSFU {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSFU{conn: conn, done: make(chan struct{})}
	f.now.Store(time.Now().Unix())
	lo := netip.MustParseAddr("127.0.0.1")
	cfg := Config{Secret: secret, UDP: conn, MediaPort: conn.LocalAddr().(*net.UDPAddr).Port, MediaBind: lo,
		MediaIPs: []netip.Addr{lo}, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return time.Unix(f.now.Load(), 0) }}
	if mutate != nil {
		mutate(&cfg)
	}
	if f.srv, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	go f.read()
	t.Cleanup(func() {
		f.srv.Close()
		conn.Close()
		<-f.done
	})
	return f
}

func (f *fakeSFU) read() {
	defer close(f.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if f.srv.Is(buf[:n]) {
			f.srv.Deliver(buf[:n], from)
			continue
		}
		f.mu.Lock()
		f.from = append(f.from, from)
		f.mu.Unlock()
		f.conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

func (f *fakeSFU) addr() *net.UDPAddr { return f.conn.LocalAddr().(*net.UDPAddr) }

// dial is a TURN client over UDP with the given credentials.
func (f *fakeSFU) dial(t *testing.T, user, pass string) *turn.Client {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: f.addr().String(), STUNServerAddr: f.addr().String(),
		Username: user, Password: pass, Realm: "cocmd", Conn: pc, RTO: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		pc.Close()
	})
	return c
}

func (f *fakeSFU) creds(who string, valid time.Duration) (string, string) {
	return Credentials(secret, who, time.Unix(f.now.Load(), 0).Add(valid))
}

// echo sends p through relay to the SFU at to and reads the SFU's echo.
func echo(t *testing.T, relay net.PacketConn, to net.Addr, p []byte) net.Addr {
	t.Helper()
	if _, err := relay.WriteTo(p, to); err != nil {
		t.Fatalf("sending to %v: %v", to, err)
	}
	relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := relay.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no echo from %v: %v", to, err)
	}
	if !bytes.Equal(buf[:n], p) {
		t.Fatalf("echo %q, want %q", buf[:n], p)
	}
	return from
}

// A relay reaches the SFU's socket, and the SFU's answers come back from
// the address the client named; the datagrams travel over this machine
// (from the relay's local address), whatever that address was — even one
// on no interface, as a cloud VM's public IP behind 1:1 NAT is.
func TestRelay_reachesTheSFU(t *testing.T) {
	public := netip.MustParseAddr("203.0.113.7") // on no interface here
	f := startRelay(t, func(c *Config) {
		c.MediaIPs = append(c.MediaIPs, public)
		c.RelayIP = public
	})
	user, pass := f.creds("viewer", time.Hour)
	c := f.dial(t, user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	if ra := relay.LocalAddr().(*net.UDPAddr); !ra.IP.Equal(public.AsSlice()) {
		t.Errorf("relay announced at %v, want the public address %v", ra, public)
	}
	for _, to := range []*net.UDPAddr{f.addr(), {IP: public.AsSlice(), Port: f.addr().Port}} {
		if from := echo(t, relay, to, []byte("media for "+to.String())); from.String() != to.String() {
			t.Errorf("the SFU's answer came from %v, want %v (the address the client named)", from, to)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.from {
		if !a.Addr().IsLoopback() {
			t.Errorf("the SFU got a relayed datagram from %v, want this machine's loopback", a)
		}
	}
	st := f.srv.Stats()
	if st.Created[UDP] != 1 || st.ToMedia[UDP] != 2 || st.FromMedia[UDP] != 2 {
		t.Errorf("stats %+v: want 1 UDP allocation, 2 datagrams each way", st)
	}
}

// Never an open relay: no permission for another address, and no datagram
// to the SFU's own address at another port (the permission hook sees the
// IP only).
func TestRelay_refusesOtherPeers(t *testing.T) {
	f := startRelay(t, nil)
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	user, pass := f.creds("viewer", time.Hour)
	relay, err := f.dial(t, user, pass).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	// Same IP, other port: the permission is granted (IP only), each
	// datagram is refused.
	before := f.srv.Stats().Refused
	relay.WriteTo([]byte("to a stranger"), other.LocalAddr())
	deadline := time.Now().Add(5 * time.Second)
	for f.srv.Stats().Refused == before {
		if time.Now().After(deadline) {
			t.Fatal("a datagram to another port of the SFU's address was not refused")
		}
		time.Sleep(10 * time.Millisecond)
	}
	other.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := other.ReadFrom(make([]byte, 100)); err == nil {
		t.Fatal("the relay delivered a datagram to a port that is not the SFU's")
	}
	// Another address: no permission at all.
	if _, err := relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: f.addr().Port}); err == nil {
		t.Fatal("a permission for another address was granted")
	}
	// The SFU is still reachable through the same allocation.
	echo(t, relay, f.addr(), []byte("still fine"))
}

// Credentials: none, forged, another secret's, malformed or expired get
// no allocation. Expiry is checked when allocating only: an allocation
// made in time lives on with its refreshes and permissions.
func TestRelay_credentials(t *testing.T) {
	f := startRelay(t, nil)
	user, pass := f.creds("viewer", time.Minute)
	for _, tc := range []struct{ name, user, pass string }{
		{"none", "", ""},
		{"forged password", user, "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
		{"another secret's", user, Password([]byte("another secret"), user)},
		{"not the REST form", "viewer", Password(secret, "viewer")},
		{"expired", func() string { u, _ := f.creds("viewer", -time.Second); return u }(), func() string { _, p := f.creds("viewer", -time.Second); return p }()},
	} {
		before := f.srv.Stats().Refused
		if r, err := f.dial(t, tc.user, tc.pass).Allocate(); err == nil {
			r.Close()
			t.Errorf("%s: allocated", tc.name)
		}
		if f.srv.Stats().Refused == before {
			t.Errorf("%s: not counted as refused", tc.name)
		}
	}
	c := f.dial(t, user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	f.now.Add(3600) // the credentials expire
	if err := c.CreatePermission(f.addr()); err != nil {
		t.Fatalf("an allocation made in time lost its permissions once its credentials expired: %v", err)
	}
	echo(t, relay, f.addr(), []byte("after expiry"))
	if r, err := f.dial(t, user, pass).Allocate(); err == nil {
		r.Close()
		t.Fatal("expired credentials made a new allocation")
	}
}

// One participant's allocations are bounded.
func TestRelay_quota(t *testing.T) {
	f := startRelay(t, func(c *Config) { c.MaxAllocations = 1 })
	user, pass := f.creds("viewer", time.Hour)
	relay, err := f.dial(t, user, pass).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	if r, err := f.dial(t, user, pass).Allocate(); err == nil {
		r.Close()
		t.Fatal("a second allocation past the quota")
	}
	other, pw := f.creds("other", time.Hour)
	r, err := f.dial(t, other, pw).Allocate()
	if err != nil {
		t.Fatalf("another participant: %v", err)
	}
	r.Close()
}

// A TURN message relayed to the SFU's socket — from the server's own relay
// — is dropped, not served: a relay allocating relays would never end.
func TestRelay_noLoop(t *testing.T) {
	f := startRelay(t, nil)
	user, pass := f.creds("viewer", time.Hour)
	relay, err := f.dial(t, user, pass).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	if _, err := relay.WriteTo(req.Raw, f.addr()); err != nil {
		t.Fatal(err)
	}
	relay.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, _, err := relay.ReadFrom(make([]byte, 1500)); err == nil {
		t.Fatal("the TURN server answered a request its own relay carried")
	}
	if n := f.srv.Stats().Allocations; n != 1 {
		t.Fatalf("%d allocations, want 1", n)
	}
}

// TURN over TCP (and, the same way, TLS after the demultiplexer): a
// connection ServeTCP serves allocates a UDP relay to the SFU.
func TestRelay_overTCP(t *testing.T) {
	f := startRelay(t, nil)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.srv.ServeTCP(ln) }()
	tc, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	user, pass := f.creds("viewer", time.Hour)
	c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: ln.Addr().String(), STUNServerAddr: ln.Addr().String(),
		Username: user, Password: pass, Realm: "cocmd", Conn: turn.NewSTUNConn(tc)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	echo(t, relay, f.addr(), []byte("over tcp"))
	if st := f.srv.Stats(); st.Created[TCP] != 1 || st.ToMedia[TCP] != 1 {
		t.Errorf("stats %+v: want one TCP allocation and datagram", st)
	}
	relay.Close()
	c.Close()
	tc.Close()
	f.srv.Close()
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Errorf("ServeTCP after Close: %v", err)
	}
}

func TestIsTURN(t *testing.T) {
	msg := func(m stun.Method, c stun.MessageClass, attrs ...stun.Setter) []byte {
		setters := append([]stun.Setter{stun.TransactionID, stun.NewType(m, c)}, attrs...)
		return stun.MustBuild(setters...).Raw
	}
	for _, tc := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"allocate", msg(stun.MethodAllocate, stun.ClassRequest), true},
		{"refresh", msg(stun.MethodRefresh, stun.ClassRequest), true},
		{"send indication", msg(stun.MethodSend, stun.ClassIndication), true},
		{"channel bind", msg(stun.MethodChannelBind, stun.ClassRequest), true},
		{"channel data", []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}, true},
		{"binding without username (address discovery)", msg(stun.MethodBinding, stun.ClassRequest), true},
		{"ICE check", msg(stun.MethodBinding, stun.ClassRequest, stun.NewUsername("a:b")), false},
		{"ICE check answer", msg(stun.MethodBinding, stun.ClassSuccessResponse), false},
		{"binding indication", msg(stun.MethodBinding, stun.ClassIndication), false},
		{"DTLS", []byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false},
		{"RTP", []byte{0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}, false},
		{"short", []byte{0x00, 0x03}, false},
		{"no cookie", append([]byte{0x00, 0x03, 0, 0, 1, 2, 3, 4}, make([]byte, 12)...), false},
	} {
		if got := IsTURN(tc.p); got != tc.want {
			t.Errorf("%s: IsTURN = %v, want %v", tc.name, got, tc.want)
		}
	}
	framed := append([]byte{0, 20}, msg(stun.MethodBinding, stun.ClassRequest)...)
	if IsSTUNStream(framed) || !IsSTUNStream(msg(stun.MethodAllocate, stun.ClassRequest)) {
		t.Error("IsSTUNStream does not tell TURN over TCP from ICE-TCP's framing")
	}
}

func TestLoadSecret(t *testing.T) {
	path := t.TempDir() + "/turn-secret"
	if _, err := LoadSecret(path, false); err == nil {
		t.Fatal("a missing secret was not an error")
	}
	a, err := LoadSecret(path, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadSecret(path, true)
	if err != nil || !bytes.Equal(a, b) || len(a) < 32 {
		t.Fatalf("the secret changed or is short: %q %q %v", a, b, err)
	}
	short := t.TempDir() + "/short"
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecret(short, false); err == nil {
		t.Fatal("a 3-byte secret was accepted")
	}
}
