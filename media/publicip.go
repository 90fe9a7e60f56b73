package media

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pion/stun/v4"
)

// DiscoverPublicIP asks the STUN server at stunAddr which address conn's
// packets arrive from, and returns its IP: the address to announce when
// the server is behind 1:1 NAT (a cloud VM) and the operator does not know
// it. It must run on the very socket the SFU will use, before the SFU
// does, since a NAT maps each socket on its own. It tries three times,
// each waiting up to timeout/3.
func DiscoverPublicIP(conn net.PacketConn, stunAddr string, timeout time.Duration) (net.IP, error) {
	server, err := net.ResolveUDPAddr("udp", stunAddr)
	if err != nil {
		return nil, fmt.Errorf("media: STUN server %q: %w", stunAddr, err)
	}
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 1500)
	var lastErr error
	for range 3 {
		req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		if err != nil {
			return nil, err
		}
		if _, err := conn.WriteTo(req.Raw, server); err != nil {
			return nil, fmt.Errorf("media: asking %s for the public address: %w", stunAddr, err)
		}
		deadline := time.Now().Add(timeout / 3)
		conn.SetReadDeadline(deadline)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				lastErr = err
				break
			}
			if !sameUDPAddr(from, server) {
				continue // nothing else should be talking to this socket yet
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if err := res.Decode(); err != nil || res.TransactionID != req.TransactionID {
				continue
			}
			if res.Type != stun.BindingSuccess {
				return nil, fmt.Errorf("media: STUN server %s answered %v", stunAddr, res.Type)
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(res); err != nil {
				return nil, fmt.Errorf("media: STUN server %s gave no address: %w", stunAddr, err)
			}
			return xor.IP, nil
		}
	}
	var ne net.Error
	if errors.As(lastErr, &ne) && ne.Timeout() {
		return nil, fmt.Errorf("media: no answer from the STUN server %s in %v", stunAddr, timeout)
	}
	return nil, fmt.Errorf("media: asking %s for the public address: %w", stunAddr, lastErr)
}

func sameUDPAddr(a net.Addr, b *net.UDPAddr) bool {
	ua, ok := a.(*net.UDPAddr)
	return ok && ua.Port == b.Port && ua.IP.Equal(b.IP)
}
