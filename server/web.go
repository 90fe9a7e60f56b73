package server

import (
	"io/fs"
	"net/http"
	"time"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// routeWeb serves the browser SDK at /sdk/, the demo app at / and /join,
// and, in development mode, the demo webinar maker.
func (s *Server) routeWeb(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/token", s.tokenInfo)
	if s.cfg.Web == nil {
		return
	}
	sdk, _ := fs.Sub(s.cfg.Web, "sdk")
	app, _ := fs.Sub(s.cfg.Web, "app")
	mux.Handle("GET /sdk/", noCache(http.StripPrefix("/sdk/", http.FileServerFS(sdk))))
	mux.Handle("GET /app/", noCache(http.StripPrefix("/app/", http.FileServerFS(app))))
	index := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, app, "index.html")
	}
	mux.HandleFunc("GET /{$}", index)
	mux.HandleFunc("GET /join", index)
	mux.HandleFunc("GET /v1/demo", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"enabled": s.cfg.Dev})
	})
	if s.cfg.Dev {
		mux.HandleFunc("POST /v1/demo/webinars", s.demoWebinar)
	}
}

// demoRate and demoBurst bound how many demo webinars the whole server
// makes: 10 a minute, 5 at once. The endpoint needs no key, so it is
// limited for everyone together.
const (
	demoRate  = 10.0 / 60
	demoBurst = 5
)

// noCache makes browsers revalidate: the files change with the binary.
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// TokenInfo is what GET /v1/token says of a valid participant token.
type TokenInfo struct {
	MeetingID     string    `json:"meeting_id"`
	ParticipantID string    `json:"participant_id"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// tokenInfo checks a participant token (Bearer) without
// connecting, so that a page can say why it cannot join: a browser's
// WebSocket hides the HTTP status of a refused upgrade.
func (s *Server) tokenInfo(w http.ResponseWriter, r *http.Request) {
	c, err := s.verify(r)
	if err == nil {
		_, err = s.store.Participant(r.Context(), c.Meeting, c.Participant)
		if stage.CodeOf(err) == stage.CodeNotFound {
			err = stage.Errorf(stage.ErrUnauthenticated, "token no longer valid: the participant was removed")
		}
	}
	if err == nil {
		var m store.Meeting
		if m, err = s.store.Meeting(r.Context(), c.Meeting); err == nil && m.Ended() {
			err = stage.Errorf(stage.ErrUnauthenticated, "token no longer valid: the meeting has ended")
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, TokenInfo{MeetingID: c.Meeting, ParticipantID: c.Participant, ExpiresAt: time.Unix(c.Expires, 0).UTC()})
}

// DemoLink is one participant of a demo webinar and its join link.
type DemoLink struct {
	Name   string `json:"name"`
	UserID string `json:"user_id"`
	Preset string `json:"preset"`
	Link   string `json:"link"`
}

// DemoWebinar is a demo webinar made in development mode.
type DemoWebinar struct {
	MeetingID string     `json:"meeting_id"`
	Host      DemoLink   `json:"host"`
	Viewers   []DemoLink `json:"viewers"`
}

var demoNames = []string{"Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret"}

// demoWebinar creates a webinar with a host and viewers (development mode
// only: it needs no API key).
func (s *Server) demoWebinar(w http.ResponseWriter, r *http.Request) {
	s.demoMu.Lock()
	ok := s.demoLimit.allow(s.cfg.Now())
	s.demoMu.Unlock()
	if !ok {
		writeError(w, stage.Errorf(stage.ErrRateLimited, "too many demo webinars; try again in a minute"))
		return
	}
	ctx := r.Context()
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	m := store.Meeting{ID: newID("mtg_"), Title: "Demo webinar", Type: stage.Webinar, CreatedAt: now, MaxOnStage: 6}
	if err := s.store.CreateMeeting(ctx, m, []store.Event{meeting.MeetingStarted(m)}); err != nil {
		writeError(w, err)
		return
	}
	base := s.cfg.PublicURL
	if base == "" {
		base = "http://" + r.Host
	}
	add := func(name, uid, preset string) (DemoLink, error) {
		p := store.Participant{ID: newID("prt_"), MeetingID: m.ID, UserID: uid, Name: name, Preset: preset, CreatedAt: now, Status: stage.OffStage}
		if err := s.reg.AddParticipant(ctx, p); err != nil {
			return DemoLink{}, err
		}
		tok, _ := s.tokens.Sign(m.ID, p.ID, s.cfg.TokenTTL)
		return DemoLink{Name: name, UserID: uid, Preset: preset, Link: base + "/join#token=" + tok}, nil
	}
	out := DemoWebinar{MeetingID: m.ID}
	var err error
	if out.Host, err = add("Host", "host", "webinar_host"); err != nil {
		writeError(w, err)
		return
	}
	for i, name := range demoNames {
		v, err := add(name, "viewer-"+string(rune('a'+i)), "webinar_viewer")
		if err != nil {
			writeError(w, err)
			return
		}
		out.Viewers = append(out.Viewers, v)
	}
	s.log.Info("demo webinar created", "meeting", m.ID)
	writeJSON(w, http.StatusCreated, out)
}
