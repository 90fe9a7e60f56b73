package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/relay"
	"github.com/cocmd/cocmd/stage"
)

// joinWith joins with options of the test's own.
func (ts *testServer) joinWith(token string, o *client.Options) *client.Meeting {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := client.Join(ctx, ts.URL, token, o)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { m.Close() })
	return m
}

// A publisher and a viewer that may use relay candidates only reach media
// through the embedded TURN server over each of its transports — UDP on
// the media port, TCP and TLS on the HTTP(S) port — told one URL each; the
// server counts the allocations and datagrams of that transport, and none
// of the others.
func TestMedia_turn(t *testing.T) {
	for _, tc := range []struct {
		tr  relay.Transport
		tls bool
		url string // with the UDP port, then the TCP port
	}{
		{relay.UDP, false, "turn:127.0.0.1:%[1]d?transport=udp"},
		{relay.TCP, false, "turn:127.0.0.1:%[2]d?transport=tcp"},
		{relay.TLS, true, "turns:127.0.0.1:%[2]d?transport=tcp"},
	} {
		t.Run(tc.tr.String(), func(t *testing.T) {
			ts := startServer(t, testOptions{turn: true, tls: tc.tls, turnURLs: func(udp, tcp int) []string {
				return []string{fmt.Sprintf(tc.url, udp, tcp)}
			}})
			mid := ts.meeting(map[string]any{"title": "turn", "type": "WEBINAR"})
			ctx := ctxT(t)
			relayOnly := &client.Options{ICETransportPolicy: webrtc.ICETransportPolicyRelay}
			host := ts.joinWith(ts.participant(mid, "host", "webinar_host"), relayOnly)
			if err := host.Stage.Join(ctx); err != nil {
				t.Fatal(err)
			}
			viewer := ts.joinWith(ts.participant(mid, "viewer", "webinar_viewer"), relayOnly)
			s := subscribe(t, viewer)
			added := make(chan *client.RemoteTrack, 4)
			pump(t, viewer, s, added, nil)
			src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
			if err := host.Media.Publish(ctx, client.LocalTrack{Track: src.track, Source: client.SourceCamera}); err != nil {
				t.Fatal(err)
			}
			recvTrack(t, added, "the host's track through TURN/"+tc.tr.String())
			waitCount(t, "viewer through TURN/"+tc.tr.String(), 100, func() int { return s.count(host.Self().ID) })
			st := ts.turn.Stats()
			for tr := range relay.Transport(3) {
				if tr == tc.tr {
					if st.Created[tr] < 2 || st.ToMedia[tr] < 100 || st.FromMedia[tr] < 100 {
						t.Errorf("TURN/%s: %d allocations, %d datagrams to media, %d from: want both peers' allocations and the media through them",
							tr, st.Created[tr], st.ToMedia[tr], st.FromMedia[tr])
					}
				} else if st.Created[tr] != 0 {
					t.Errorf("TURN/%s was used (%d allocations); only %s was offered", tr, st.Created[tr], tc.tr)
				}
			}
			metrics := ts.metrics()
			want := fmt.Sprintf("cocmd_turn_allocations_created_total{transport=%q} %d", tc.tr, st.Created[tc.tr])
			if !strings.Contains(metrics, want) {
				t.Errorf("the metrics lack %q:\n%s", want, metrics)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.bad > 0 {
				t.Errorf("%d packets not as sent", s.bad)
			}
		})
	}
}

// metrics reads GET /metrics.
func (ts *testServer) metrics() string {
	ts.t.Helper()
	req, _ := http.NewRequest("GET", ts.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The welcome names the embedded TURN server at the host the client
// reached, over TLS, with TURN REST credentials of the participant
// that expire with the token; auth.refresh renews them with the new
// token's expiry.
func TestRealtime_iceServers(t *testing.T) {
	ts := startServer(t, testOptions{turn: true, tls: true, tokenTTL: time.Hour})
	mid := ts.meeting(map[string]any{"title": "ice", "type": "WEBINAR"})
	var p struct {
		Participant    struct{ ID string }
		Token          string
		TokenExpiresAt time.Time `json:"token_expires_at"`
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "V", "user_id": "v", "preset": "webinar_viewer"}, &p)
	u := strings.Replace(ts.URL, "https", "wss", 1) + "/v1/realtime"
	c, _, err := websocket.DefaultDialer.Dial(strings.Replace(u, "127.0.0.1", "localhost", 1), bearer(p.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var w struct{ Data protocol.Welcome }
	if err := c.ReadJSON(&w); err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(strings.TrimPrefix(ts.URL, "https://"), ":")
	check := func(what string, mc *protocol.MediaConfig, expires time.Time) {
		t.Helper()
		if mc == nil || len(mc.ICEServers) != 1 {
			t.Fatalf("%s: media config %+v, want one TURN server", what, mc)
		}
		s := mc.ICEServers[0]
		tls := "turns:localhost:" + port + "?transport=tcp"
		if len(s.URLs) != 1 || s.URLs[0] != tls {
			t.Errorf("%s: URLs %q, want %q (the host the client reached)", what, s.URLs, tls)
		}
		wantUser := fmt.Sprintf("%d:%s", expires.Unix(), p.Participant.ID)
		if s.Username != wantUser || s.Credential != relay.Password(turnSecret, wantUser) {
			t.Errorf("%s: credentials %q/%q, want %q with its HMAC", what, s.Username, s.Credential, wantUser)
		}
	}
	check("welcome", w.Data.Media, p.TokenExpiresAt)

	// A fresh token, two hours long this time.
	var fresh struct {
		Token          string
		TokenExpiresAt time.Time `json:"token_expires_at"`
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants/"+p.Participant.ID+"/token", map[string]any{"token_ttl": 7200}, &fresh)
	if fresh.Token == "" {
		t.Fatal("no fresh token")
	}
	if err := c.WriteJSON(map[string]any{"type": "request", "id": 1, "method": "auth.refresh", "params": map[string]string{"token": fresh.Token}}); err != nil {
		t.Fatal(err)
	}
	res := response(t, c, 1)
	var r protocol.TokenRefreshed
	if err := json.Unmarshal(res.Data, &r); err != nil || res.Error != nil {
		t.Fatalf("auth.refresh: %v %+v", err, res.Error)
	}
	check("auth.refresh", r.Media, fresh.TokenExpiresAt)
	if !r.ExpiresAt.Equal(fresh.TokenExpiresAt) || !fresh.TokenExpiresAt.After(p.TokenExpiresAt) {
		t.Errorf("refreshed expiry %v, want %v, after %v", r.ExpiresAt, fresh.TokenExpiresAt, p.TokenExpiresAt)
	}
	// Plain HTTP requests on the HTTPS port are not served.
	if resp, err := http.Get(strings.Replace(ts.URL, "https", "http", 1) + "/v1/openapi.yaml"); err == nil {
		resp.Body.Close()
		t.Fatalf("plain HTTP on the HTTPS port answered %d", resp.StatusCode)
	}
}

// cutProxy forwards TCP connections to a target until cut closes every
// connection it carries; it goes on accepting new ones.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		wg.Wait()
	})
	return p
}

func (p *cutProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// cut closes every connection carried so far.
func (p *cutProxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// A path that dies mid-meeting is found again without leaving the
// meeting: both SDK connections (the publisher's and the viewer's) restart
// ICE, allocate anew through TURN, and the media flows again on the same
// realtime connection.
func TestMedia_iceRestart(t *testing.T) {
	var proxy *cutProxy
	ts := startServer(t, testOptions{turn: true, turnURLs: func(_, tcp int) []string {
		proxy = newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", tcp))
		return []string{fmt.Sprintf("turn:127.0.0.1:%d?transport=tcp", proxy.port())}
	}})
	mid := ts.meeting(map[string]any{"title": "restart", "type": "WEBINAR"})
	ctx := ctxT(t)
	relayOnly := &client.Options{ICETransportPolicy: webrtc.ICETransportPolicyRelay}
	host := ts.joinWith(ts.participant(mid, "host", "webinar_host"), relayOnly)
	if err := host.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	viewer := ts.joinWith(ts.participant(mid, "viewer", "webinar_viewer"), relayOnly)
	s := subscribe(t, viewer)
	added := make(chan *client.RemoteTrack, 4)
	reconnected := make(chan struct{}, 4)
	go func() {
		for e := range viewer.Events() {
			switch e := e.(type) {
			case client.TrackAdded:
				s.take(e.Track)
				added <- e.Track
			case client.Reconnected:
				reconnected <- struct{}{}
			}
		}
	}()
	src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
	if err := host.Media.Publish(ctx, client.LocalTrack{Track: src.track, Source: client.SourceCamera}); err != nil {
		t.Fatal(err)
	}
	recvTrack(t, added, "the host's track")
	waitCount(t, "before the cut", 50, func() int { return s.count(host.Self().ID) })
	before := ts.turn.Stats().Created[relay.TCP]

	proxy.cut()
	// Whatever was in flight: count from a moment after the cut.
	time.Sleep(100 * time.Millisecond)
	n := s.count(host.Self().ID)
	deadline := time.Now().Add(40 * time.Second)
	for s.count(host.Self().ID) < n+100 {
		if time.Now().After(deadline) {
			t.Fatalf("no media after the cut: %d packets (%d before it); TURN allocations %d then %d",
				s.count(host.Self().ID), n, before, ts.turn.Stats().Created[relay.TCP])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after := ts.turn.Stats().Created[relay.TCP]; after < before+2 {
		t.Errorf("TURN allocations %d after the restart, %d before: want both connections to allocate anew", after, before)
	}
	select {
	case <-reconnected:
		t.Error("the viewer reconnected its realtime connection: ICE should restart without it")
	default:
	}
	if host.Self().Status != stage.OnStage {
		t.Errorf("the host left the stage: %s", host.Self().Status)
	}
}
