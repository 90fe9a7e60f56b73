// Package client is the Go SDK of cocmd: it joins a meeting with a
// participant token and exposes the stage as the seed document names it —
// Stage.GetAccessRequests, RequestAccess, CancelRequestAccess, GrantAccess,
// DenyAccess, Join, Leave and Kick — with the spec's events delivered in
// order on Meeting.Events. It reconnects by itself and resumes.
//
// The package imports no server code; it speaks the protocol of package
// protocol (docs/protocol.md).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// Options tune a client; the zero value is ready to use.
type Options struct {
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// Dialer dials the WebSocket; nil means a default dialer.
	Dialer *websocket.Dialer
	// ReconnectMin and ReconnectMax bound the delay between reconnection
	// attempts (exponential with jitter); defaults 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// ReadTimeout drops a connection on which nothing (not even a ping)
	// arrived for this long; default 60s.
	ReadTimeout time.Duration
	// RefreshToken, if set, is called shortly before the token expires
	// (the server says when) and when the server refuses the token on a
	// reconnect: it returns a fresh one, typically from the application's
	// back end (POST .../participants/{id}/token), which the connection
	// goes on with. Without it, or if it fails, the server closes the
	// connection when the token expires and the client stops with
	// ErrUnauthenticated.
	RefreshToken func(ctx context.Context) (string, error)
	// CallTimeout bounds a call made while the client is reconnecting,
	// when the call's context has no deadline of its own: past it, the
	// call fails with ErrUnavailable. Default 10s.
	CallTimeout time.Duration
	// WebRTC is the pion API media connections are made with; nil means
	// NewWebRTCAPI's.
	WebRTC *webrtc.API
	// ICETransportPolicy restricts the candidates media may use:
	// webrtc.ICETransportPolicyRelay goes through the TURN servers the
	// server names only. The zero value allows every path.
	ICETransportPolicy webrtc.ICETransportPolicy
}

// Meeting is a joined meeting.
type Meeting struct {
	// Stage is the stage of the meeting, seen by this participant.
	Stage *Stage
	// Media publishes this participant's tracks and receives the others'.
	Media *Media

	url    string
	token  string
	opts   Options
	log    *slog.Logger
	events *queue
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu           sync.Mutex
	conn         *websocket.Conn // nil while disconnected
	connected    chan struct{}   // closed while connected
	nextID       uint64
	pending      map[uint64]chan protocol.Message
	info         protocol.Meeting
	self         protocol.Self
	participants map[string]protocol.Participant
	requests     []stage.Request
	count        int
	iceServers   []webrtc.ICEServer // from the welcome, renewed with the token
	err          error              // why the client stopped

	writeMu sync.Mutex
}

// Join connects to the server at baseURL (http or https) as the participant
// the token names, and returns once the first snapshot has arrived. An
// invalid token fails with an error matching ErrUnauthenticated.
func Join(ctx context.Context, baseURL, token string, opts *Options) (*Meeting, error) {
	u, err := realtimeURL(baseURL)
	if err != nil {
		return nil, err
	}
	m := &Meeting{url: u, token: token, done: make(chan struct{}),
		connected: make(chan struct{}), pending: map[uint64]chan protocol.Message{}}
	if opts != nil {
		m.opts = *opts
	}
	if m.opts.Dialer == nil {
		m.opts.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	}
	if m.opts.ReconnectMin <= 0 {
		m.opts.ReconnectMin = 100 * time.Millisecond
	}
	if m.opts.ReconnectMax <= 0 {
		m.opts.ReconnectMax = 5 * time.Second
	}
	if m.opts.ReadTimeout <= 0 {
		m.opts.ReadTimeout = 60 * time.Second
	}
	if m.opts.CallTimeout <= 0 {
		m.opts.CallTimeout = 10 * time.Second
	}
	m.log = m.opts.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.Stage = &Stage{m: m}
	m.Media = &Media{m: m, api: m.opts.WebRTC}
	if m.Media.api == nil {
		if m.Media.api, err = NewWebRTCAPI(m.log); err != nil {
			return nil, err
		}
	}
	conn, w, err := m.dial(ctx)
	if err != nil {
		return nil, err
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.events = newQueue()
	m.adopt(conn, w, false)
	go m.run(conn)
	return m, nil
}

func realtimeURL(base string) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil {
		return "", fmt.Errorf("client: bad URL %q: %w", base, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("client: bad URL %q: scheme must be http or https", base)
	}
	u.Path += "/v1/realtime"
	return u.String(), nil
}

// permanentError marks a dial failure not worth retrying.
type permanentError struct{ err error }

// Error implements error.
func (e *permanentError) Error() string { return e.err.Error() }

// Unwrap returns the underlying error.
func (e *permanentError) Unwrap() error { return e.err }

// dial connects and reads the welcome.
func (m *Meeting) dial(ctx context.Context) (*websocket.Conn, *protocol.Welcome, error) {
	m.mu.Lock()
	tok := m.token
	m.mu.Unlock()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	h.Set("Sec-WebSocket-Protocol", protocol.Subprotocol)
	conn, resp, err := m.opts.Dialer.DialContext(ctx, m.url, h)
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			var body struct {
				Error *protocol.Error `json:"error"`
			}
			if json.NewDecoder(resp.Body).Decode(&body) == nil && body.Error != nil {
				err = body.Error.Err()
			} else {
				err = fmt.Errorf("client: server answered %s", resp.Status)
			}
			resp.Body.Close()
			if resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
				return nil, nil, &permanentError{err}
			}
		}
		return nil, nil, err
	}
	conn.SetReadLimit(protocol.MaxMessageSize * 64) // a host's welcome lists everyone
	conn.SetReadDeadline(time.Now().Add(m.opts.ReadTimeout))
	_, b, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("client: reading the welcome: %w", err)
	}
	msg, err := protocol.DecodeMessage(b)
	if err != nil || msg.Type != protocol.TypeWelcome {
		conn.Close()
		return nil, nil, fmt.Errorf("client: expected a welcome, got %.100s", b)
	}
	var w protocol.Welcome
	if err := json.Unmarshal(msg.Data, &w); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("client: bad welcome: %w", err)
	}
	if w.Protocol != protocol.Version {
		conn.Close()
		return nil, nil, &permanentError{fmt.Errorf("client: server speaks protocol %d, this client %d", w.Protocol, protocol.Version)}
	}
	return conn, &w, nil
}

// adopt installs a new connection and its snapshot. On a reconnect, the
// differences from what the client knew become events marked Missed.
func (m *Meeting) adopt(conn *websocket.Conn, w *protocol.Welcome, reconnect bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, oldParts, oldReqs := m.self, m.participants, m.requests
	m.conn, m.info, m.self, m.count = conn, w.Meeting, w.Self, w.ParticipantCount
	m.participants = make(map[string]protocol.Participant, len(w.Participants))
	for _, p := range w.Participants {
		m.participants[p.ID] = p
	}
	m.requests = w.Requests
	if w.Media != nil {
		m.iceServers = iceServers(w.Media)
	}
	close(m.connected)
	if !reconnect {
		return
	}
	// In both SDKs: reconnected first, then what changed while away, in
	// the welcome's order, then who vanished from the view (by id), then
	// the pending list (hosts, if it changed).
	m.events.push(Reconnected{Resumed: w.Resumed})
	if old.Status != w.Self.Status {
		m.events.push(StageStatusUpdate{Old: old.Status, New: w.Self.Status, Missed: true})
	}
	for _, p := range w.Participants {
		was, ok := oldParts[p.ID]
		if !ok {
			was.Status = stage.OffStage
		}
		if was.Status != p.Status {
			m.events.push(PeerStageStatusUpdate{Participant: fromWire(p), Old: was.Status, New: p.Status, Missed: true})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(oldParts)) {
		p := oldParts[id]
		if _, ok := m.participants[id]; !ok && p.Status != stage.OffStage {
			was := p.Status
			p.Status, p.Connected = stage.OffStage, false
			m.events.push(PeerStageStatusUpdate{Participant: fromWire(p), Old: was, New: stage.OffStage, Missed: true})
		}
	}
	if w.Self.Permissions.AcceptStageRequests && !sameRequests(oldReqs, w.Requests) {
		m.events.push(StageAccessRequestUpdate{Requests: clone(w.Requests), Missed: true})
	}
}

func sameRequests(a, b []stage.Request) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ParticipantID != b[i].ParticipantID || !a[i].RequestedAt.Equal(b[i].RequestedAt) {
			return false
		}
	}
	return true
}

func clone[T any](s []T) []T { return append([]T(nil), s...) }

func fromWire(p protocol.Participant) Participant {
	return Participant{ID: p.ID, UserID: p.UserID, Name: p.Name, Preset: p.Preset, Status: p.Status, Connected: p.Connected}
}

// run reads the connection, and reconnects when it drops, until the client
// stops.
func (m *Meeting) run(conn *websocket.Conn) {
	defer close(m.done)
	defer m.events.close()
	for {
		err := m.read(conn)
		m.mu.Lock()
		m.conn = nil
		m.connected = make(chan struct{})
		for id, ch := range m.pending {
			close(ch) // ErrConnectionLost
			delete(m.pending, id)
		}
		m.mu.Unlock()
		conn.Close()
		if final := closeReason(err); final != nil || m.ctx.Err() != nil {
			m.stop(final)
			return
		}
		m.log.Info("connection lost; reconnecting", "err", err)
		m.events.push(Disconnected{Err: err})
		m.Media.later(m.Media.disconnected)
		if conn = m.reconnect(); conn == nil {
			return
		}
	}
}

// closeReason returns the error that ends the client for a close code that
// asks not to reconnect.
func closeReason(err error) error {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return nil
	}
	switch ce.Code {
	case protocol.CloseReplaced:
		return ErrReplaced
	case protocol.CloseRemoved:
		return ErrRemoved
	case protocol.CloseMeetingEnded:
		return ErrMeetingEnded
	}
	return nil
}

func (m *Meeting) stop(err error) {
	m.mu.Lock()
	if m.err == nil {
		m.err = err
		if err == nil {
			m.err = ErrClosed
		}
	}
	m.mu.Unlock()
	m.cancel()
	m.Media.close()
	m.events.push(Closed{Err: err})
}

func (m *Meeting) reconnect() *websocket.Conn {
	delay := m.opts.ReconnectMin
	refreshed := false // once per outage: a fresh token that is refused too is final
	for {
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-m.ctx.Done():
			t.Stop()
			m.stop(nil)
			return nil
		case <-t.C:
		}
		conn, w, err := m.dial(m.ctx)
		if err == nil {
			m.adopt(conn, w, true)
			m.log.Info("reconnected", "resumed", w.Resumed)
			m.Media.later(m.Media.reconnected)
			return conn
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			if errors.Is(err, ErrUnauthenticated) && !refreshed && m.opts.RefreshToken != nil {
				tok, rerr := m.opts.RefreshToken(m.ctx)
				if rerr == nil {
					m.mu.Lock()
					m.token = tok
					m.mu.Unlock()
					refreshed = true
					delay = m.opts.ReconnectMin
					continue
				}
				m.log.Warn("refreshing the token failed", "err", rerr)
			}
			m.log.Warn("cannot reconnect", "err", err)
			m.stop(perm.err)
			return nil
		}
		delay = min(delay*2, m.opts.ReconnectMax)
	}
}

// refreshToken gets a fresh token and hands it to the live connection, so
// that it outlives the old one.
func (m *Meeting) refreshToken() {
	ctx, cancel := context.WithTimeout(m.ctx, time.Minute)
	defer cancel()
	tok, err := m.opts.RefreshToken(ctx)
	if err != nil {
		m.log.Warn("refreshing the token failed", "err", err)
		return
	}
	var res protocol.TokenRefreshed
	if err := m.call(ctx, protocol.MethodRefreshToken, protocol.TokenParams{Token: tok}, &res); err != nil {
		m.log.Warn("the server refused the refreshed token", "err", err)
		return
	}
	m.mu.Lock()
	m.token = tok // for reconnects too
	if res.Media != nil {
		m.iceServers = iceServers(res.Media) // for the next ICE restart
	}
	m.mu.Unlock()
	m.Media.setICEServers()
}

// read dispatches messages until the connection fails.
func (m *Meeting) read(conn *websocket.Conn) error {
	extend := func() { conn.SetReadDeadline(time.Now().Add(m.opts.ReadTimeout)) }
	conn.SetPingHandler(func(data string) error {
		extend()
		m.writeMu.Lock()
		defer m.writeMu.Unlock()
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	for {
		extend()
		_, b, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		msg, err := protocol.DecodeMessage(b)
		if err != nil {
			m.log.Warn("ignoring a malformed message", "err", err)
			continue
		}
		switch msg.Type {
		case protocol.TypeResponse:
			m.mu.Lock()
			ch := m.pending[msg.ID]
			delete(m.pending, msg.ID)
			m.mu.Unlock()
			if ch != nil {
				ch <- msg
			}
		case protocol.TypeEvent:
			if protocol.IsMedia(msg.Event) {
				m.Media.event(msg)
				continue
			}
			if err := m.apply(msg); err != nil {
				m.log.Warn("ignoring a malformed event", "event", msg.Event, "err", err)
			}
		}
	}
}

// Events returns the meeting's events, in order. Events wait in the client
// until read; the channel is closed after the Closed event. Close discards
// the events not read by then.
func (m *Meeting) Events() <-chan Event { return m.events.out }

// Self returns this participant as the meeting last told it.
func (m *Meeting) Self() Participant {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fromWire(m.self.Participant)
}

// Permissions returns this participant's permissions.
func (m *Meeting) Permissions() stage.Permissions {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.self.Permissions
}

// Info returns the meeting's settings as the meeting last told them.
func (m *Meeting) Info() MeetingInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return infoFromWire(m.info)
}

func infoFromWire(w protocol.Meeting) MeetingInfo {
	return MeetingInfo{ID: w.ID, Title: w.Title, Type: w.Type, MaxOnStage: w.MaxOnStage, StageRequestTTL: time.Duration(w.StageRequestTTL) * time.Second}
}

// ID returns the meeting's id.
func (m *Meeting) ID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.info.ID
}

// Participants returns the participants this client knows, self excluded:
// for hosts everyone connected and everyone not OFF_STAGE; for others those
// not OFF_STAGE.
func (m *Meeting) Participants() []Participant {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Participant, 0, len(m.participants))
	for _, p := range m.participants {
		out = append(out, fromWire(p))
	}
	return out
}

// Participant returns the participant with user id uid, if known.
func (m *Meeting) Participant(uid string) (Participant, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.participants {
		if p.UserID == uid {
			return fromWire(p), true
		}
	}
	return Participant{}, false
}

// ParticipantCount returns how many participants are connected, as of the
// welcome or the last participantCount event (every few seconds).
func (m *Meeting) ParticipantCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count
}

// Connected reports whether the client is connected right now.
func (m *Meeting) Connected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conn != nil
}

// Err returns why the client stopped, or nil while it runs.
func (m *Meeting) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Done is closed when the client has stopped.
func (m *Meeting) Done() <-chan struct{} { return m.done }

// Close leaves the meeting: the connection is closed normally and the
// server lets the participant go at once (its pending request, if any, is
// withdrawn). Its stage status otherwise stays its own, for when it joins
// again. A connection that merely drops keeps the participant's place for the
// server's grace period instead.
func (m *Meeting) Close() error {
	m.cancel()
	m.mu.Lock()
	conn := m.conn
	m.mu.Unlock()
	if conn != nil {
		m.writeMu.Lock()
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
		m.writeMu.Unlock()
		conn.Close()
	}
	<-m.done
	m.events.discard()
	return nil
}

// call sends a request and waits for its response. While the client is
// reconnecting, it waits for the connection until ctx's deadline (or
// Options.CallTimeout), then fails with ErrUnavailable.
func (m *Meeting) call(ctx context.Context, method string, params any, result any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.opts.CallTimeout)
		defer cancel()
	}
	var raw json.RawMessage
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return err
		}
		raw = b
	}
	for {
		m.mu.Lock()
		if m.err != nil {
			err := m.err
			m.mu.Unlock()
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		conn, connected := m.conn, m.connected
		if conn == nil {
			m.mu.Unlock()
			select {
			case <-connected:
				continue
			case <-m.done:
				continue
			case <-ctx.Done():
				return fmt.Errorf("%w: not connected in time (%w)", ErrUnavailable, ctx.Err())
			}
		}
		m.nextID++
		id := m.nextID
		ch := make(chan protocol.Message, 1)
		m.pending[id] = ch
		m.mu.Unlock()
		b, _ := json.Marshal(protocol.Request{ID: id, Method: method, Params: raw})
		m.writeMu.Lock()
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		err := conn.WriteMessage(websocket.TextMessage, b)
		m.writeMu.Unlock()
		if err != nil {
			conn.Close() // the reader notices and reconnects
		}
		select {
		case msg, ok := <-ch:
			if !ok {
				return ErrConnectionLost
			}
			if msg.Error != nil {
				return msg.Error.Err()
			}
			if result != nil {
				return json.Unmarshal(msg.Data, result)
			}
			return nil
		case <-ctx.Done():
			m.mu.Lock()
			delete(m.pending, id)
			m.mu.Unlock()
			return ctx.Err()
		}
	}
}

// Ping round-trips a request through the meeting's owner.
func (m *Meeting) Ping(ctx context.Context) error {
	return m.call(ctx, protocol.MethodPing, nil, nil)
}

// iceServers converts the server's ICE servers to pion's.
func iceServers(mc *protocol.MediaConfig) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(mc.ICEServers))
	for _, s := range mc.ICEServers {
		out = append(out, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}

// rtcConfig is the configuration of a new peer connection.
func (m *Meeting) rtcConfig() webrtc.Configuration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return webrtc.Configuration{ICEServers: slices.Clone(m.iceServers), ICETransportPolicy: m.opts.ICETransportPolicy}
}
