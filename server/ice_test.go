package server

import "testing"

// TURN URLs name this node when told its host (behind a balancer, the
// public URL names the balancer, which may send the client to a node
// that cannot relay to this one's media), else the public URL's host,
// else the host the client reached.
func TestICEHost(t *testing.T) {
	for _, tc := range []struct {
		host, public, req, want string
	}{
		{"n1.example.com", "https://webinar.example.com", "webinar.example.com", "n1.example.com"},
		{"203.0.113.7", "https://webinar.example.com", "webinar.example.com", "203.0.113.7"},
		{"2001:db8::7", "", "webinar.example.com", "[2001:db8::7]"},
		{"", "https://webinar.example.com", "10.0.0.1:8080", "webinar.example.com"},
		{"", "", "10.0.0.1:8080", "10.0.0.1"},
		{"", "", "[::1]:8080", "[::1]"},
		{"", "", "evil host", ""},
	} {
		s := &Server{cfg: Config{PublicURL: tc.public, ICE: ICEServers{Host: tc.host}}}
		if got := s.iceHost(tc.req); got != tc.want {
			t.Errorf("host %q, public URL %q, request to %q: %q, want %q", tc.host, tc.public, tc.req, got, tc.want)
		}
	}
}
