package meeting

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// Registry holds the live meetings, loading a meeting from the store when
// it is first needed and unloading it when it has been idle.
type Registry struct {
	store Store
	cfg   Config
	log   *slog.Logger

	mu      sync.Mutex
	live    map[string]*Meeting
	loading map[string]*load
	proxies map[string]*proxy // meetings other nodes own, with connections here
	// handoffs are, for a meeting another node handed over, the
	// participants that were connected to that node: whichever node takes
	// the meeting gives them the reconnect grace (handOff).
	handoffs map[string]handoff
	closed   bool
	wg       sync.WaitGroup
}

// NewRegistry returns a registry of meetings kept in s.
func NewRegistry(s Store, cfg Config) *Registry {
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 1 << 20
	}
	if cfg.Idle <= 0 {
		cfg.Idle = time.Minute
	}
	if cfg.CountEvery <= 0 {
		cfg.CountEvery = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Registry{store: s, cfg: cfg, log: cfg.Logger, live: map[string]*Meeting{}, loading: map[string]*load{}, proxies: map[string]*proxy{}}
}

func (r *Registry) now() time.Time {
	if r.cfg.Now != nil {
		return r.cfg.Now()
	}
	return time.Now()
}

// errClosed is returned once the registry is closed.
var errClosed = stage.Errorf(stage.ErrInternal, "the server is shutting down")

// get returns the live meeting id, loading it if needed. Loads of different
// meetings run in parallel; callers wanting a meeting being loaded wait for
// that one load.
func (r *Registry) get(ctx context.Context, id string) (*Meeting, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errClosed
	}
	if m := r.live[id]; m != nil {
		r.mu.Unlock()
		return m, nil
	}
	if l := r.loading[id]; l != nil {
		r.mu.Unlock()
		select {
		case <-l.done:
			return l.m, l.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l := &load{done: make(chan struct{})}
	r.loading[id] = l
	r.mu.Unlock()

	// The load is shared: it must not end with the first caller's context.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	var lost <-chan struct{}
	var err error
	var m *Meeting
	own := r.cfg.Ownership
	if own != nil {
		lost, err = own.Acquire(lctx, id)
	}
	if err == nil {
		m, err = r.load(lctx, id)
		if err != nil && own != nil {
			own.Release(id)
		}
	}
	cancel()
	r.mu.Lock()
	delete(r.loading, id)
	switch {
	case err != nil:
	case r.closed:
		m, err = nil, errClosed
		if own != nil {
			own.Release(id)
		}
	default:
		// The owner's first command is queued before anyone can find the
		// meeting, so it runs before theirs.
		m.init()
		r.live[id] = m
		r.wg.Add(1)
	}
	r.mu.Unlock()
	if m != nil && err == nil {
		if bus := r.cfg.Bus; bus != nil {
			// Other nodes' connections to the meeting call it here. The
			// owner's first command (init) runs before any of theirs.
			if stop, serr := bus.Serve(id, m.serveRemote); serr != nil {
				m.log.Error("cannot answer other nodes", "err", serr)
			} else {
				m.cmds <- func() { m.stopServe = stop }
			}
		}
		go m.run() // outside the lock: the owner calls the media plane
		if lost != nil {
			go func() {
				select {
				case <-lost:
					m.log.Warn("this node no longer owns the meeting: unloading it")
					m.post(func() { m.stop(protocol.CloseGoingAway, "the meeting moved to another node") })
				case <-m.stopped:
				}
			}()
		}
	}
	l.m, l.err = m, err
	close(l.done)
	return m, err
}

// load is a meeting being read from the store.
type load struct {
	done chan struct{}
	m    *Meeting
	err  error
}

// forget is called by a stopping meeting's owner.
func (r *Registry) forget(m *Meeting) {
	r.mu.Lock()
	if r.live[m.id] == m {
		delete(r.live, m.id)
	}
	r.mu.Unlock()
	if own := r.cfg.Ownership; own != nil {
		own.Release(m.id)
	}
	r.wg.Done()
}

// do runs fn on the owner of meeting id, loading the meeting if needed,
// and returns fn's error. fn runs on the owner goroutine: it may use the
// meeting's state, and wait on the store but on nothing else (see Meeting).
func (r *Registry) do(ctx context.Context, id string, fn func(m *Meeting) error) error {
	for {
		m, err := r.get(ctx, id)
		if err != nil {
			return err
		}
		var ferr error
		err = m.do(ctx, func() { ferr = fn(m) })
		switch {
		case err == nil:
			return ferr
		case !errors.Is(err, ErrStopped):
			return unavailable(err)
		}
		// Unloaded between get and do: load it again.
	}
}

// loaded returns the meetings in memory.
func (r *Registry) loaded() []*Meeting {
	r.mu.Lock()
	defer r.mu.Unlock()
	live := make([]*Meeting, 0, len(r.live))
	for _, m := range r.live {
		live = append(live, m)
	}
	return live
}

// Loaded returns the number of meetings in memory.
func (r *Registry) Loaded() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// Close stops every live meeting, closing its clients with "going away" so
// that they reconnect to the next server, and waits for the owners to end.
// In a cluster the meetings are handed over to other nodes (handOff).
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	for _, p := range r.allProxies() {
		p.shut(protocol.CloseGoingAway, "server shutting down")
	}
	for _, m := range r.loaded() {
		// In a cluster, the meeting is handed over: the other nodes keep
		// their connections to it, and one of them takes it.
		m.post(m.handOff)
	}
	r.wg.Wait()
}
