package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/cocmd/cocmd/store"
)

// Delivery, at least once and in order: the meetings' logs are the outbox
// (an entry is committed with its change, so there is nothing else to
// write), and each endpoint has a cursor per meeting, moved past an entry
// once the receiver took it (2xx). A failing entry holds back the later
// entries of its meeting to that endpoint — none is skipped — while the
// endpoint's other meetings go on, and every endpoint has a goroutine of
// its own, so a slow or dead receiver delays nobody else, and never the
// meeting. Retries back off exponentially with jitter, from RetryMin to
// RetryMax; an entry that has failed for GiveUpAfter stops the endpoint
// (failing), as does a 410 Gone (gone), until the operator replays it.

// Store is what delivery reads and writes.
type Store interface {
	Endpoints(ctx context.Context) ([]store.Endpoint, error)
	UpdateEndpoint(ctx context.Context, e store.Endpoint) error
	PendingEvents(ctx context.Context, id string, after int64, limit int) ([]store.Event, error)
	Record(ctx context.Context, id string, attempts []store.Attempt, delivered map[string]uint64) error
}

// Config configures a Deliverer.
type Config struct {
	Store Store
	// Body is the JSON body of an entry's delivery; ID its webhook-id.
	Body func(store.Event) []byte
	ID   func(store.Event) string
	// Client makes the requests; nil means NewClient(Timeout, false).
	Client  *http.Client
	Timeout time.Duration // a delivery's; 0 means 10 s
	// Poll is how often each endpoint looks for new entries; 0 means
	// 200 ms.
	Poll time.Duration
	// RetryMin and RetryMax bound the wait before a failed entry is tried
	// again (doubled each time, with jitter); 0 means 1 s and 1 h.
	RetryMin, RetryMax time.Duration
	// GiveUpAfter is how long an entry may fail before its endpoint is
	// stopped (failing); 0 means 24 h.
	GiveUpAfter time.Duration
	// Now is the clock retries are timed by; nil means time.Now. Tests
	// move it on to make days pass.
	Now    func() time.Time
	Logger *slog.Logger
}

// Deliverer delivers the meetings' logs to the registered endpoints.
type Deliverer struct {
	cfg Config

	workers map[string]*worker // Run's goroutine's own

	mu    sync.Mutex // guards stats; never held while waiting for a worker
	stats map[string]*Stats
}

// Stats are an endpoint's delivery figures, for metrics.
type Stats struct {
	Delivered, Failed uint64
	Pending           int       // entries waiting, as of the last look (at most a batch)
	OldestPending     time.Time // when the oldest waiting entry was committed; zero: none
}

type worker struct {
	cancel context.CancelFunc
	done   chan struct{}
	ep     store.Endpoint
}

// meetingState is an endpoint's retry state for one meeting's head entry.
type meetingState struct {
	seq       uint64    // the entry failing
	failures  int       // its failed attempts
	firstFail time.Time // when it first failed
	nextAt    time.Time // when it may be tried again
}

// NewDeliverer returns a Deliverer; Run starts it.
func NewDeliverer(cfg Config) *Deliverer {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.Timeout, false)
	}
	if cfg.Poll == 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = time.Hour
	}
	if cfg.GiveUpAfter == 0 {
		cfg.GiveUpAfter = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Deliverer{cfg: cfg, workers: map[string]*worker{}, stats: map[string]*Stats{}}
}

// Run delivers until ctx ends: it looks at the registered endpoints every
// Poll, and keeps one worker for each active one.
func (d *Deliverer) Run(ctx context.Context) {
	defer d.stopAll()
	t := time.NewTicker(d.cfg.Poll)
	defer t.Stop()
	for {
		d.sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Deliverer) sync(ctx context.Context) {
	eps, err := d.cfg.Store.Endpoints(ctx)
	if err != nil {
		d.cfg.Logger.Warn("webhooks: reading the endpoints", "err", err)
		return
	}
	seen := map[string]bool{}
	for _, ep := range eps {
		if ep.Status != store.EndpointActive {
			continue
		}
		seen[ep.ID] = true
		w := d.workers[ep.ID]
		if w != nil && sameDelivery(w.ep, ep) && !ended(w.done) {
			continue
		}
		if w != nil { // changed, or stopped by itself: a worker starts again
			w.cancel()
			<-w.done
		}
		wctx, cancel := context.WithCancel(ctx)
		w = &worker{cancel: cancel, done: make(chan struct{}), ep: ep}
		d.workers[ep.ID] = w
		d.mu.Lock()
		if d.stats[ep.ID] == nil {
			d.stats[ep.ID] = &Stats{}
		}
		d.mu.Unlock()
		go func() {
			defer close(w.done)
			d.work(wctx, ep)
		}()
	}
	for id, w := range d.workers {
		if !seen[id] {
			w.cancel()
			<-w.done
			delete(d.workers, id)
		}
	}
	d.mu.Lock()
	for id := range d.stats {
		if !seen[id] {
			delete(d.stats, id)
		}
	}
	d.mu.Unlock()
}

func ended(done chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

func sameDelivery(a, b store.Endpoint) bool {
	return a.URL == b.URL && slices.Equal(a.EventTypes, b.EventTypes) && slices.Equal(a.Secrets, b.Secrets) && a.Status == b.Status
}

func (d *Deliverer) stopAll() {
	for id, w := range d.workers {
		w.cancel()
		<-w.done
		delete(d.workers, id)
	}
}

// Stats returns each active endpoint's figures, by endpoint id.
func (d *Deliverer) Stats() map[string]Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]Stats, len(d.stats))
	for id, s := range d.stats {
		out[id] = *s
	}
	return out
}

func (d *Deliverer) stat(id string, fn func(*Stats)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.stats[id]; s != nil {
		fn(s)
	}
}

// batch is how many entries a worker reads at a time.
const batch = 200

// work delivers to one endpoint until ctx ends or the endpoint stops.
func (d *Deliverer) work(ctx context.Context, ep store.Endpoint) {
	states := map[string]*meetingState{}
	after := ep.StartN
	for {
		busy, stop := d.round(ctx, ep, states, &after)
		if stop {
			return
		}
		if busy {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.cfg.Poll):
		}
	}
}

// round delivers what is pending now. busy: a full batch was read, more
// may wait; stop: the endpoint stopped, or ctx ended. What it did — the
// attempts, the cursors moved — is written once, at its end (one
// transaction, not two a delivery): the next round's read starts from it.
// Killed before that, the round's deliveries are made again: at least
// once, with the same ids.
func (d *Deliverer) round(ctx context.Context, ep store.Endpoint, states map[string]*meetingState, after *int64) (busy, stop bool) {
	events, err := d.cfg.Store.PendingEvents(ctx, ep.ID, *after, batch)
	if err != nil {
		if ctx.Err() != nil {
			return false, true
		}
		d.cfg.Logger.Warn("webhooks: reading pending entries", "endpoint", ep.ID, "err", err)
		return false, false
	}
	oldest := time.Time{}
	if len(events) > 0 {
		oldest = events[0].At
	}
	d.stat(ep.ID, func(s *Stats) { s.Pending, s.OldestPending = len(events), oldest })
	var attempts []store.Attempt
	delivered := map[string]uint64{}
	defer func() {
		if len(attempts) == 0 && len(delivered) == 0 {
			return
		}
		// Written even when ctx ended: what was delivered stays so.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := d.cfg.Store.Record(wctx, ep.ID, attempts, delivered); err != nil {
			d.cfg.Logger.Warn("webhooks: recording deliveries", "endpoint", ep.ID, "err", err)
			*after = ep.StartN // read again from the cursors the store has
		}
	}()
	blocked := map[string]bool{}
	var firstBlocked int64 = -1
	for _, ev := range events {
		if ctx.Err() != nil {
			return false, true
		}
		if blocked[ev.MeetingID] {
			continue
		}
		st := states[ev.MeetingID]
		now := d.cfg.Now()
		if st != nil && st.seq == ev.Seq && now.Before(st.nextAt) {
			blocked[ev.MeetingID] = true
			if firstBlocked < 0 {
				firstBlocked = ev.N
			}
			continue
		}
		if len(ep.EventTypes) > 0 && !slices.Contains(ep.EventTypes, ev.Type) {
			delivered[ev.MeetingID] = ev.Seq
			continue
		}
		a := d.Send(ctx, ep, ev)
		if ctx.Err() != nil {
			return false, true // shut down mid-delivery: tried again at the next start
		}
		attempts = append(attempts, a)
		if a.Error == "" {
			d.stat(ep.ID, func(s *Stats) { s.Delivered++ })
			delete(states, ev.MeetingID)
			delivered[ev.MeetingID] = ev.Seq
			continue
		}
		d.stat(ep.ID, func(s *Stats) { s.Failed++ })
		if a.Status == http.StatusGone {
			d.stopEndpoint(ctx, ep, store.EndpointGone, "the receiver answered 410 Gone")
			return false, true
		}
		if st == nil || st.seq != ev.Seq {
			st = &meetingState{seq: ev.Seq, firstFail: now}
			states[ev.MeetingID] = st
		}
		st.failures++
		if now.Sub(st.firstFail) >= d.cfg.GiveUpAfter {
			d.stopEndpoint(ctx, ep, store.EndpointFailing, fmt.Sprintf("entry %s failing since %s: %s", a.EventID, st.firstFail.UTC().Format(time.RFC3339), a.Error))
			return false, true
		}
		st.nextAt = now.Add(d.backoff(st.failures))
		blocked[ev.MeetingID] = true
		if firstBlocked < 0 {
			firstBlocked = ev.N
		}
	}
	if len(events) > 0 {
		if firstBlocked >= 0 {
			*after = max(*after, firstBlocked-1)
		} else {
			*after = max(*after, events[len(events)-1].N)
		}
	}
	return len(events) == batch && firstBlocked < 0, false
}

// backoff is the wait after the n-th failure of an entry: RetryMin
// doubled n-1 times, at most RetryMax, give or take a fifth.
func (d *Deliverer) backoff(n int) time.Duration {
	w := d.cfg.RetryMin << min(n-1, 30)
	if w <= 0 || w > d.cfg.RetryMax {
		w = d.cfg.RetryMax
	}
	return time.Duration(float64(w) * (0.8 + 0.4*rand.Float64()))
}

func (d *Deliverer) stopEndpoint(ctx context.Context, ep store.Endpoint, status store.EndpointStatus, note string) {
	ep.Status, ep.StatusAt, ep.Note = status, d.cfg.Now().UTC(), note
	if err := d.cfg.Store.UpdateEndpoint(ctx, ep); err != nil {
		d.cfg.Logger.Warn("webhooks: stopping an endpoint", "endpoint", ep.ID, "err", err)
	}
	d.cfg.Logger.Warn("webhooks: endpoint stopped", "endpoint", ep.ID, "status", status, "why", note)
}

// maxResponse is how much of a response is read: enough to tell a
// receiver's error, never a flood.
const maxResponse = 4 << 10

// Send delivers entry ev to endpoint ep once, signed, and returns how it
// went (Error empty on a 2xx).
func (d *Deliverer) Send(ctx context.Context, ep store.Endpoint, ev store.Event) store.Attempt {
	id := d.cfg.ID(ev)
	a := store.Attempt{EndpointID: ep.ID, EventID: id, MeetingID: ev.MeetingID, Seq: ev.Seq, At: d.cfg.Now().UTC()}
	body := d.cfg.Body(ev)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		a.Error = err.Error()
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cocmd-webhooks/1")
	secrets := ep.Secrets
	if len(secrets) > 1 && !ep.SecretsUntil.IsZero() && d.cfg.Now().After(ep.SecretsUntil) {
		secrets = secrets[:1] // the rotation is over
	}
	if err := Sign(req.Header, secrets, id, time.Now(), body); err != nil {
		a.Error = err.Error()
		return a
	}
	start := time.Now()
	resp, err := d.cfg.Client.Do(req)
	a.Latency = time.Since(start)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	defer resp.Body.Close()
	_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	a.Status = resp.StatusCode
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		a.Error = "the receiver answered " + resp.Status
	case rerr != nil && !errors.Is(rerr, io.EOF):
		a.Error = "reading the answer: " + rerr.Error()
	}
	return a
}
