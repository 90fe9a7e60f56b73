// Package server is cocmd's HTTP surface: the REST API v1 (API key), the
// realtime WebSocket endpoint (participant tokens) and the OpenAPI document.
// It holds no business rules: stage methods go to package meeting.
package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/media"
	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/relay"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/webhook"
)

// Config holds the HTTP surface's settings.
type Config struct {
	// TokenTTL is the default lifetime of participant tokens.
	TokenTTL time.Duration
	// RequestsPerSecond and Burst bound each connection's realtime requests.
	RequestsPerSecond float64
	Burst             int
	// ChangesPerSecond and ChangesBurst further bound a connection's own
	// status changes (requestAccess, cancelRequestAccess, join, leave):
	// each is told to everyone in the meeting, so a viewer toggling its
	// request must not be able to flood ten thousand others.
	ChangesPerSecond float64
	ChangesBurst     int
	// WriteTimeout bounds one blocking WebSocket write; a client that
	// takes longer to accept it is dropped. Default 10s.
	WriteTimeout time.Duration
	// PingInterval is how often the server pings each WebSocket; a client
	// silent for three intervals is dropped.
	PingInterval time.Duration
	// SendBuffer, if positive, sets each WebSocket's kernel send buffer
	// (SO_SNDBUF), bounding what the kernel holds for a slow client before
	// the meeting's own queue limit notices it; 0 keeps the kernel's
	// autotuning.
	SendBuffer int
	// Ready, if set, says whether the node should take connections now
	// (in a cluster: whether it reaches NATS); GET /readyz answers 503 with
	// its error, and new realtime connections are refused, while it returns
	// one.
	Ready func() error
	// CutOff, if set, says whether the node has lost touch with the state
	// of record (in a cluster: it could not reach NATS for a lease TTL).
	// Its view of the meetings may be stale then: the REST API answers 503
	// UNAVAILABLE rather than serve it (GET /metrics still answers).
	CutOff func() error
	// MaxConnections, if positive, is how many realtime connections the
	// node takes: past it, /readyz answers 503 and new connections are
	// refused (UNAVAILABLE), so that a balancer sends them to another node.
	MaxConnections int
	// Metrics, if set, writes more metrics (the cluster's) after the
	// server's own.
	Metrics func(w io.Writer) error
	// Forward, in a cluster, sends a REST request about a meeting another
	// node owns to that node, and writes its answer to w.
	Forward func(ctx context.Context, node string, r *http.Request, body []byte, w http.ResponseWriter) error
	// Media is the media plane; nil serves no media (media requests fail).
	Media *media.SFU
	// Webhooks delivers the meetings' logs to the registered endpoints
	// (its figures join the metrics, and it sends test deliveries); nil:
	// endpoints can be registered but nothing is delivered.
	Webhooks *webhook.Deliverer
	// WebhooksAllowPrivate lets endpoints be private, loopback or
	// link-local addresses: for development only (see webhook.NewClient).
	WebhooksAllowPrivate bool
	// ICE is the TURN servers connections are told about.
	ICE ICEServers
	// TURN is the embedded TURN server, if it runs: its figures join the
	// metrics.
	TURN *relay.Server
	// Web holds the browser SDK (sdk/) and the demo app (app/); nil
	// serves neither.
	Web fs.FS
	// Dev turns on development mode: POST /v1/demo/webinars makes a demo
	// webinar without an API key. Never on a public server.
	Dev bool
	// PublicURL is where clients reach the server, for links; empty means
	// the request's host.
	PublicURL string
	// Limits bound the connections of one client address.
	Limits ConnLimits
	// HSTS, set when the server is reached over HTTPS, tells browsers to
	// use HTTPS only, for a year.
	HSTS bool
	// OpenAPI is served at /v1/openapi.yaml.
	OpenAPI []byte
	// Logger receives the server's logs.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server serves the REST API and the realtime endpoint.
type Server struct {
	cfg      Config
	store    store.Store
	reg      *meeting.Registry
	tokens   *Tokens
	apiKey   []byte // SHA-256 of the API key
	log      *slog.Logger
	upgrader websocket.Upgrader
	conns    sync.WaitGroup

	keyring   *Keyring
	limits    ConnLimits
	unauth    counter // TCP connections without an authenticated WebSocket, by peer
	authed    counter // realtime connections, by client address
	demoMu    sync.Mutex
	demoLimit *limiter // demo webinars, for everyone together

	liveMu     sync.Mutex
	wsConns    map[*wsConn]struct{}
	stopping   bool // Wait has begun: no new connection goroutines
	stopPinger chan struct{}
	stopOnce   sync.Once
}

// New returns a server over st and the live meetings of reg.
func New(cfg Config, st store.Store, reg *meeting.Registry, keys Keys) *Server {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 8 * time.Hour
	}
	if cfg.RequestsPerSecond <= 0 {
		cfg.RequestsPerSecond, cfg.Burst = 20, 40
	}
	if cfg.ChangesPerSecond <= 0 {
		cfg.ChangesPerSecond, cfg.ChangesBurst = 2, 10
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if keys.Keyring == nil {
		keys.Keyring, _ = OpenKeyring(context.Background(), "", nil) // in memory: cannot fail
	}
	s := &Server{cfg: cfg, store: st, reg: reg, tokens: NewTokens(keys.Keyring, cfg.Now),
		apiKey: keys.APIKeyHash, log: cfg.Logger, wsConns: map[*wsConn]struct{}{}, stopPinger: make(chan struct{}),
		demoLimit: newLimiter(demoRate, demoBurst, cfg.Now()), keyring: keys.Keyring, limits: cfg.Limits.withDefaults()}
	s.upgrader = websocket.Upgrader{
		Subprotocols: []string{protocol.Subprotocol},
		// Participants authenticate with a token, not a cookie, so a page
		// of any origin may connect: that is what an embeddable SDK needs.
		CheckOrigin: func(*http.Request) bool { return true },
		// Requests are small: a 1 KiB read buffer of its own is cheaper
		// than keeping net/http's 4 KiB one. Writes go out as prepared
		// frames and need no write buffer.
		ReadBufferSize:  1024,
		WriteBufferPool: &sync.Pool{},
	}
	s.spawn(func() { s.pinger(s.stopPinger) })
	return s
}

// ready returns why the node should not take connections now, if it
// should not: Config.Ready's verdict.
func (s *Server) ready() error {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			return err
		}
	}
	if max := s.cfg.MaxConnections; max > 0 {
		s.liveMu.Lock()
		n := len(s.wsConns)
		s.liveMu.Unlock()
		if n >= max {
			return fmt.Errorf("full: %d realtime connections", n)
		}
	}
	return nil
}

// Wait stops the keepalive pinger and blocks until every realtime
// connection has ended. Call it after the registry is closed.
func (s *Server) Wait() {
	s.liveMu.Lock()
	s.stopping = true
	s.liveMu.Unlock()
	s.stopOnce.Do(func() { close(s.stopPinger) })
	s.conns.Wait()
}

// Handler returns the HTTP handler of the whole API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern string, h func(http.ResponseWriter, *http.Request) error) {
		mux.Handle(pattern, s.authenticated(h))
	}
	api("GET /v1/presets", s.listPresets)
	api("POST /v1/presets", s.createPreset)
	api("GET /v1/presets/{name}", s.getPreset)
	api("PUT /v1/presets/{name}", s.updatePreset)
	api("DELETE /v1/presets/{name}", s.deletePreset)
	api("GET /v1/meetings", s.listMeetings)
	api("POST /v1/meetings", s.createMeeting)
	api("GET /v1/meetings/{id}", s.getMeeting)
	api("PATCH /v1/meetings/{id}", s.updateMeeting)
	api("POST /v1/meetings/{id}/end", s.endMeeting)
	api("GET /v1/meetings/{id}/participants", s.listParticipants)
	api("GET /v1/meetings/{id}/audit", s.audit)
	api("POST /v1/meetings/{id}/participants", s.addParticipant)
	api("GET /v1/meetings/{id}/participants/{pid}", s.getParticipant)
	api("PATCH /v1/meetings/{id}/participants/{pid}", s.updateParticipant)
	api("DELETE /v1/meetings/{id}/participants/{pid}", s.removeParticipant)
	api("POST /v1/meetings/{id}/participants/{pid}/token", s.newToken)
	api("GET /v1/meetings/{id}/live", s.live)
	api("POST /v1/meetings/{id}/stage/{action}", s.moderate)
	api("GET /v1/webhooks", s.listEndpoints)
	api("POST /v1/webhooks", s.createEndpoint)
	api("GET /v1/webhooks/{id}", s.getEndpoint)
	api("PATCH /v1/webhooks/{id}", s.updateEndpoint)
	api("DELETE /v1/webhooks/{id}", s.deleteEndpoint)
	api("GET /v1/webhooks/{id}/attempts", s.listAttempts)
	api("POST /v1/webhooks/{id}/test", s.testEndpoint)
	api("POST /v1/webhooks/{id}/replay", s.replayEndpoint)
	api("GET /v1/signing-keys", s.listSigningKeys)
	api("POST /v1/signing-keys/rotate", s.rotateSigningKey)
	api("GET /metrics", s.metrics)
	s.routeWeb(mux)
	mux.HandleFunc("GET /v1/realtime", s.realtime)
	mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(s.cfg.OpenAPI)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, stage.Errorf(stage.ErrNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path))
	})
	return s.accessLog(secureHeaders(mux, s.cfg.HSTS))
}

// contentSecurityPolicy lets pages run the server's own scripts and styles
// only — no inline script, no other origin — and be framed by nobody.
// Media comes from WebRTC (blob: and mediastream: sources); the favicon
// is a data: URL.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// secureHeaders sets, on every response, what keeps a page from being
// framed, sniffed into another type, or leaking its URL (and a token in
// it) to another site.
func secureHeaders(h http.Handler, hsts bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		if hsts {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
		}
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

func (s *Server) authenticated(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !s.validKey(key) {
			writeError(w, stage.Errorf(stage.ErrUnauthenticated, "an API key is required: Authorization: Bearer <key>"))
			return
		}
		if s.cfg.CutOff != nil && r.URL.Path != "/metrics" {
			if err := s.cfg.CutOff(); err != nil {
				writeError(w, stage.Errorf(stage.ErrUnavailable, "this node is cut off from the cluster ("+err.Error()+"): try another"))
				return
			}
		}
		var body []byte
		if s.cfg.Forward != nil && r.Body != nil && r.Method != http.MethodGet {
			// Kept, in case the request goes to another node.
			b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
			if err != nil {
				writeError(w, stage.Errorf(stage.ErrBadRequest, "reading the request body: "+err.Error()))
				return
			}
			body = b
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		err := h(w, r)
		if node, ok := ownerNode(err); ok && s.cfg.Forward != nil && r.Header.Get(forwardedHeader) == "" {
			// The meeting runs on another node: it answers.
			ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
			err = s.cfg.Forward(ctx, node, r, body, w)
			cancel()
			if err == nil {
				return
			}
		}
		if err != nil {
			if stage.CodeOf(err) == stage.CodeInternal {
				s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
				err = stage.Errorf(stage.ErrInternal, "internal error")
			}
			writeError(w, err)
		}
	})
}

// forwardTimeout bounds a REST call forwarded to the meeting's owner: a
// dead owner's calls fail (503) within it, and the caller tries again.
const forwardTimeout = 5 * time.Second

// forwardedHeader marks a request another node of the cluster forwarded.
const forwardedHeader = "X-Cocmd-Forwarded"

// ownerNode returns the node that owns the meeting, if err says another
// node does.
func ownerNode(err error) (string, bool) {
	var e interface{ OwnerNode() string }
	if errors.As(err, &e) {
		return e.OwnerNode(), true
	}
	return "", false
}

func (s *Server) validKey(k string) bool {
	return len(s.apiKey) > 0 && subtle.ConstantTimeCompare(hashKey(k), s.apiKey) == 1
}

// httpStatus maps error codes to HTTP statuses, in one place.
func httpStatus(err error) int {
	if errors.Is(err, store.ErrConflict) {
		return http.StatusConflict
	}
	switch stage.CodeOf(err) {
	case stage.CodeBadRequest:
		return http.StatusBadRequest
	case stage.CodeUnauthenticated:
		return http.StatusUnauthorized
	case stage.CodePermissionDenied:
		return http.StatusForbidden
	case stage.CodeNotFound:
		return http.StatusNotFound
	case stage.CodeRateLimited:
		return http.StatusTooManyRequests
	case stage.CodeUnavailable:
		return http.StatusServiceUnavailable
	case stage.CodeStageDisabled, stage.CodeInvalidStageStatus, stage.CodeNoRequestToCancel, stage.CodeStageFull:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// errorBody is the one error shape of the REST API.
type errorBody struct {
	Error *protocol.Error `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, httpStatus(err), errorBody{protocol.ErrorFrom(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

// maxBody bounds REST request bodies.
const maxBody = 1 << 20

// decode reads one JSON object into v, refusing unknown fields (they would
// be silently lost) and trailing data.
func decode(r *http.Request, v any) error {
	body := http.MaxBytesReader(nil, r.Body, maxBody)
	d := json.NewDecoder(body)
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return stage.Errorf(stage.ErrBadRequest, "request body is over 1 MiB")
		}
		if errors.Is(err, io.EOF) {
			return stage.Errorf(stage.ErrBadRequest, "request body is empty")
		}
		return stage.Errorf(stage.ErrBadRequest, "malformed JSON: "+err.Error())
	}
	if d.More() {
		return stage.Errorf(stage.ErrBadRequest, "request body has data after the JSON object")
	}
	return nil
}

// metrics serves the media plane's figures in the Prometheus text format.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if s.cfg.Media != nil {
		if err := s.cfg.Media.WriteMetrics(w); err != nil {
			return err
		}
	}
	if s.cfg.Webhooks != nil {
		if err := writeWebhookMetrics(w, s.cfg.Webhooks.Stats(), s.cfg.Now()); err != nil {
			return err
		}
	}
	if s.cfg.TURN != nil {
		if err := s.cfg.TURN.WriteMetrics(w); err != nil {
			return err
		}
	}
	if s.cfg.Metrics != nil {
		return s.cfg.Metrics(w)
	}
	return nil
}
