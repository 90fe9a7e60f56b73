package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/client"
)

// tcpOnlyAPI is the SDK's WebRTC API for a client whose network lets no
// UDP through: it has TCP candidates only.
func tcpOnlyAPI(t *testing.T) *webrtc.API {
	t.Helper()
	api, err := client.NewWebRTCAPIOn(nil, webrtc.NetworkTypeTCP4)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// A viewer that can use TCP only receives the stage's media over ICE-TCP,
// on the server's HTTP port (one TCP port carries the web and the media),
// and a publisher that can use TCP only publishes over it.
func TestMedia_iceTCP(t *testing.T) {
	ts := startServer(t, testOptions{iceTCP: true})
	mid := ts.meeting(map[string]any{"title": "tcp", "type": "WEBINAR"})
	ctx := ctxT(t)
	join := func(uid, preset string) *client.Meeting {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := client.Join(c, ts.URL, ts.participant(mid, uid, preset), &client.Options{WebRTC: tcpOnlyAPI(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	host := join("host", "webinar_host")
	if err := host.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	viewer := join("viewer", "webinar_viewer")
	s := subscribe(t, viewer)
	added := make(chan *client.RemoteTrack, 4)
	pump(t, viewer, s, added, nil)
	src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
	if err := host.Media.Publish(ctx, client.LocalTrack{Track: src.track, Source: client.SourceCamera}); err != nil {
		t.Fatal(err)
	}
	recvTrack(t, added, "the host's track over TCP")
	waitCount(t, "viewer over TCP", 100, func() int { return s.count(host.Self().ID) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bad > 0 {
		t.Errorf("%d packets not as sent", s.bad)
	}
}
