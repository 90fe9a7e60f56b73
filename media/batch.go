package media

import (
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchSize is the most datagrams one sendmmsg carries.
const batchSize = 64

// batchConn is the SFU's UDP socket. Datagrams written while a batch is
// open are queued and go out together, with sendmmsg(2), when the last
// open batch ends or the queue is full: a packet's whole fan-out costs one
// system call instead of one per subscriber. Outside a batch (handshakes,
// RTCP, STUN), a write goes out at once.
//
// It implements pion's AddrPortReaderWriter, which the ICE UDP mux prefers
// to net.PacketConn's methods.
type batchConn struct {
	*net.UDPConn
	send   func([]ipv4.Message) (int, error)
	divert Divert     // nil: every datagram is the SFU's
	routes rtcpRoutes // subscribers whose RTCP is read here (fastpath.go)

	mu    sync.Mutex
	open  int
	queue []ipv4.Message // len(queue) slots, n of them in use
	addrs []net.UDPAddr  // one per slot, reused
	ips   [][16]byte     // their IPs' memory
	bufs  []byte         // maxPacket bytes per slot
	n     int
}

func newBatchConn(c *net.UDPConn) *batchConn {
	b := &batchConn{UDPConn: c, queue: make([]ipv4.Message, batchSize), addrs: make([]net.UDPAddr, batchSize),
		ips: make([][16]byte, batchSize), bufs: make([]byte, batchSize*maxPacket)}
	for i := range b.queue {
		b.queue[i].Buffers = [][]byte{nil}
		b.queue[i].Addr = &b.addrs[i]
	}
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() != nil {
		pc := ipv4.NewPacketConn(c)
		b.send = func(ms []ipv4.Message) (int, error) { return pc.WriteBatch(ms, 0) }
	} else {
		pc := ipv6.NewPacketConn(c)
		b.send = func(ms []ipv4.Message) (int, error) { return pc.WriteBatch(ms, 0) }
	}
	return b
}

// begin opens a batch; every begin needs its end.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.open++
	b.mu.Unlock()
}

// end closes a batch, sending the queue if it was the last open one.
func (b *batchConn) end() {
	b.mu.Lock()
	b.open--
	if b.open == 0 {
		b.flushLocked()
	}
	b.mu.Unlock()
}

func (b *batchConn) flushLocked() {
	for sent := 0; sent < b.n; {
		n, err := b.send(b.queue[sent:b.n])
		if err != nil || n <= 0 {
			break // datagrams may be lost; that is UDP
		}
		sent += n
	}
	b.n = 0
}

// WriteToAddrPort queues b for addr inside a batch, or sends it now.
func (b *batchConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	b.mu.Lock()
	if b.open == 0 || len(p) > maxPacket {
		b.mu.Unlock()
		return b.UDPConn.WriteToUDPAddrPort(p, addr)
	}
	if b.n == len(b.queue) {
		b.flushLocked()
	}
	i := b.n
	buf := b.bufs[i*maxPacket : i*maxPacket+len(p)]
	copy(buf, p)
	ua := &b.addrs[i]
	b.ips[i] = addr.Addr().As16()
	ua.IP = b.ips[i][:]
	if addr.Addr().Is4() || addr.Addr().Is4In6() {
		ua.IP = b.ips[i][12:16]
	}
	ua.Port = int(addr.Port())
	b.queue[i].Buffers[0] = buf
	b.n++
	b.mu.Unlock()
	return len(p), nil
}

// ReadFromAddrPort implements pion's AddrPortReaderWriter. Datagrams for
// the TURN server that shares the socket go to it instead, and RTCP from
// subscribers on the direct path is served here.
func (b *batchConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	for {
		n, from, err := b.UDPConn.ReadFromUDPAddrPort(p)
		switch {
		case err != nil:
			return n, from, err
		case b.divert != nil && b.divert.Is(p[:n]):
			b.divert.Deliver(p[:n], from)
		case isRTCP(p[:n]):
			if d := b.routes.get(from); d == nil || !d.receiveRTCP(p[:n]) {
				return n, from, nil
			}
		default:
			return n, from, nil
		}
	}
}

// Divert takes the datagrams of another server that shares the SFU's UDP
// socket (the embedded TURN server).
type Divert interface {
	// Is reports whether datagram p is the other server's. It is called
	// for every datagram the socket receives: it must be cheap.
	Is(p []byte) bool
	// Deliver hands it the datagram; p is reused once it returns.
	Deliver(p []byte, from netip.AddrPort)
}

// WriteTo sends through the batch too, for callers that use net.Addr.
func (b *batchConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return b.WriteToAddrPort(p, ua.AddrPort())
	}
	return b.UDPConn.WriteTo(p, addr)
}
