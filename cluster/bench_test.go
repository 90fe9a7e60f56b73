package cluster

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cocmd/cocmd/internal/natstest"
	"github.com/cocmd/cocmd/store/natsjs"
)

// cpuTime is the process's user and system time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelay is the cost of the media hop between nodes: node A sends
// 1,200-byte packets of a track wanted by nodes B and C, each connected to
// another of three NATS servers (all in this process). cpu-µs/packet is
// all of it: A's client, the three servers' routing, B's and C's clients
// handing each packet to a callback.
func BenchmarkRelay(b *testing.B) {
	ctx := context.Background()
	c := natstest.Start(b, 3)
	var nodes []*Node
	for i := range 3 {
		nc := natstest.Connect(b, c.URL(i))
		st, err := natsjs.Open(ctx, nc, natsjs.Config{Prefix: "rb", Replicas: 1, Node: fmt.Sprint("n", i)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		n, err := Open(ctx, nc, st, Config{Node: fmt.Sprint("n", i), Prefix: "rb", Replicas: 1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	var got atomic.Int64
	for _, n := range nodes[1:] {
		stop, err := n.SubscribePackets("m", "p:camera", func(layer int, p []byte) { got.Add(1) })
		if err != nil {
			b.Fatal(err)
		}
		defer stop()
	}
	// Let the subscriptions reach every server.
	time.Sleep(500 * time.Millisecond)
	var subjects [3]string
	for i := range subjects {
		subjects[i] = nodes[0].PacketSubject("m", "p:camera", i)
	}
	pkt := make([]byte, 1200)
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		if err := nodes[0].PublishPacket(subjects[i%3], pkt); err != nil {
			b.Fatal(err)
		}
	}
	reportRelay(b, &got, cpu0, 30*time.Second)
}

// reportRelay waits up to wait for the two receivers to have got every
// packet, and reports the CPU per packet since cpu0 and the share lost.
func reportRelay(b *testing.B, got *atomic.Int64, cpu0 time.Duration, wait time.Duration) {
	want := int64(2 * b.N)
	deadline := time.Now().Add(wait)
	for got.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/packet")
	b.ReportMetric(float64(want-got.Load())/float64(want)*100, "%lost")
}

// BenchmarkRelayUDP is the other transport the media hop could take, in
// the same shape as BenchmarkRelay: node A sends each 1,200-byte packet
// straight to nodes B and C over UDP (one datagram each, as RTP between
// nodes would be, unencrypted), each receiver reading its socket and
// handing the packet to a callback. cpu-µs/packet is all of it.
func BenchmarkRelayUDP(b *testing.B) {
	var got atomic.Int64
	loop := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	var dsts []*net.UDPAddr
	for range 2 {
		c, err := net.ListenUDP("udp", loop)
		if err != nil {
			b.Fatal(err)
		}
		c.SetReadBuffer(8 << 20)
		b.Cleanup(func() { c.Close() })
		dsts = append(dsts, c.LocalAddr().(*net.UDPAddr))
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	out, err := net.ListenUDP("udp", loop)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	pkt := make([]byte, 1200)
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		for _, d := range dsts {
			if _, err := out.WriteToUDP(pkt, d); err != nil {
				b.Fatal(err)
			}
		}
		if i%64 == 63 {
			// Paced as a track is, in bursts: the receivers keep up
			// rather than the kernel dropping.
			for got.Load() < int64(2*(i+1))*9/10 {
				time.Sleep(10 * time.Microsecond)
			}
		}
	}
	reportRelay(b, &got, cpu0, 5*time.Second)
}
