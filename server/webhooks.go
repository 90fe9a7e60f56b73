package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/webhook"
)

// WebhookEvent is the body of a webhook delivery: an entry of a meeting's
// log (docs/webhooks.md).
type WebhookEvent struct {
	AuditEntry
	MeetingID string `json:"meeting_id"`
}

// WebhookBody is the JSON body that delivers log entry e.
func WebhookBody(e store.Event) []byte {
	b, _ := json.Marshal(WebhookEvent{AuditEntry: auditJSON(e), MeetingID: e.MeetingID})
	return b
}

// WebhookID is log entry e's webhook-id: the id the audit log shows.
func WebhookID(e store.Event) string { return EventID(e.MeetingID, e.Seq) }

// Endpoint is a webhook endpoint as the REST API shows it. Secret is
// shown when the endpoint is made and when its secret is rotated, never
// again.
type Endpoint struct {
	ID         string               `json:"id"`
	URL        string               `json:"url"`
	EventTypes []string             `json:"event_types"`
	Status     store.EndpointStatus `json:"status"`
	StatusAt   *time.Time           `json:"status_at,omitempty"`
	Note       string               `json:"note,omitempty"`
	CreatedAt  time.Time            `json:"created_at"`
	Secret     string               `json:"secret,omitempty"`
	Pending    *int                 `json:"pending,omitempty"`
}

func endpointJSON(e store.Endpoint) Endpoint {
	out := Endpoint{ID: e.ID, URL: e.URL, EventTypes: e.EventTypes, Status: e.Status, Note: e.Note, CreatedAt: e.CreatedAt}
	if out.EventTypes == nil {
		out.EventTypes = []string{}
	}
	if !e.StatusAt.IsZero() {
		out.StatusAt = &e.StatusAt
	}
	return out
}

// Attempt is a delivery attempt as the REST API shows it.
type Attempt struct {
	EventID   string    `json:"event_id"`
	MeetingID string    `json:"meeting_id"`
	Seq       uint64    `json:"seq"`
	At        time.Time `json:"at"`
	Status    int       `json:"status"`
	LatencyMS float64   `json:"latency_ms"`
	Error     string    `json:"error,omitempty"`
}

func attemptJSON(a store.Attempt) Attempt {
	return Attempt{EventID: a.EventID, MeetingID: a.MeetingID, Seq: a.Seq, At: a.At.UTC(), Status: a.Status,
		LatencyMS: float64(a.Latency.Microseconds()) / 1000, Error: a.Error}
}

// maxURL bounds an endpoint's URL.
const maxURL = 2048

// rotationOverlap is how long a rotated-out secret still signs, beside
// the new one, so the receiver can switch without missing a delivery.
const rotationOverlap = 24 * time.Hour

// checkEndpoint validates what a registration or an update says.
func (s *Server) checkEndpoint(rawURL string, types []string) error {
	if len(rawURL) > maxURL {
		return badRequest(fmt.Sprintf("url is longer than %d bytes", maxURL))
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" {
		return badRequest("url must be an absolute http or https URL, as https://example.com/hooks/cocmd")
	}
	if u.User != nil {
		return badRequest("url must not carry credentials; the deliveries are signed instead")
	}
	if u.Fragment != "" {
		return badRequest("url must not have a fragment")
	}
	if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !s.cfg.WebhooksAllowPrivate && !webhook.Public(a) {
		return badRequest("url is a private, loopback or link-local address (" + a.String() + "); webhooks go to public addresses")
	}
	if strings.EqualFold(u.Hostname(), "localhost") && !s.cfg.WebhooksAllowPrivate {
		return badRequest("url is localhost; webhooks go to public addresses")
	}
	for _, t := range types {
		if !slices.Contains(meeting.EventTypes, t) {
			return badRequest("unknown event type " + strconv.Quote(t) + "; known: " + strings.Join(meeting.EventTypes, ", "))
		}
	}
	return nil
}

func (s *Server) createEndpoint(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		URL        string   `json:"url"`
		EventTypes []string `json:"event_types"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := s.checkEndpoint(in.URL, in.EventTypes); err != nil {
		return err
	}
	secret := webhook.NewSecret()
	types := slices.Clone(in.EventTypes)
	sort.Strings(types)
	ep, err := s.store.CreateEndpoint(r.Context(), store.Endpoint{ID: newID("whk_"), URL: in.URL, EventTypes: slices.Compact(types),
		Secrets: []string{secret}, CreatedAt: s.cfg.Now().UTC().Truncate(time.Millisecond), Status: store.EndpointActive})
	if err != nil {
		return err
	}
	out := endpointJSON(ep)
	out.Secret = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listEndpoints(w http.ResponseWriter, r *http.Request) error {
	eps, err := s.store.Endpoints(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listOf(eps, "", s.endpointWithStats))
	return nil
}

func (s *Server) endpointWithStats(e store.Endpoint) Endpoint {
	out := endpointJSON(e)
	if s.cfg.Webhooks != nil {
		if st, ok := s.cfg.Webhooks.Stats()[e.ID]; ok {
			out.Pending = &st.Pending
		}
	}
	return out
}

func (s *Server) getEndpoint(w http.ResponseWriter, r *http.Request) error {
	ep, err := s.store.Endpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.endpointWithStats(ep))
	return nil
}

func (s *Server) updateEndpoint(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		URL          *string   `json:"url"`
		EventTypes   *[]string `json:"event_types"`
		RotateSecret bool      `json:"rotate_secret"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	ep, err := s.store.Endpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if in.URL != nil {
		ep.URL = *in.URL
	}
	if in.EventTypes != nil {
		types := slices.Clone(*in.EventTypes)
		sort.Strings(types)
		ep.EventTypes = slices.Compact(types)
	}
	if err := s.checkEndpoint(ep.URL, ep.EventTypes); err != nil {
		return err
	}
	var secret string
	if in.RotateSecret {
		secret = webhook.NewSecret()
		ep.Secrets = []string{secret, ep.Secrets[0]}
		ep.SecretsUntil = s.cfg.Now().UTC().Add(rotationOverlap).Truncate(time.Millisecond)
	}
	if err := s.store.UpdateEndpoint(r.Context(), ep); err != nil {
		return err
	}
	out := s.endpointWithStats(ep)
	out.Secret = secret
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteEndpoint(w http.ResponseWriter, r *http.Request) error {
	if err := s.store.DeleteEndpoint(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listAttempts(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.store.Endpoint(r.Context(), id); err != nil {
		return err
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	as, next, err := s.store.Attempts(r.Context(), id, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listOf(as, next, attemptJSON))
	return nil
}

// testEndpoint sends the endpoint a webhook.test event now, signed like
// any other, and answers how it went; it is logged with the attempts.
func (s *Server) testEndpoint(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Webhooks == nil {
		return stage.Errorf(stage.ErrUnavailable, "webhooks are not delivered by this server")
	}
	ep, err := s.store.Endpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	now := s.cfg.Now().UTC()
	ev := store.Event{MeetingID: "mtg_test", Seq: uint64(now.UnixMilli()) * 1000, Type: "webhook.test", At: now,
		Actor: store.Actor{Kind: store.ActorAPI}, Data: []byte(`{}`)}
	a := s.cfg.Webhooks.Send(r.Context(), ep, ev)
	if err := s.store.AddAttempt(r.Context(), a); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, attemptJSON(a))
	return nil
}

// replayEndpoint starts a stopped endpoint again (failing, or gone): what
// it missed meanwhile is delivered, in order, from where it stopped.
func (s *Server) replayEndpoint(w http.ResponseWriter, r *http.Request) error {
	ep, err := s.store.Endpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	ep.Status, ep.StatusAt, ep.Note = store.EndpointActive, s.cfg.Now().UTC().Truncate(time.Millisecond), ""
	if err := s.store.UpdateEndpoint(r.Context(), ep); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.endpointWithStats(ep))
	return nil
}

// writeWebhookMetrics writes the delivery figures of each active endpoint.
func writeWebhookMetrics(w io.Writer, stats map[string]webhook.Stats, now time.Time) error {
	ids := make([]string, 0, len(stats))
	for id := range stats {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	metrics := []struct {
		name, typ, help string
		value           func(webhook.Stats) float64
	}{
		{"cocmd_webhook_deliveries_total", "counter", "Webhook deliveries the receiver took (2xx).", func(s webhook.Stats) float64 { return float64(s.Delivered) }},
		{"cocmd_webhook_failures_total", "counter", "Webhook deliveries that failed (an error, a timeout, or not a 2xx).", func(s webhook.Stats) float64 { return float64(s.Failed) }},
		{"cocmd_webhook_pending", "gauge", "Log entries waiting for delivery, as of the endpoint's last look (at most a batch of 200).", func(s webhook.Stats) float64 { return float64(s.Pending) }},
		{"cocmd_webhook_oldest_pending_seconds", "gauge", "Age of the oldest entry waiting for delivery; 0 when none waits.", func(s webhook.Stats) float64 {
			if s.OldestPending.IsZero() {
				return 0
			}
			return now.Sub(s.OldestPending).Seconds()
		}},
	}
	for _, m := range metrics {
		if _, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := fmt.Fprintf(w, "%s{endpoint=%q} %g\n", m.name, id, m.value(stats[id])); err != nil {
				return err
			}
		}
	}
	return nil
}
