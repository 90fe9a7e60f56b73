// Package cluster makes several cocmd nodes one service on NATS with
// JetStream: the state of record lives in JetStream (store/natsjs), each
// meeting has one owner node at a time, by a lease in a key-value bucket,
// and each node says it is alive in another.
//
// A lease is a key per meeting, written by its owner every TTL/3 and gone
// TTL after its last write (the bucket's entries expire). Its epoch is the
// revision of the write that created it: epochs grow from one owner to the
// next. The owner claims the meeting in the store with that epoch
// (natsjs.Store.Claim), which fences every other node's writes: the lease
// says who should write, the fencing makes sure nobody else can.
//
// JetStream stops writing a bucket while its replicas elect a new leader
// (after losing the old one, 4–9 s in nats-server), so failing writes
// alone do not say that a node is cut off: every node sees them then.
// Each node also says it is alive over plain NATS (a heartbeat every
// TTL/5, which needs no leader), and a node that still hears a majority
// of the nodes it knows rides out an election of up to ElectionGrace: it
// keeps its leases and its connections, and renews as soon as JetStream
// answers (making a lease anew if the new leader let it expire meanwhile;
// the store's fencing refuses its writes if another node claimed the
// meeting in between). A node that hears no majority is the one cut off,
// and gives everything up within the TTL, as before.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store/natsjs"
)

// Config is this node's place in the cluster.
type Config struct {
	// Node names this node; unique in the cluster, stable across its
	// restarts.
	Node string
	// Prefix names the buckets (with the store's streams); default "cocmd".
	Prefix string
	// Replicas of the buckets: 3 in a cluster of three NATS servers or
	// more, 1 on one.
	Replicas int
	// LeaseTTL is how long a meeting stays owned by a node that stopped
	// renewing its lease (it crashed, paused, lost NATS); default 2 s.
	LeaseTTL time.Duration
	// ElectionGrace is how long a node that still hears a majority of
	// the nodes keeps its leases and its connections while JetStream
	// does not answer (its replicas electing a leader); default 12 s,
	// above nats-server's longest election timeout (9 s). 0 takes the
	// default; negative: no grace.
	ElectionGrace time.Duration
	// Logger receives the node's log; nil: slog.Default().
	Logger *slog.Logger
}

// Node is this process's membership of a cluster. It implements
// meeting.Ownership.
type Node struct {
	nc     *nats.Conn
	cfg    Config
	log    *slog.Logger
	store  *natsjs.Store
	leases jetstream.KeyValue
	nodes  jetstream.KeyValue

	mu       sync.Mutex
	alive    time.Time // when this node last said it is alive, and was heard
	cutOff   []func()  // told when the others would think this node dead
	isCut    bool      // they have been told, and alive not yet written since
	held     map[string]*lease
	heard    map[string]time.Time // other nodes' last heartbeat
	graced   bool                 // riding out an election (for the log)
	releases sync.WaitGroup
	hbSub    *nats.Subscription
	beating  sync.WaitGroup

	counts counters

	stop chan struct{}
	done chan struct{}
}

// lease is a meeting this node owns.
type lease struct {
	rev     uint64 // of its last write
	epoch   uint64
	renewed time.Time // when the last write that worked was sent
	lost    chan struct{}
}

// leaseValue is a lease's JSON.
type leaseValue struct {
	Node string `json:"node"`
}

// ErrElsewhere is returned by Acquire for a meeting a live node owns.
var ErrElsewhere = errors.New("cluster: the meeting is owned by another node")

// ElsewhereError says which node owns the meeting.
type ElsewhereError struct{ Node string }

// Error implements error.
func (e *ElsewhereError) Error() string {
	return "the meeting is served by node " + e.Node
}

// Unwrap matches ErrElsewhere and stage.ErrUnavailable.
func (e *ElsewhereError) Unwrap() []error { return []error{ErrElsewhere, stage.ErrUnavailable} }

// Open joins the cluster: it creates (or binds to) the buckets and starts
// saying this node is alive.
func Open(ctx context.Context, nc *nats.Conn, st *natsjs.Store, cfg Config) (*Node, error) {
	if cfg.Node == "" {
		return nil, errors.New("cluster: a node needs a name")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "cocmd"
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 2 * time.Second
	}
	switch {
	case cfg.ElectionGrace == 0:
		cfg.ElectionGrace = 12 * time.Second
	case cfg.ElectionGrace < 0:
		cfg.ElectionGrace = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	n := &Node{nc: nc, alive: time.Now(), cfg: cfg, log: cfg.Logger.With("node", cfg.Node), store: st, held: map[string]*lease{},
		heard: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	if n.hbSub, err = nc.Subscribe(n.heartbeatSubject(), n.heartbeat); err != nil {
		return nil, fmt.Errorf("cluster: heartbeats: %w", err)
	}
	for _, b := range []struct {
		kv   *jetstream.KeyValue
		name string
	}{{&n.leases, "owners"}, {&n.nodes, "nodes"}} {
		if *b.kv, err = natsjs.EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{
			Bucket: cfg.Prefix + "_" + b.name, TTL: cfg.LeaseTTL, Replicas: cfg.Replicas, Storage: jetstream.FileStorage,
		}); err != nil {
			return nil, fmt.Errorf("cluster: bucket %s: %w", b.name, err)
		}
	}
	// A bucket just made may not have its leader yet: try again until ctx
	// ends.
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := n.nodes.Put(pctx, cfg.Node, []byte(`{}`))
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			n.hbSub.Unsubscribe()
			return nil, fmt.Errorf("cluster: saying this node is alive: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	go n.renew()
	n.beating.Go(n.beat)
	return n, nil
}

// beat says this node is alive over plain NATS every TTL/5, on its own
// goroutine: the renewals' round trips, which wait out an election, must
// not hold it back. It also gives up the leases that lapsed, and tells of
// a cut: the renewals only see that after their round trips, one lease
// after the other, which may be well past half the TTL.
func (n *Node) beat() {
	t := time.NewTicker(n.cfg.LeaseTTL / 5)
	defer t.Stop()
	for {
		if err := n.nc.Publish(n.heartbeatSubject(), []byte(n.cfg.Node)); err != nil {
			n.log.Debug("heartbeat", "err", err)
		}
		n.mu.Lock()
		lapsed := map[string]*lease{}
		for id, l := range n.held {
			if n.lapsedLocked(l.renewed, n.cfg.LeaseTTL/2) {
				lapsed[id] = l
			}
		}
		n.mu.Unlock()
		for id, l := range lapsed {
			n.lose(id, l, "its lease could not be renewed in time")
		}
		n.checkCutOff()
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// Ready returns an error when the node should not take connections: it is
// cut off from NATS, or could not say it is alive for a lease TTL (the
// other nodes consider it dead; its meetings were given up by then).
func (n *Node) Ready() error {
	if !n.nc.IsConnected() {
		return errors.New("cut off from NATS")
	}
	n.mu.Lock()
	since := time.Since(n.alive)
	lapsed := n.lapsedLocked(n.alive, n.cfg.LeaseTTL)
	n.mu.Unlock()
	if lapsed {
		return fmt.Errorf("NATS has not answered for %v", since.Round(time.Millisecond))
	}
	return nil
}

// heartbeatSubject is where the nodes say they are alive over plain NATS.
func (n *Node) heartbeatSubject() string { return n.cfg.Prefix + ".heartbeat" }

// heartbeat records another node's heartbeat (its name).
func (n *Node) heartbeat(m *nats.Msg) {
	if string(m.Data) == n.cfg.Node || len(m.Data) == 0 || len(m.Data) > 256 {
		return
	}
	n.mu.Lock()
	n.heard[string(m.Data)] = time.Now()
	n.mu.Unlock()
}

// memberWindow is how long a node stays counted among those whose
// majority must be heard after its last heartbeat: beyond it, a node is
// taken as gone for good (it left, or was replaced).
const memberWindow = time.Minute

// majorityLocked reports whether this node heard lately — within two
// heartbeats (2/5 of the lease TTL) — from a majority of the nodes it
// heard from within memberWindow (itself included): then it is not the
// one cut off. Lately, so that a node cut off stops thinking so before
// half the TTL, when its leases must be given up (the others may take
// them at the TTL).
func (n *Node) majorityLocked(now time.Time) bool {
	members, live := 1, 1
	for node, at := range n.heard {
		switch age := now.Sub(at); {
		case age > memberWindow:
			delete(n.heard, node)
		case age <= 2*n.cfg.LeaseTTL/5:
			members++
			live++
		default:
			members++
		}
	}
	return 2*live > members
}

// lapsedLocked reports whether what this node last wrote at since has
// lapsed for a write that must be renewed within ttl: it has, unless the
// node hears a majority and JetStream has been silent for less than the
// election grace (an election, which every node waits out alike).
func (n *Node) lapsedLocked(since time.Time, ttl time.Duration) bool {
	now := time.Now()
	silent := now.Sub(since)
	if silent <= ttl {
		return false
	}
	grace := silent <= n.cfg.ElectionGrace && n.majorityLocked(now)
	if grace != n.graced {
		n.graced = grace
		if grace {
			n.log.Warn("JetStream does not answer, but a majority of the nodes is heard: riding it out as an election", "silent", silent.Round(time.Millisecond), "grace", n.cfg.ElectionGrace)
		}
	}
	return !grace
}

// OnCutOff registers f, called (on a goroutine of its own) each time
// this node has been unable to say it is alive for a lease TTL: the other
// nodes consider it dead from then on, and drop the connections it holds
// for their meetings. The node's own connections should end then, for
// their clients to reconnect through a node that reaches the cluster; a
// node that serves on sees nothing the cluster does.
func (n *Node) OnCutOff(f func()) {
	n.mu.Lock()
	n.cutOff = append(n.cutOff, f)
	n.mu.Unlock()
}

// checkCutOff calls the OnCutOff functions once the node's liveness has
// lapsed, once per lapse.
func (n *Node) checkCutOff() {
	n.mu.Lock()
	since := time.Since(n.alive)
	cut := !n.isCut && n.lapsedLocked(n.alive, n.cfg.LeaseTTL)
	if cut {
		n.isCut = true
	}
	fs := n.cutOff
	n.mu.Unlock()
	if !cut {
		return
	}
	n.log.Warn("cut off from the cluster: the other nodes consider this one dead", "unheard", since.Round(time.Millisecond))
	for _, f := range fs {
		go f()
	}
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Node }

// Store returns the cluster's store.
func (n *Node) Store() *natsjs.Store { return n.store }

// Alive reports whether node is alive: it said so within the lease TTL.
func (n *Node) Alive(ctx context.Context, node string) (bool, error) {
	_, err := n.nodes.Get(ctx, node)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	default:
		return false, err
	}
}

// Acquire makes this node the owner of meeting id: it takes the meeting's
// lease, waiting for it to expire if its owner is dead, and claims the
// meeting in the store. It returns a channel closed when this node stops
// being the owner (its lease lapsed, or another node's write fenced it), or
// an *ElsewhereError if a live node owns the meeting.
func (n *Node) Acquire(ctx context.Context, id string) (<-chan struct{}, error) {
	key := keyOf(id)
	val, _ := json.Marshal(leaseValue{Node: n.cfg.Node})
	for {
		// Each round trip is bounded by the TTL: while JetStream elects a
		// leader, a caller hears so soon, and tries again.
		octx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
		sent := time.Now()
		rev, err := n.leases.Create(octx, key, val)
		cancel()
		if err == nil {
			return n.claim(ctx, id, &lease{rev: rev, epoch: rev, renewed: sent, lost: make(chan struct{})})
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, unavailable(err)
		}
		octx, cancel = context.WithTimeout(ctx, n.cfg.LeaseTTL)
		e, err := n.leases.Get(octx, key)
		cancel()
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // it expired meanwhile
		}
		if err != nil {
			return nil, unavailable(err)
		}
		var v leaseValue
		_ = json.Unmarshal(e.Value(), &v)
		if v.Node == n.cfg.Node {
			n.mu.Lock()
			l := n.held[id]
			n.mu.Unlock()
			if l != nil {
				return l.lost, nil
			}
			// This node's from before a restart: take it over.
			sent = time.Now()
			octx, cancel = context.WithTimeout(ctx, n.cfg.LeaseTTL)
			rev, err := n.leases.Update(octx, key, val, e.Revision())
			cancel()
			if err != nil {
				continue
			}
			return n.claim(ctx, id, &lease{rev: rev, epoch: rev, renewed: sent, lost: make(chan struct{})})
		}
		octx, cancel = context.WithTimeout(ctx, n.cfg.LeaseTTL)
		alive, err := n.Alive(octx, v.Node)
		cancel()
		if err != nil {
			return nil, unavailable(err)
		}
		if alive {
			return nil, &ElsewhereError{Node: v.Node}
		}
		// Its owner is dead: the lease lapses within the TTL.
		select {
		case <-time.After(n.cfg.LeaseTTL / 10):
		case <-ctx.Done():
			return nil, unavailable(fmt.Errorf("waiting for the lease of dead node %s: %w", v.Node, ctx.Err()))
		}
	}
}

// claim fences the meeting in the store under l's epoch and keeps l.
func (n *Node) claim(ctx context.Context, id string, l *lease) (<-chan struct{}, error) {
	n.mu.Lock()
	n.held[id] = l
	n.mu.Unlock()
	if err := n.store.Claim(ctx, id, l.epoch, func() { n.lose(id, l, "another node wrote to the meeting") }); err != nil {
		n.Release(id)
		return nil, err
	}
	n.log.Info("meeting acquired", "meeting", id, "epoch", l.epoch)
	return l.lost, nil
}

// lose drops lease l of meeting id, if it is still held, and tells its
// owner.
func (n *Node) lose(id string, l *lease, why string) {
	n.mu.Lock()
	if n.held[id] != l {
		n.mu.Unlock()
		return
	}
	delete(n.held, id)
	n.mu.Unlock()
	n.store.Release(id)
	close(l.lost)
	n.log.Warn("meeting lost", "meeting", id, "why", why)
}

// Release gives meeting id up: its lease is deleted, so that another node
// may take it at once. It does not block: the deletion is sent by a
// goroutine of its own (Close waits for it).
func (n *Node) Release(id string) {
	n.mu.Lock()
	l := n.held[id]
	delete(n.held, id)
	n.mu.Unlock()
	if l == nil {
		return
	}
	n.store.Release(id)
	n.releases.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.LeaseTTL)
		defer cancel()
		n.mu.Lock()
		rev := l.rev
		n.mu.Unlock()
		// Conditional: a lease this node took again meanwhile stays.
		if err := n.leases.Delete(ctx, keyOf(id), jetstream.LastRevision(rev)); err != nil {
			n.log.Debug("releasing a lease", "meeting", id, "err", err)
		}
	})
}

// renew writes this node's liveness and every lease it holds every TTL/5;
// a lease whose last working write was sent more than TTL/2 ago is lost
// (it is lost by 3/5 of the TTL, before its key can expire and another
// node take over; the store's fencing covers a node too slow to notice).
func (n *Node) renew() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.LeaseTTL / 5)
	defer t.Stop()
	val, _ := json.Marshal(leaseValue{Node: n.cfg.Node})
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.LeaseTTL/5)
		sent := time.Now()
		if _, err := n.nodes.Put(ctx, n.cfg.Node, []byte(`{}`)); err != nil {
			n.log.Debug("saying this node is alive", "err", err)
		} else {
			n.mu.Lock()
			n.alive = sent
			n.isCut = false
			n.mu.Unlock()
		}
		cancel()
		n.checkCutOff()
		n.mu.Lock()
		held := make(map[string]*lease, len(n.held))
		for id, l := range n.held {
			held[id] = l
		}
		n.mu.Unlock()
		for id, l := range held {
			sent := time.Now()
			n.mu.Lock()
			rev := l.rev
			n.mu.Unlock()
			uctx, ucancel := context.WithTimeout(context.Background(), n.cfg.LeaseTTL/5)
			nrev, err := n.leases.Update(uctx, keyOf(id), val, rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				// The lease is gone (expired while JetStream elected, or
				// taken): make it anew. If another node has it, this
				// fails; if another node had it meanwhile and claimed
				// the meeting, the store refuses this node's next write
				// and the meeting is lost then.
				nrev, err = n.leases.Create(uctx, keyOf(id), val)
				if err == nil {
					n.log.Info("lease made anew after it expired", "meeting", id)
				}
			}
			ucancel()
			n.mu.Lock()
			if err == nil {
				l.rev, l.renewed = nrev, sent
			}
			// Lost by half the TTL (before its key can expire and another
			// node take over), unless this is an election every node
			// waits out.
			stale := n.lapsedLocked(l.renewed, n.cfg.LeaseTTL/2)
			n.mu.Unlock()
			switch {
			case err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrConnectionClosed):
				n.lose(id, l, "its lease was taken: "+err.Error())
			case stale:
				n.lose(id, l, "its lease could not be renewed in time")
			}
		}
	}
}

// Close releases every meeting this node holds and says it is gone.
func (n *Node) Close() error {
	close(n.stop)
	<-n.done
	n.beating.Wait()
	n.hbSub.Unsubscribe()
	n.mu.Lock()
	ids := make([]string, 0, len(n.held))
	for id := range n.held {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	for _, id := range ids {
		n.Release(id)
	}
	n.releases.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.LeaseTTL)
	defer cancel()
	return n.nodes.Delete(ctx, n.cfg.Node)
}

// keyOf is the lease key of meeting id.
func keyOf(id string) string {
	ok := id != ""
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			ok = false
		}
	}
	if ok {
		return id
	}
	return fmt.Sprintf("~%x", id)
}

func unavailable(err error) error {
	return stage.Errorf(stage.ErrUnavailable, "the cluster is unavailable: "+err.Error())
}

// Exclusive runs fn on one node of the cluster at a time, until ctx ends:
// the node holding lease name runs it, with a context cancelled when it
// loses the lease; the others wait for the lease to free and take over.
// Webhook delivery runs so: one node delivers, and if it dies another
// carries on from the cursors within the lease TTL.
func (n *Node) Exclusive(ctx context.Context, name string, fn func(ctx context.Context)) {
	key := "job-" + name
	val, _ := json.Marshal(leaseValue{Node: n.cfg.Node})
	for ctx.Err() == nil {
		sent := time.Now()
		rev, err := n.leases.Create(ctx, key, val)
		if err != nil {
			// Held by another node, or NATS is unreachable: try again.
			select {
			case <-time.After(n.cfg.LeaseTTL / 4):
			case <-ctx.Done():
			}
			continue
		}
		l := &lease{rev: rev, epoch: rev, renewed: sent, lost: make(chan struct{})}
		n.mu.Lock()
		n.held[key] = l
		n.mu.Unlock()
		n.log.Info("running an exclusive job", "job", name)
		jctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-l.lost:
				cancel()
			case <-jctx.Done():
			}
		}()
		fn(jctx)
		cancel()
		n.Release(key)
	}
}
