// Package natsjs implements store.Store on NATS JetStream, for cocmd's
// cluster mode: several nodes share one state of record, replicated by
// JetStream (acknowledged means stored by a quorum of the stream's
// replicas).
//
// Layout:
//
//   - Stream <prefix>_MEETINGS, subjects <prefix>.m.<meeting>: each meeting's
//     changes, one record per commit (see record). A meeting's state — its
//     settings, participants, stage statuses and log (the audit log, which
//     webhooks deliver) — is the fold of its records, so a change and the
//     log entries that tell of it are one message, committed together or
//     not at all. Every write is conditional on the subject's last sequence
//     (fencing: see Store.Claim).
//   - Key-value buckets <prefix>_settings, _presets, _webhooks and _cursors:
//     settings, presets, webhook endpoints and their delivery cursors.
//   - Stream <prefix>_ATTEMPTS, subjects <prefix>.a.<endpoint>: webhook
//     delivery attempts, kept 30 days.
//
// Every node keeps a view of all of it in memory, fed by ordered consumers
// and watchers, and answers reads from it. A node's own writes are in its
// view when they return (but while the view's consumer is made again after
// its NATS server went away: the writes are durable, the view catches up
// within seconds); another node's appear within the replication delay. A
// meeting's owner loads it through the stream's leader (Claim).
package natsjs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// Config says how the store lays itself out in JetStream.
type Config struct {
	// Prefix names the streams, subjects and buckets; default "cocmd".
	Prefix string
	// Replicas is each stream's and bucket's replica count: 3 in a cluster
	// of three or more servers (a write is acknowledged once two have it),
	// 1 on a single server.
	Replicas int
	// Node names this node in the records it writes.
	Node string
	// Timeout bounds one round trip to JetStream; default 5 s.
	Timeout time.Duration
}

// Store is a store.Store in JetStream. Its methods are safe for concurrent
// use.
type Store struct {
	js  jetstream.JetStream
	cfg Config

	meetingsStream jetstream.Stream
	attemptsStream jetstream.Stream
	settings       *kvView
	presets        *kvView
	endpoints      *kvView
	cursors        *kvView

	mu       sync.Mutex
	applied  progress // of the meetings stream
	meetings map[string]*mstate
	order    []*mstate // by n
	log      []eventRef
	attApp   progress // of the attempts stream
	attempts map[string][]attemptRow
	writers  map[string]*writer
	closed   bool
	certs    *CertStorage // opened on demand

	followers []*follower // one per stream of the view
}

var _ store.Store = (*Store)(nil)

// progress is how far a view has applied its stream, with a channel closed
// (and replaced) at every step, for waiters.
type progress struct {
	seq uint64
	ch  chan struct{}
}

func (p *progress) advance(seq uint64) {
	if seq <= p.seq {
		return
	}
	p.seq = seq
	if p.ch != nil {
		close(p.ch)
		p.ch = nil
	}
}

func (p *progress) wait() <-chan struct{} {
	if p.ch == nil {
		p.ch = make(chan struct{})
	}
	return p.ch
}

// ErrFenced is returned by a write of a meeting this node no longer owns:
// another node wrote to the meeting since this node claimed it. It is
// stage.ErrUnavailable to callers, who retry on the meeting's new owner.
var ErrFenced = stage.Errorf(stage.ErrUnavailable, "the meeting moved to another node")

// maxAttemptsKept bounds the delivery attempts of one endpoint listed.
const maxAttemptsKept = 10000

// attemptRetention is how long the attempts stream keeps an attempt.
const attemptRetention = 30 * 24 * time.Hour

// Open creates (or binds to) the streams and buckets on nc's JetStream and
// fills the view from them.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "cocmd"
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &Store{js: js, cfg: cfg, meetings: map[string]*mstate{}, attempts: map[string][]attemptRow{}, writers: map[string]*writer{}}
	up := strings.ToUpper(cfg.Prefix)
	if s.meetingsStream, err = EnsureStream(ctx, js, jetstream.StreamConfig{
		Name: up + "_MEETINGS", Subjects: []string{cfg.Prefix + ".m.*"}, Storage: jetstream.FileStorage,
		Replicas: cfg.Replicas, Discard: jetstream.DiscardNew, MaxMsgSize: 1 << 20,
	}); err != nil {
		return nil, fmt.Errorf("natsjs: meetings stream: %w", err)
	}
	if s.attemptsStream, err = EnsureStream(ctx, js, jetstream.StreamConfig{
		Name: up + "_ATTEMPTS", Subjects: []string{cfg.Prefix + ".a.*"}, Storage: jetstream.FileStorage,
		Replicas: cfg.Replicas, MaxAge: attemptRetention,
	}); err != nil {
		return nil, fmt.Errorf("natsjs: attempts stream: %w", err)
	}
	for _, b := range []struct {
		v    **kvView
		name string
	}{{&s.settings, "settings"}, {&s.presets, "presets"}, {&s.endpoints, "webhooks"}, {&s.cursors, "cursors"}} {
		kv, err := EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: cfg.Prefix + "_" + b.name, Replicas: cfg.Replicas, Storage: jetstream.FileStorage})
		if err != nil {
			return nil, fmt.Errorf("natsjs: bucket %s: %w", b.name, err)
		}
		if *b.v, err = watch(ctx, js, kv); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.consume(ctx, s.meetingsStream, &s.applied, s.applyRecord); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.consume(ctx, s.attemptsStream, &s.attApp, s.applyAttempts); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.sync(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// EnsureStream returns stream cfg.Name, creating it if it does not exist.
// Nodes starting together all try to create it; JetStream may leave the
// requests of such a race unanswered, or refuse them while its peers join
// ("no suitable peers"): each try is short, a lookup comes first, and
// failures are tried again until ctx ends, which returns the last.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return ensure(ctx, func(c context.Context) (jetstream.Stream, error) { return js.Stream(c, cfg.Name) },
		func(c context.Context) (jetstream.Stream, error) { return js.CreateStream(c, cfg) })
}

// EnsureKeyValue returns bucket cfg.Bucket, creating it if it does not
// exist, as EnsureStream does.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return ensure(ctx, func(c context.Context) (jetstream.KeyValue, error) { return js.KeyValue(c, cfg.Bucket) },
		func(c context.Context) (jetstream.KeyValue, error) { return js.CreateKeyValue(c, cfg) })
}

func ensure[T any](ctx context.Context, lookup, create func(context.Context) (T, error)) (T, error) {
	for {
		v, err := tryShort(ctx, lookup)
		if err == nil {
			return v, nil
		}
		if v, err = tryShort(ctx, create); err == nil {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// tryShort calls fn with a context of at most two seconds.
func tryShort[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return fn(c)
}

// consumerHeartbeat is how often the server of an ordered consumer says
// it is there when there is nothing new: twice as long without a word, the
// client makes the consumer again. Its server may be a node that stopped
// (the consumer lives on one server): the view, and every commit waiting
// for it, stalls that long (5 s with nats.go's default, 10 s to notice).
const consumerHeartbeat = time.Second

// stallAfter is how long a view may lag behind a sequence known to be in
// its stream before the view makes its consumer again itself (see
// follower.restart).
const stallAfter = 3 * consumerHeartbeat

// follower feeds one stream to the view, in order, through an ordered
// consumer, and makes a new one when the view stalls.
//
// nats.go makes an ordered consumer again when its heartbeats stop, but a
// server cut off from the others (not stopped) may keep the client's new
// consumer from ever delivering: a view that stayed behind a commit for
// minutes after a partition was seen in TestBinary_clusterCutOff, and
// every connection to the node waited on it. The view knows when it is
// behind — a commit's sequence it waits for has not arrived — and then
// starts a consumer of its own from the next sequence it needs.
type follower struct {
	s      *Store
	stream jetstream.Stream
	p      *progress // in s, under s.mu
	apply  func(seq uint64, data []byte)

	mu      sync.Mutex // serializes deliveries and changes of consumer
	gen     int        // the current consumer's; deliveries of older ones are dropped
	cc      jetstream.ConsumeContext
	stopped bool

	restarting atomic.Bool
}

// consume feeds every message of stream to apply, in order, from the first.
func (s *Store) consume(ctx context.Context, stream jetstream.Stream, p *progress, apply func(seq uint64, data []byte)) error {
	f := &follower{s: s, stream: stream, p: p, apply: apply}
	if err := f.start(ctx, 1); err != nil {
		return err
	}
	s.mu.Lock()
	s.followers = append(s.followers, f)
	s.mu.Unlock()
	return nil
}

// start consumes the stream from sequence from on a new ordered consumer,
// and stops the previous one.
func (f *follower) start(ctx context.Context, from uint64) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
	}
	c, err := f.s.js.OrderedConsumer(ctx, f.stream.CachedInfo().Config.Name, cfg)
	if err != nil {
		return err
	}
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return errors.New("natsjs: the store is closed")
	}
	f.gen++
	gen, old := f.gen, f.cc
	f.mu.Unlock()
	cc, err := c.Consume(func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			return
		}
		seq := md.Sequence.Stream
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.gen != gen {
			return // a consumer replaced
		}
		f.s.mu.Lock()
		seen := seq <= f.p.seq
		f.s.mu.Unlock()
		if !seen { // the new consumer starts where the view was
			f.apply(seq, msg.Data())
		}
	}, jetstream.PullHeartbeat(consumerHeartbeat))
	if err != nil {
		return err
	}
	f.mu.Lock()
	if f.stopped || f.gen != gen {
		f.mu.Unlock()
		cc.Stop()
		return nil
	}
	f.cc = cc
	f.mu.Unlock()
	if old != nil {
		old.Stop()
	}
	return nil
}

// restart makes a new consumer from the view's next sequence, unless one
// is being made already. It does not block.
func (f *follower) restart() {
	if !f.restarting.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer f.restarting.Store(false)
		f.s.mu.Lock()
		from := f.p.seq + 1
		f.s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), f.s.cfg.Timeout)
		defer cancel()
		_ = f.start(ctx, from) // a failure is tried again at the next stall
	}()
}

func (f *follower) stop() {
	f.mu.Lock()
	f.stopped = true
	cc := f.cc
	f.cc = nil
	f.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
}

// sync waits until the view holds everything the streams' leaders had
// when it was called.
func (s *Store) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	for _, x := range []struct {
		st jetstream.Stream
		p  *progress
	}{{s.meetingsStream, &s.applied}, {s.attemptsStream, &s.attApp}} {
		info, err := x.st.Info(ctx)
		if err != nil {
			return unavailable(err)
		}
		if err := s.waitFor(ctx, x.p, info.State.LastSeq); err != nil {
			return err
		}
	}
	return nil
}

// waitFor waits until p reaches seq. Past stallAfter without reaching
// it, the view is stalled: its follower makes a new consumer, and again
// after each further stallAfter.
func (s *Store) waitFor(ctx context.Context, p *progress, seq uint64) error {
	var stalled *time.Timer
	for {
		s.mu.Lock()
		if p.seq >= seq {
			s.mu.Unlock()
			return nil
		}
		ch := p.wait()
		s.mu.Unlock()
		if stalled == nil {
			stalled = time.NewTimer(stallAfter)
			defer stalled.Stop()
		}
		select {
		case <-ch:
		case <-stalled.C:
			if f := s.followerOf(p); f != nil {
				f.restart()
			}
			stalled.Reset(stallAfter)
		case <-ctx.Done():
			return unavailable(fmt.Errorf("waiting for the view to reach %d: %w", seq, ctx.Err()))
		}
	}
}

// followerOf returns the follower that advances p.
func (s *Store) followerOf(p *progress) *follower {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.followers {
		if f.p == p {
			return f
		}
	}
	return nil
}

// Close stops the view; it does not close the connection.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	fs := s.followers
	certs := s.certs
	s.mu.Unlock()
	if certs != nil {
		certs.files.stop()
	}
	for _, f := range fs {
		f.stop()
	}
	for _, v := range []*kvView{s.settings, s.presets, s.endpoints, s.cursors} {
		if v != nil {
			v.stop()
		}
	}
	return nil
}

// unavailable wraps a failure to reach JetStream: the caller may retry.
func unavailable(err error) error {
	return stage.Errorf(stage.ErrUnavailable, "the cluster store is unavailable: "+err.Error())
}

func notFound(what, id string) error {
	return stage.Errorf(stage.ErrNotFound, what+" "+fmt.Sprintf("%q", id)+" not found")
}

// token returns id as one subject token or key: itself when it is made of
// letters, digits, '_' and '-', else "~" and its base64url.
func token(id string) string {
	ok := id != ""
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			ok = false
			break
		}
	}
	if ok {
		return id
	}
	return "~" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// untoken reverses token.
func untoken(t string) string {
	if b, ok := strings.CutPrefix(t, "~"); ok {
		if v, err := base64.RawURLEncoding.DecodeString(b); err == nil {
			return string(v)
		}
	}
	return t
}

// isWrongLast reports whether err is JetStream refusing a write because
// the subject's last sequence was not the one expected.
// outcomeWait is how long a write whose answer never came is looked up
// before its outcome counts as unknown: above nats-server's longest
// election timeout (9 s), and its first round trips after.
const outcomeWait = 15 * time.Second

func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}
