package server

import (
	"crypto/tls"
	"net"
	"time"
)

// handshakeTimeout bounds a TLS handshake on the shared port.
const handshakeTimeout = 10 * time.Second

// WebListener returns what to serve HTTP on from ln (the port's web route,
// SplitTCP's TCPRoutes.Web, or the port itself): each connection counted
// against its address (Listener) and, with tlsCfg, TLS terminated and told
// apart from TURN over TLS (SplitTLS), which turn gets; turn is nil without
// TLS. Serve web with http.Server.Serve, the server's TLSConfig set to
// tlsCfg for HTTP/2. Close turn if no TURN server serves it.
func (s *Server) WebListener(ln net.Listener, tlsCfg *tls.Config) (web, turn net.Listener) {
	web = s.Listener(ln)
	if tlsCfg == nil {
		return web, nil
	}
	return SplitTLS(web, tlsCfg, handshakeTimeout)
}
