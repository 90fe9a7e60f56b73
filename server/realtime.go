package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/media"
	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// realtime is the WebSocket endpoint. The participant token comes in the
// Authorization header or a subprotocol entry (see verify).
func (s *Server) realtime(w http.ResponseWriter, r *http.Request) {
	claims, err := s.verify(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, stage.Errorf(stage.ErrBadRequest, "this endpoint speaks WebSocket only"))
		return
	}
	if err := s.ready(); err != nil {
		// Cut off from the cluster: the client tries another node.
		writeError(w, stage.Errorf(stage.ErrUnavailable, "this node cannot serve meetings now: "+err.Error()))
		return
	}
	client := s.clientAddr(r)
	if !s.authed.take(client, s.limits.Authenticated) {
		writeError(w, stage.Errorf(stage.ErrRateLimited, "too many realtime connections from one address"))
		return
	}
	c, err := s.reg.Connect(r.Context(), claims.Meeting, claims.Participant, s.mediaConfig(r.Host, claims))
	if err != nil {
		if stage.CodeOf(err) == stage.CodeNotFound {
			// A removed participant or an ended meeting: the token no
			// longer admits anyone.
			err = stage.Errorf(stage.ErrUnauthenticated, "token no longer valid: "+err.Error())
		}
		s.authed.release(client)
		if httpStatus(err) >= 500 {
			// The client hears only the code and message: an operator
			// seeing 503s needs the cause too.
			s.log.Warn("realtime connection refused", "meeting", claims.Meeting, "participant", claims.Participant, "err", err)
		}
		writeError(w, err)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.authed.release(client)
		s.reg.Disconnect(c)
		return // the upgrader has answered
	}
	if lc := limited(conn.NetConn()); lc != nil {
		lc.authenticated() // counted by client address from here on
	}
	// The HTTP server's read and write deadlines stay on a hijacked
	// connection: clear them. Reads get a deadline per message from here
	// on, writes one per blocking write.
	conn.NetConn().SetDeadline(time.Time{})
	// Serve the connection on a goroutine of its own and return: net/http
	// then lets go of the request, its buffers and its deep stack, which
	// would otherwise stay alive as long as the connection.
	served := s.spawn(func() {
		defer s.authed.release(client)
		s.serveConn(conn, c, claims, r.Host)
		s.log.Debug("realtime connection ended", "meeting", claims.Meeting, "participant", claims.Participant)
	})
	if !served { // shutting down
		s.authed.release(client)
		conn.Close()
		s.reg.Disconnect(c)
	}
}

// verify checks the participant token of a request: in the Authorization
// header (Bearer), or, for browsers, whose WebSocket cannot set headers, as
// a Sec-WebSocket-Protocol entry "cocmd.token.<token>" beside "cocmd.v1".
// Never in the URL, where proxies and access logs would keep it. An
// optional meeting parameter must match the token's meeting.
func (s *Server) verify(r *http.Request) (Claims, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		tok = protocolToken(r)
	}
	claims, err := s.tokens.Verify(tok)
	if err == nil {
		if m := r.URL.Query().Get("meeting"); m != "" && m != claims.Meeting {
			err = stage.Errorf(stage.ErrUnauthenticated, "the token is for another meeting")
		}
	}
	return claims, err
}

// protocolToken returns the token a browser offers as a WebSocket
// subprotocol (protocol.TokenSubprotocolPrefix), or "".
func protocolToken(r *http.Request) string {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if tok, ok := strings.CutPrefix(strings.TrimSpace(p), protocol.TokenSubprotocolPrefix); ok {
				return tok
			}
		}
	}
	return ""
}

// spawn runs fn on a goroutine that Wait waits for, unless Wait has begun.
func (s *Server) spawn(fn func()) bool {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.stopping {
		return false
	}
	s.conns.Add(1)
	go func() {
		defer s.conns.Done()
		fn()
	}()
	return true
}

// wsConn is one realtime connection.
type wsConn struct {
	s       *Server
	conn    *websocket.Conn
	c       *meeting.Client
	raw     *rawWriter
	writers sync.WaitGroup
	media   *media.Session // created by the first media request
	host    string         // the Host the client reached the server at

	authMu sync.Mutex
	claims Claims // of the token the connection lives on
	warned bool   // told that the token expires soon
}

// tokenWarning is how long before its token expires a connection is told
// (tokenExpiring), for its client to refresh it.
const tokenWarning = 2 * time.Minute

// refresh makes c the claims of the connection's token.
func (w *wsConn) refresh(c Claims) error {
	if c.Meeting != w.c.MeetingID() || c.Participant != w.c.ParticipantID {
		return stage.Errorf(stage.ErrUnauthenticated, "the token is another participant's")
	}
	w.authMu.Lock()
	defer w.authMu.Unlock()
	w.claims, w.warned = c, false
	return nil
}

// checkToken closes the connection once its token has expired or its
// signing key was retired, and warns it shortly before.
func (w *wsConn) checkToken(now time.Time) {
	w.authMu.Lock()
	defer w.authMu.Unlock()
	exp := time.Unix(w.claims.Expires, 0)
	switch {
	case !now.Before(exp):
		w.c.Close(protocol.CloseUnauthenticated, "token expired")
	case !w.s.tokens.usable(w.claims.Key, now):
		w.c.Close(protocol.CloseUnauthenticated, "token signed with a retired key")
	case !w.warned && exp.Sub(now) <= tokenWarning+w.s.cfg.PingInterval:
		w.warned = true
		if b, err := protocol.EncodeEvent(0, protocol.EventTokenExpiring, protocol.TokenExpiring{ExpiresAt: exp.UTC()}); err == nil {
			w.c.Send(meeting.NewMessage(b))
		}
	}
}

// serveConn runs one connection: the reader on this goroutine; a writer
// only while the client has something to send.
func (s *Server) serveConn(conn *websocket.Conn, c *meeting.Client, claims Claims, host string) {
	nc := plain(conn.NetConn()) // nil over TLS: no direct writes then
	if tc, ok := nc.(interface{ SetWriteBuffer(int) error }); ok && s.cfg.SendBuffer > 0 {
		tc.SetWriteBuffer(s.cfg.SendBuffer)
	}
	w := &wsConn{s: s, conn: conn, c: c, raw: newRawWriter(nc), claims: claims, host: host}
	s.track(w, true)
	c.SetWriter(func() {
		w.writers.Add(1)
		go w.write()
	}, w.direct)
	left := w.read()
	s.track(w, false)
	if w.media != nil {
		w.media.Close() // the connection's tracks stop with it
	}
	if left {
		s.reg.Leave(c) // said goodbye: gone now, no grace period
	} else {
		s.reg.Disconnect(c)
	}
	c.Close(websocket.CloseNormalClosure, "")
	w.writers.Wait()
	conn.Close()
}

// track adds or removes a connection from the set the pinger visits.
func (s *Server) track(w *wsConn, add bool) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if add {
		s.wsConns[w] = struct{}{}
	} else {
		delete(s.wsConns, w)
	}
}

// pinger visits every connection once per interval: it asks for a
// keepalive ping and checks the connection's token, one goroutine for all
// of them instead of timers for each. It also retires signing keys whose
// time has come.
func (s *Server) pinger(stop <-chan struct{}) {
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s.sweep(true)
	}
}

// sweep checks every connection's token (and, with ping, asks each for a
// keepalive ping), after retiring the keys whose time has come.
func (s *Server) sweep(ping bool) {
	now := s.cfg.Now()
	if gone, err := s.keyring.Prune(now); err != nil {
		s.log.Error("retiring signing keys", "err", err)
	} else if len(gone) > 0 {
		s.log.Info("signing keys retired", "keys", gone)
	}
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	for w := range s.wsConns {
		if ping {
			w.c.RequestPing()
		}
		w.checkToken(now)
	}
}

// read serves the client's requests until the connection ends, and
// reports whether the client said goodbye (a normal close) rather than
// dropped.
func (w *wsConn) read() (left bool) {
	conn, c := w.conn, w.c
	conn.SetReadLimit(protocol.MaxMessageSize)
	deadline := func() { conn.SetReadDeadline(time.Now().Add(3 * w.s.cfg.PingInterval)) }
	deadline()
	conn.SetPongHandler(func(string) error { deadline(); return nil })
	// Answer a client's ping at once. A control frame is one write on the
	// socket, which never lands inside one of the writer's frames.
	conn.SetPingHandler(func(data string) error {
		deadline()
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(w.s.cfg.WriteTimeout))
		w.noDeadline()
		if err == websocket.ErrCloseSent {
			return nil
		}
		return err
	})
	lim := newLimiter(w.s.cfg.RequestsPerSecond, w.s.cfg.Burst, w.s.cfg.Now())
	cands := newLimiter(50, 100, w.s.cfg.Now())
	changes := newLimiter(w.s.cfg.ChangesPerSecond, w.s.cfg.ChangesBurst, w.s.cfg.Now())
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			w.s.log.Debug("realtime read ended", "participant", c.ParticipantID, "err", err)
			if err == websocket.ErrReadLimit {
				c.Close(protocol.CloseMessageTooBig, "message over the limit of 65536 bytes")
			}
			return websocket.IsCloseError(err, websocket.CloseNormalClosure)
		}
		deadline()
		if typ != websocket.TextMessage {
			c.Close(protocol.ClosePolicy, "binary messages are not part of the protocol")
			return false
		}
		w.serve(data, lim, cands, changes)
	}
}

// serve answers one message. Every message counts against the rate limit,
// whether it parses or not. Calls run one at a time, in order, on the
// reader's goroutine: a candidate never overtakes the offer it belongs to,
// and a response follows the events its call caused.
func (w *wsConn) serve(data []byte, lim, cands, changes *limiter) {
	now := w.s.cfg.Now()
	req, params, err := protocol.DecodeRequest(data)
	m, known := methods[req.Method]
	switch {
	case err == nil && req.Method == protocol.MethodCandidate:
		// A browser trickles its candidates in a burst: they have a
		// bucket of their own.
		if !cands.allow(now) {
			err = stage.Errorf(stage.ErrRateLimited, "too many candidates; slow down")
		}
	case !lim.allow(now):
		err = stage.Errorf(stage.ErrRateLimited, "too many requests; slow down")
	case err == nil && m.selfChange && !changes.allow(now):
		err = stage.Errorf(stage.ErrRateLimited, "too many stage changes; slow down")
	case err == nil && !known:
		err = stage.Errorf(stage.ErrInternal, "method "+req.Method+" has no handler")
	}
	var res any
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		res, err = m.run(ctx, w, params)
		cancel()
	}
	if b, eerr := protocol.EncodeResponse(req.ID, res, err); eerr == nil {
		w.c.Send(meeting.NewMessage(b))
	}
}

// mediaSession returns the connection's media session, made by its first
// media request.
func (w *wsConn) mediaSession() (*media.Session, error) {
	if w.s.cfg.Media == nil {
		return nil, stage.Errorf(stage.ErrBadRequest, "this server has no media plane")
	}
	if w.media == nil {
		c := w.c
		w.media = w.s.cfg.Media.NewSession(c.MeetingID(), c.ParticipantID, c.UserID, func(event string, data any) {
			if b, err := protocol.EncodeEvent(0, event, data); err == nil {
				c.Send(meeting.NewMessage(b))
			}
		})
	}
	return w.media, nil
}

// write drains the client's queue, then returns. Messages go out as
// ready-made frames written straight to the socket, many in one writev; a
// write error closes the connection, which ends the reader.
//
// Writing beside gorilla is safe: each frame is one Write (or one writev)
// on the net.Conn, which serializes whole writes, so gorilla's own control
// frames (pings, closes) can never land inside one of ours.
func (w *wsConn) write() {
	defer w.writers.Done()
	conn := w.conn
	nc := conn.NetConn()
	var batch []*meeting.Message
	var bufs net.Buffers
	for {
		b := w.c.Take(batch[:0])
		batch = b.Messages
		if b.Idle {
			return
		}
		if len(b.Messages) > 0 || b.Partial != nil {
			bufs = bufs[:0]
			if b.Partial != nil {
				bufs = append(bufs, b.Partial)
			}
			for i, m := range b.Messages {
				bufs = append(bufs, m.Prepared(textFrame).([]byte))
				b.Messages[i] = nil
			}
			nc.SetWriteDeadline(time.Now().Add(w.s.cfg.WriteTimeout))
			if _, err := bufs.WriteTo(nc); err != nil {
				w.s.log.Debug("realtime write failed", "participant", w.c.ParticipantID, "err", err)
				conn.Close()
				return
			}
			w.noDeadline()
		}
		if b.Ping {
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(w.s.cfg.WriteTimeout)); err != nil {
				conn.Close()
				return
			}
			w.noDeadline()
		}
		if b.Closed {
			if b.Code != websocket.CloseNormalClosure || b.Reason != "" {
				conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(b.Code, b.Reason), time.Now().Add(w.s.cfg.WriteTimeout))
			}
			// Give the peer a moment to answer the close, then cut, even
			// if it keeps talking.
			time.AfterFunc(time.Second, func() { conn.Close() })
			return
		}
	}
}

// noDeadline clears the write deadline a blocking write set, once it is
// done: the direct path's raw writes would otherwise fail with a timeout
// once it passed, long after the write it was meant for.
func (w *wsConn) noDeadline() { w.conn.NetConn().SetWriteDeadline(time.Time{}) }

// direct writes m's frame without blocking, from the sender's goroutine (a
// meeting's fan-out). It returns the part the socket had no room for.
func (w *wsConn) direct(m *meeting.Message) ([]byte, bool) {
	frame := m.Prepared(textFrame).([]byte)
	n, err := w.raw.write(frame)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A deadline a control frame left behind: let the writer,
		// which sets its own, take it.
		return nil, false
	}
	if err != nil {
		w.s.log.Debug("realtime write failed", "participant", w.c.ParticipantID, "err", err)
		w.conn.Close() // the reader ends and cleans up
		return nil, false
	}
	if n == 0 {
		return nil, false
	}
	if n < len(frame) {
		return frame[n:], true
	}
	return nil, true
}

// textFrame returns p as one unmasked, final WebSocket text frame (RFC 6455
// section 5.2), the form a server sends. It is computed once per message and
// shared by every recipient.
func textFrame(p []byte) any {
	n := len(p)
	f := make([]byte, 0, n+10)
	f = append(f, 0x81) // FIN, opcode 1 (text)
	switch {
	case n < 126:
		f = append(f, byte(n))
	case n <= 0xFFFF:
		f = append(f, 126, byte(n>>8), byte(n))
	default:
		f = append(f, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(f, p...)
}

// limiter is a token bucket.
type limiter struct {
	rate, burst, tokens float64
	last                time.Time
}

func newLimiter(rate float64, burst int, now time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

func (l *limiter) allow(now time.Time) bool {
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}
