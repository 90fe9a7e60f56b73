package media

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// stunServer answers binding requests with the given address as the one
// it saw: a NAT in front of the SFU.
func stunServer(t *testing.T, seen *net.UDPAddr) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil {
				continue
			}
			res, _ := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: seen.IP, Port: seen.Port}, stun.Fingerprint)
			c.WriteTo(res.Raw, from)
		}
	}()
	return c.LocalAddr().String()
}

// The public address learned over STUN is the one the SFU announces.
func TestDiscoverPublicIP(t *testing.T) {
	addr := stunServer(t, &net.UDPAddr{IP: net.ParseIP("203.0.113.9"), Port: 40000})
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ip, err := DiscoverPublicIP(conn, addr, 3*time.Second)
	if err != nil || !ip.Equal(net.ParseIP("203.0.113.9")) {
		t.Fatalf("discovered %v, %v", ip, err)
	}
	s := newSFUOn(t, conn, Config{PublicIPs: []string{ip.String()}, Loopback: true})
	s.Allow("m", "p", stage.Media{Video: true}, true)
	sess := s.NewSession("m", "p", "u", func(string, any) {})
	defer sess.Close()
	sdp, mid := offer(t)
	ans, err := sess.Publish(sdp, map[string]protocol.Source{mid: protocol.SourceCamera})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ans, "203.0.113.9") {
		t.Fatalf("the answer does not announce the discovered address:\n%s", ans)
	}

	// No STUN server there: a clear error, in time.
	silent, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	dead := silent.LocalAddr().String()
	silent.Close()
	conn2, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer conn2.Close()
	start := time.Now()
	if _, err := DiscoverPublicIP(conn2, dead, 600*time.Millisecond); err == nil {
		t.Fatal("an address from nowhere")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("the discovery did not give up in time")
	}
}
