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
// meeting; an endpoint is sent up to Concurrency meetings' entries at once. Retries back off exponentially with jitter, from RetryMin to
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
	// Concurrency is how many meetings' entries an endpoint is sent at
	// once, each meeting's in order; 0 means 8.
	Concurrency int
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
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
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

// work delivers to one endpoint until ctx ends or the endpoint stops. It
// reads what is pending every Poll and hands each meeting with entries to a goroutine of its own, up
// to Concurrency at once: a meeting's entries go in order, one at a time,
// and a receiver that holds one meeting's delivery does not hold back the
// others'.
func (d *Deliverer) work(ctx context.Context, ep store.Endpoint) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &endpointWork{d: d, ep: ep, cancel: cancel, states: map[string]*meetingState{}, inflight: map[string]int64{},
		ended: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	defer wg.Wait()
	after := ep.StartN
	for ctx.Err() == nil {
		events, err := d.cfg.Store.PendingEvents(ctx, ep.ID, after, batch)
		if err != nil && ctx.Err() == nil {
			d.cfg.Logger.Warn("webhooks: reading pending entries", "endpoint", ep.ID, "err", err)
		}
		oldest := time.Time{}
		if len(events) > 0 {
			oldest = events[0].At
		}
		d.stat(ep.ID, func(s *Stats) { s.Pending, s.OldestPending = len(events), oldest })
		var order []string
		byMeeting := map[string][]store.Event{}
		for _, ev := range events {
			if byMeeting[ev.MeetingID] == nil {
				order = append(order, ev.MeetingID)
			}
			byMeeting[ev.MeetingID] = append(byMeeting[ev.MeetingID], ev)
		}
		held := int64(-1) // the first entry not delivered yet: the next read starts there
		hold := func(n int64) {
			if held < 0 || n < held {
				held = n
			}
		}
		now := d.cfg.Now()
		w.mu.Lock()
		for _, n := range w.inflight {
			hold(n)
		}
		for _, mid := range order {
			evs := byMeeting[mid]
			if _, busy := w.inflight[mid]; busy {
				continue
			}
			if st := w.states[mid]; st != nil && st.seq == evs[0].Seq && now.Before(st.nextAt) {
				hold(evs[0].N) // waiting to be tried again
				continue
			}
			if len(w.inflight) >= d.cfg.Concurrency {
				hold(evs[0].N)
				continue
			}
			w.inflight[mid] = evs[0].N
			hold(evs[0].N)
			wg.Go(func() { w.meeting(ctx, mid, evs) })
		}
		w.mu.Unlock()
		switch {
		case held >= 0:
			after = max(after, held-1)
		case len(events) > 0:
			after = max(after, events[len(events)-1].N)
		}
		if len(events) == batch && held < 0 {
			continue // more may wait
		}
		// Every Poll, not as soon as a meeting is done: entries that come
		// meanwhile go in one round, and one transaction, to the store the
		// meetings commit to. But a backlog (a full read) is read on as
		// soon as a meeting is done with its part.
		var ended <-chan struct{}
		if len(events) == batch {
			ended = w.ended
		}
		select {
		case <-ctx.Done():
		case <-ended:
		case <-time.After(d.cfg.Poll):
		}
	}
}

// endpointWork is one endpoint's delivery state.
type endpointWork struct {
	d      *Deliverer
	ep     store.Endpoint
	cancel context.CancelFunc // stops the endpoint's work

	mu       sync.Mutex
	states   map[string]*meetingState // by meeting: its head entry's retries
	inflight map[string]int64         // meetings being delivered: their first entry's N
	stopped  bool
	ended    chan struct{} // a meeting's deliveries ended
}

// meeting delivers one meeting's entries, in order, until one fails, and
// records what it did in one transaction (killed before that, they are
// delivered again, with the same ids: at least once).
func (w *endpointWork) meeting(ctx context.Context, mid string, evs []store.Event) {
	d, ep := w.d, w.ep
	var attempts []store.Attempt
	var last uint64
	defer func() {
		if len(attempts) > 0 || last > 0 {
			delivered := map[string]uint64{}
			if last > 0 {
				delivered[mid] = last
			}
			// Written even when ctx ended: what was delivered stays so.
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := d.cfg.Store.Record(wctx, ep.ID, attempts, delivered); err != nil {
				d.cfg.Logger.Warn("webhooks: recording deliveries", "endpoint", ep.ID, "err", err)
			}
			cancel()
		}
		w.mu.Lock()
		delete(w.inflight, mid)
		w.mu.Unlock()
		select {
		case w.ended <- struct{}{}:
		default:
		}
	}()
	for _, ev := range evs {
		if ctx.Err() != nil {
			return
		}
		if len(ep.EventTypes) > 0 && !slices.Contains(ep.EventTypes, ev.Type) {
			last = ev.Seq
			continue
		}
		a := d.Send(ctx, ep, ev)
		if ctx.Err() != nil {
			return // stopping mid-delivery: tried again later
		}
		attempts = append(attempts, a)
		if a.Error == "" {
			d.stat(ep.ID, func(s *Stats) { s.Delivered++ })
			last = ev.Seq
			w.mu.Lock()
			delete(w.states, mid)
			w.mu.Unlock()
			continue
		}
		d.stat(ep.ID, func(s *Stats) { s.Failed++ })
		now := d.cfg.Now()
		w.mu.Lock()
		st := w.states[mid]
		if st == nil || st.seq != ev.Seq {
			st = &meetingState{seq: ev.Seq, firstFail: now}
			w.states[mid] = st
		}
		st.failures++
		st.nextAt = now.Add(d.backoff(st.failures))
		var status store.EndpointStatus
		var why string
		switch {
		case a.Status == http.StatusGone:
			status, why = store.EndpointGone, "the receiver answered 410 Gone"
		case now.Sub(st.firstFail) >= d.cfg.GiveUpAfter:
			status, why = store.EndpointFailing, fmt.Sprintf("entry %s failing since %s: %s", a.EventID, st.firstFail.UTC().Format(time.RFC3339), a.Error)
		}
		first := why != "" && !w.stopped
		if why != "" {
			w.stopped = true
		}
		w.mu.Unlock()
		if first {
			d.stopEndpoint(context.WithoutCancel(ctx), ep, status, why)
			w.cancel()
		}
		return
	}
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
