package server_test

import (
	"encoding/binary"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/client"
)

// rtpSource writes numbered packets to a track every interval until
// stopped: payload bytes 0-3 are the number n, byte 4+i is byte(n+i), so a
// receiver can check every payload it gets.
type rtpSource struct {
	track *webrtc.TrackLocalStaticRTP
	sent  atomic.Uint32
	stop  chan struct{}
	done  chan struct{}
}

func newRTPSource(t *testing.T, kind string, mime string, every time.Duration) *rtpSource {
	t.Helper()
	c := webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000}
	if mime == webrtc.MimeTypeOpus {
		c = webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 48000, Channels: 2}
	}
	tr, err := webrtc.NewTrackLocalStaticRTP(c, kind, "test")
	if err != nil {
		t.Fatal(err)
	}
	s := &rtpSource{track: tr, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := uint32(1); ; n++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			payload := make([]byte, 200)
			binary.BigEndian.PutUint32(payload, n)
			for i := 4; i < len(payload); i++ {
				payload[i] = byte(n + uint32(i))
			}
			s.track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(n), Timestamp: n * 3000, Marker: true}, Payload: payload})
			s.sent.Store(n)
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *rtpSource) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// validPayload checks a payload written by an rtpSource.
func validPayload(p []byte) bool {
	if len(p) != 200 {
		return false
	}
	n := binary.BigEndian.Uint32(p)
	for i := 4; i < len(p); i++ {
		if p[i] != byte(n+uint32(i)) {
			return false
		}
	}
	return true
}

// sink counts what one subscriber receives, by publisher.
type sink struct {
	mu      sync.Mutex
	packets map[string]int       // participant id -> valid packets
	bad     int                  // packets whose payload was not as sent
	last    map[string]time.Time // participant id -> last packet's arrival
	tracks  map[string]*client.RemoteTrack
	wg      sync.WaitGroup
}

// subscribe makes m a subscriber whose tracks are read into a sink.
func subscribe(t *testing.T, m *client.Meeting) *sink {
	t.Helper()
	s := &sink{packets: map[string]int{}, last: map[string]time.Time{}, tracks: map[string]*client.RemoteTrack{}}
	if err := m.Media.Subscribe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return s
}

// take starts reading a track announced by a TrackAdded event.
func (s *sink) take(rt *client.RemoteTrack) {
	s.mu.Lock()
	s.tracks[rt.ID()] = rt
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 1500)
		var p rtp.Packet
		for {
			n, _, err := rt.Read(buf)
			if err != nil {
				return
			}
			if p.Unmarshal(buf[:n]) != nil {
				continue
			}
			s.mu.Lock()
			if validPayload(p.Payload) {
				s.packets[rt.ParticipantID]++
			} else {
				s.bad++
			}
			s.last[rt.ParticipantID] = time.Now()
			s.mu.Unlock()
		}
	}()
}

func (s *sink) count(pid string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.packets[pid]
}

func (s *sink) lastAt(pid string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[pid]
}

// pump feeds m's track events to s until the test ends.
func pump(t *testing.T, m *client.Meeting, s *sink, added chan<- *client.RemoteTrack, removed chan<- *client.RemoteTrack) {
	go func() {
		for e := range m.Events() {
			switch e := e.(type) {
			case client.TrackAdded:
				if s != nil {
					s.take(e.Track)
				}
				if added != nil {
					added <- e.Track
				}
			case client.TrackRemoved:
				if removed != nil {
					removed <- e.Track
				}
			}
		}
	}()
}

// watcher is a participant that subscribes: its tracks are read into a
// sink and announced on added and removed.
type watcher struct {
	m              *client.Meeting
	s              *sink
	added, removed chan *client.RemoteTrack
}

// watch joins a participant of meeting mid and subscribes it.
func watch(t *testing.T, ts *testServer, mid, uid, preset string) watcher {
	t.Helper()
	m := ts.join(ts.participant(mid, uid, preset))
	w := watcher{m: m, s: subscribe(t, m), added: make(chan *client.RemoteTrack, 8), removed: make(chan *client.RemoteTrack, 8)}
	pump(t, m, w.s, w.added, w.removed)
	return w
}

func waitCount(t *testing.T, what string, n int, count func() int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d packets, want %d", what, count(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func recvTrack(t *testing.T, ch <-chan *client.RemoteTrack, what string) *client.RemoteTrack {
	t.Helper()
	select {
	case rt := <-ch:
		return rt
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

// An on-stage host publishes; viewers subscribed before and after receive
// every packet as sent, with the track's owner named.
func TestMedia_forwarding(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "media", "type": "WEBINAR"})
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	ctx := ctxT(t)
	if err := host.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	var sinks []*sink
	var addeds []chan *client.RemoteTrack
	for i := range 3 {
		v := ts.join(ts.participant(mid, uid(i), "webinar_viewer"))
		s := subscribe(t, v)
		ch := make(chan *client.RemoteTrack, 4)
		pump(t, v, s, ch, nil)
		sinks, addeds = append(sinks, s), append(addeds, ch)
	}
	src := newRTPSource(t, "video", webrtc.MimeTypeVP8, 5*time.Millisecond)
	if err := host.Media.Publish(ctx, client.LocalTrack{Track: src.track, Source: client.SourceCamera}); err != nil {
		t.Fatal(err)
	}
	hostID := host.Self().ID
	for i, ch := range addeds {
		rt := recvTrack(t, ch, "the host's track")
		if rt.ParticipantID != hostID || rt.UserID != "host" || rt.Source != client.SourceCamera || rt.Codec().MimeType != webrtc.MimeTypeVP8 {
			t.Errorf("viewer %d: track %+v of %s/%s/%s", i, rt.Codec(), rt.ParticipantID, rt.UserID, rt.Source)
		}
	}
	for i, s := range sinks {
		waitCount(t, uid(i), 100, func() int { return s.count(hostID) })
	}
	// A viewer that subscribes late gets the track published before.
	late := ts.join(ts.participant(mid, "late", "webinar_viewer"))
	ls := subscribe(t, late)
	lch := make(chan *client.RemoteTrack, 4)
	pump(t, late, ls, lch, nil)
	recvTrack(t, lch, "the host's track, late")
	waitCount(t, "late viewer", 100, func() int { return ls.count(hostID) })
	sinks = append(sinks, ls)
	for i, s := range sinks {
		s.mu.Lock()
		if s.bad > 0 {
			t.Errorf("subscriber %d: %d packets not as sent", i, s.bad)
		}
		s.mu.Unlock()
	}
	// The metrics tell the same story; every viewer (UDP, the SFU the
	// DTLS server) got its packets on the direct path, and decrypted them.
	st := ts.sfu.Stats(mid)
	if st.Tracks != 1 || st.Subscribers != 4 || st.PacketsIn < 100 || st.PacketsOut < 400 || st.Direct != 4 || st.DirectRTCP == 0 {
		t.Errorf("stats: %+v", st)
	}
	body := metricsText(t, ts)
	for _, want := range []string{`cocmd_media_tracks{meeting="` + mid + `"} 1`, `cocmd_media_subscribers{meeting="` + mid + `"} 4`,
		`cocmd_media_direct_subscribers{meeting="` + mid + `"} 4`, "# TYPE cocmd_media_packets_forwarded_total counter"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func metricsText(t *testing.T, ts *testServer) string {
	t.Helper()
	req, _ := http.NewRequest("GET", ts.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}
