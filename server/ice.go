package server

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/relay"
)

// ICEServers describes the TURN servers each connection is told about,
// with credentials of its own (TURN REST: relay.Credentials) that expire
// with its token.
type ICEServers struct {
	// Secret signs the credentials; nil tells of no TURN server.
	Secret []byte
	// URLs are fixed TURN URLs: an external TURN server (coturn with
	// use-auth-secret and the same secret), or the embedded one behind a
	// name of its own. Empty means the embedded server, at the host the
	// client reached this server at (or PublicURL's), on the ports below.
	URLs []string
	// Host, if set, is what the embedded server's URLs name: this node
	// itself, since only the node holding a connection can relay its
	// media (behind a balancer, PublicURL names the balancer). Empty:
	// PublicURL's host, else the one the client reached the server at.
	Host string
	// UDPPort is the embedded server's TURN/UDP port (the SFU's); 0 for
	// none.
	UDPPort int
	// TCPPort is its TURN/TCP port (the HTTP(S) port); 0 for none.
	TCPPort int
	// TLSPort is its TURN/TLS port (the HTTPS port); 0 for none. TLS on
	// 443 passes firewalls that let nothing else out.
	TLSPort int
}

// mediaConfig is what a connection of claims, reached at host (a request's
// Host), is told about reaching media; nil when there is nothing to tell.
func (s *Server) mediaConfig(host string, c Claims) *protocol.MediaConfig {
	ice := s.cfg.ICE
	if ice.Secret == nil {
		return nil
	}
	urls := ice.URLs
	if len(urls) == 0 {
		h := s.iceHost(host)
		if h == "" {
			return nil
		}
		if ice.UDPPort > 0 {
			urls = append(urls, "turn:"+h+":"+strconv.Itoa(ice.UDPPort)+"?transport=udp")
		}
		if ice.TCPPort > 0 {
			urls = append(urls, "turn:"+h+":"+strconv.Itoa(ice.TCPPort)+"?transport=tcp")
		}
		if ice.TLSPort > 0 {
			urls = append(urls, "turns:"+h+":"+strconv.Itoa(ice.TLSPort)+"?transport=tcp")
		}
	}
	user, pass := relay.Credentials(ice.Secret, c.Participant, time.Unix(c.Expires, 0))
	return &protocol.MediaConfig{ICEServers: []protocol.ICEServer{{URLs: urls, Username: user, Credential: pass}}}
}

// iceHost is the host a TURN URL names: ICE.Host if set, else PublicURL's
// if set, else the one the client reached the server at; an IPv6 literal
// in brackets.
func (s *Server) iceHost(reqHost string) string {
	h := reqHost
	if s.cfg.ICE.Host != "" {
		h = s.cfg.ICE.Host
	} else if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil && u.Host != "" {
			h = u.Host
		}
	}
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "" || strings.ContainsAny(h, "/?#@ ") {
		return ""
	}
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}
