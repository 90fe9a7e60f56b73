package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// writeWait bounds one WebSocket write.
const writeWait = 10 * time.Second

// realtime is the WebSocket endpoint. The participant token comes in the
// Authorization header (Bearer) or, for browsers, the token query parameter;
// an optional meeting parameter must match the token's meeting.
func (s *Server) realtime(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		tok = r.URL.Query().Get("token")
	}
	claims, err := s.tokens.Verify(tok)
	if err == nil {
		if m := r.URL.Query().Get("meeting"); m != "" && m != claims.Meeting {
			err = stage.Errorf(stage.ErrUnauthenticated, "the token is for another meeting")
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, stage.Errorf(stage.ErrBadRequest, "this endpoint speaks WebSocket only"))
		return
	}
	c, err := s.reg.Connect(r.Context(), claims.Meeting, claims.Participant)
	if err != nil {
		if stage.CodeOf(err) == stage.CodeNotFound {
			// A removed participant or an ended meeting: the token no
			// longer admits anyone.
			err = stage.Errorf(stage.ErrUnauthenticated, "token no longer valid: "+err.Error())
		}
		writeError(w, err)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.reg.Disconnect(claims.Meeting, c)
		return // the upgrader has answered
	}
	s.conns.Add(1)
	defer s.conns.Done()
	log := s.log.With("meeting", claims.Meeting, "participant", claims.Participant)
	s.serveConn(conn, claims.Meeting, c)
	log.Debug("realtime connection ended")
}

// serveConn runs one connection: the writer on its own goroutine, the reader
// on this one, until either ends.
func (s *Server) serveConn(conn *websocket.Conn, meetingID string, c *meeting.Client) {
	readerDone := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.write(conn, c, readerDone)
	}()
	s.read(conn, meetingID, c)
	close(readerDone)
	s.reg.Disconnect(meetingID, c)
	<-writerDone
	conn.Close()
}

func (s *Server) read(conn *websocket.Conn, meetingID string, c *meeting.Client) {
	conn.SetReadLimit(protocol.MaxMessageSize)
	deadline := func() { conn.SetReadDeadline(time.Now().Add(3 * s.cfg.PingInterval)) }
	deadline()
	conn.SetPongHandler(func(string) error { deadline(); return nil })
	lim := newLimiter(s.cfg.RequestsPerSecond, s.cfg.Burst, s.cfg.Now())
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			if err == websocket.ErrReadLimit {
				c.Close(protocol.CloseMessageTooBig, "message over the limit of 65536 bytes")
			}
			return
		}
		deadline()
		if typ != websocket.TextMessage {
			c.Close(protocol.ClosePolicy, "binary messages are not part of the protocol")
			return
		}
		req, params, err := protocol.DecodeRequest(data)
		if err == nil && !lim.allow(s.cfg.Now()) {
			err = stage.Errorf(stage.ErrRateLimited, "too many requests; slow down")
		}
		if err != nil {
			if b, eerr := protocol.EncodeResponse(req.ID, nil, err); eerr == nil {
				c.Send(b)
			}
			continue
		}
		s.reg.Call(meetingID, c, req, params)
	}
}

func (s *Server) write(conn *websocket.Conn, c *meeting.Client, readerDone <-chan struct{}) {
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	var batch [][]byte
	for {
		select {
		case <-c.Wake():
			var closed bool
			var code int
			var reason string
			batch, closed, code, reason = c.Next(batch[:0])
			for i, m := range batch {
				conn.SetWriteDeadline(time.Now().Add(writeWait))
				err := conn.WriteMessage(websocket.TextMessage, m)
				batch[i] = nil
				if err != nil {
					conn.Close() // unblocks the reader
					return
				}
			}
			if closed {
				conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(writeWait))
				// Give the peer a moment to answer the close, then cut.
				conn.SetReadDeadline(time.Now().Add(time.Second))
				return
			}
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				conn.Close()
				return
			}
		case <-readerDone:
			return
		}
	}
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
