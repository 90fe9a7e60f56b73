package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvView is a bucket's latest values, kept up to date by a watcher.
type kvView struct {
	kv     jetstream.KeyValue
	stream jetstream.Stream
	w      jetstream.KeyWatcher

	mu   sync.Mutex
	vals map[string]kvEntry
	rev  progress
	done chan struct{}
}

type kvEntry struct {
	val []byte
	rev uint64
	at  time.Time // when it was written
}

// watch starts a view of kv and waits for its current values.
func watch(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) (*kvView, error) {
	st, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		return nil, err
	}
	v := &kvView{kv: kv, stream: st, w: w, vals: map[string]kvEntry{}, done: make(chan struct{})}
	ready := make(chan struct{})
	go v.run(ready)
	select {
	case <-ready:
	case <-ctx.Done():
		v.stop()
		return nil, fmt.Errorf("natsjs: reading bucket %s: %w", kv.Bucket(), ctx.Err())
	}
	return v, nil
}

func (v *kvView) run(ready chan struct{}) {
	defer close(v.done)
	for e := range v.w.Updates() {
		if e == nil {
			close(ready)
			continue
		}
		v.mu.Lock()
		if e.Operation() == jetstream.KeyValuePut {
			v.vals[e.Key()] = kvEntry{val: e.Value(), rev: e.Revision(), at: e.Created()}
		} else {
			delete(v.vals, e.Key())
		}
		v.rev.advance(e.Revision())
		v.mu.Unlock()
	}
}

func (v *kvView) stop() {
	v.w.Stop()
}

// get returns key's value and revision.
func (v *kvView) get(key string) ([]byte, uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.vals[key]
	return e.val, e.rev, ok
}

// all returns every key and value, by key.
func (v *kvView) all() ([]string, [][]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	keys := make([]string, 0, len(v.vals))
	for k := range v.vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = v.vals[k].val
	}
	return keys, vals
}

// waitRev waits until the view has applied revision rev.
func (v *kvView) waitRev(ctx context.Context, rev uint64) error {
	for {
		v.mu.Lock()
		if v.rev.seq >= rev {
			v.mu.Unlock()
			return nil
		}
		ch := v.rev.wait()
		v.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return unavailable(fmt.Errorf("waiting for bucket %s to reach %d: %w", v.kv.Bucket(), rev, ctx.Err()))
		}
	}
}

// sync waits until the view holds what the bucket's leader has.
func (v *kvView) sync(ctx context.Context) error {
	info, err := v.stream.Info(ctx)
	if err != nil {
		return unavailable(err)
	}
	return v.waitRev(ctx, info.State.LastSeq)
}

// put writes key and waits for the view to have it.
func (v *kvView) put(ctx context.Context, key string, val []byte) error {
	rev, err := v.kv.Put(ctx, key, val)
	if err != nil {
		return unavailable(err)
	}
	return v.waitRev(ctx, rev)
}

// create writes key unless it exists (errExists).
func (v *kvView) create(ctx context.Context, key string, val []byte) error {
	rev, err := v.kv.Create(ctx, key, val)
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLast(err) {
		return errExists
	}
	if err != nil {
		return unavailable(err)
	}
	return v.waitRev(ctx, rev)
}

// update replaces key's value if it exists (else errMissing), retrying
// once when the view was behind.
func (v *kvView) update(ctx context.Context, key string, val []byte) error {
	for try := 0; ; try++ {
		_, rev, ok := v.get(key)
		if !ok {
			if try > 0 {
				return errMissing
			}
			if err := v.sync(ctx); err != nil {
				return err
			}
			continue
		}
		nrev, err := v.kv.Update(ctx, key, val, rev)
		if isWrongLast(err) && try == 0 {
			if err := v.sync(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return unavailable(err)
		}
		return v.waitRev(ctx, nrev)
	}
}

// remove deletes key if it exists (else errMissing).
func (v *kvView) remove(ctx context.Context, key string) error {
	if _, _, ok := v.get(key); !ok {
		if err := v.sync(ctx); err != nil {
			return err
		}
		if _, _, ok := v.get(key); !ok {
			return errMissing
		}
	}
	if err := v.kv.Delete(ctx, key); err != nil {
		return unavailable(err)
	}
	return v.sync(ctx)
}

var (
	errExists  = errors.New("natsjs: key exists")
	errMissing = errors.New("natsjs: no such key")
)
