package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// Setting implements store.Store.
func (s *Store) Setting(ctx context.Context, key string) ([]byte, error) {
	v, _, ok := s.settings.get(token(key))
	if !ok {
		return nil, notFound("setting", key)
	}
	return v, nil
}

// SetSettingOnce implements store.Store.
func (s *Store) SetSettingOnce(ctx context.Context, key string, value []byte) ([]byte, error) {
	err := s.settings.create(ctx, token(key), value)
	if errors.Is(err, errExists) {
		if err := s.settings.sync(ctx); err != nil {
			return nil, err
		}
		return s.Setting(ctx, key)
	}
	if err != nil {
		return nil, err
	}
	return value, nil
}

// SetSetting implements store.Store.
func (s *Store) SetSetting(ctx context.Context, key string, value []byte) error {
	return s.settings.put(ctx, token(key), value)
}

// DeleteSetting implements store.Store.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	if err := s.settings.remove(ctx, token(key)); err != nil && !errors.Is(err, errMissing) {
		return err
	}
	return nil
}

// CreatePreset implements store.Store.
func (s *Store) CreatePreset(ctx context.Context, p stage.Preset) error {
	b, err := json.Marshal(p.Permissions)
	if err != nil {
		return err
	}
	if err := s.presets.create(ctx, token(p.Name), b); errors.Is(err, errExists) {
		return &store.ConflictError{Msg: "preset " + strconv.Quote(p.Name) + " already exists"}
	} else if err != nil {
		return err
	}
	return nil
}

func decodePreset(name string, b []byte) (stage.Preset, error) {
	p := stage.Preset{Name: name}
	if err := json.Unmarshal(b, &p.Permissions); err != nil {
		return p, fmt.Errorf("natsjs: preset %s: %w", name, err)
	}
	return p, nil
}

// Preset implements store.Store.
func (s *Store) Preset(ctx context.Context, name string) (stage.Preset, error) {
	b, _, ok := s.presets.get(token(name))
	if !ok {
		return stage.Preset{}, notFound("preset", name)
	}
	return decodePreset(name, b)
}

// Presets implements store.Store.
func (s *Store) Presets(ctx context.Context) ([]stage.Preset, error) {
	keys, vals := s.presets.all()
	out := make([]stage.Preset, 0, len(keys))
	for i, k := range keys {
		p, err := decodePreset(untoken(k), vals[i])
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// UpdatePreset implements store.Store.
func (s *Store) UpdatePreset(ctx context.Context, p stage.Preset) error {
	b, err := json.Marshal(p.Permissions)
	if err != nil {
		return err
	}
	if err := s.presets.update(ctx, token(p.Name), b); errors.Is(err, errMissing) {
		return notFound("preset", p.Name)
	} else if err != nil {
		return err
	}
	return nil
}

// DeletePreset implements store.Store. Whether a participant uses the
// preset is read from this node's view: a participant another node added
// a moment ago may be missed (JetStream has no transaction across a bucket
// and a stream); such a participant keeps its preset's name and loads with
// no stage permissions.
func (s *Store) DeletePreset(ctx context.Context, name string) error {
	s.mu.Lock()
	n := 0
	for _, m := range s.order {
		for _, ps := range m.order {
			if ps.p.Preset == name {
				n++
			}
		}
	}
	s.mu.Unlock()
	if n > 0 {
		return &store.ConflictError{Msg: fmt.Sprintf("preset %q is used by %d participants", name, n)}
	}
	if err := s.presets.remove(ctx, token(name)); errors.Is(err, errMissing) {
		return notFound("preset", name)
	} else if err != nil {
		return err
	}
	return nil
}

// endpointJSON is an endpoint as the webhooks bucket keeps it.
type endpointJSON struct {
	ID           string               `json:"id"`
	URL          string               `json:"url"`
	EventTypes   []string             `json:"event_types,omitempty"`
	Secrets      []string             `json:"secrets"`
	SecretsUntil time.Time            `json:"secrets_until"`
	CreatedAt    time.Time            `json:"created_at"`
	StartN       int64                `json:"start_n"`
	Status       store.EndpointStatus `json:"status"`
	StatusAt     time.Time            `json:"status_at"`
	Note         string               `json:"note,omitempty"`
}

func (s *Store) putEndpoint(ctx context.Context, e store.Endpoint, create bool) error {
	b, err := json.Marshal(endpointJSON(e))
	if err != nil {
		return err
	}
	if create {
		return s.endpoints.create(ctx, token(e.ID), b)
	}
	return s.endpoints.update(ctx, token(e.ID), b)
}

// CreateEndpoint implements store.Webhooks: the endpoint is delivered the
// entries committed after the last one the stream's leader had.
func (s *Store) CreateEndpoint(ctx context.Context, e store.Endpoint) (store.Endpoint, error) {
	if err := s.sync(ctx); err != nil {
		return e, err
	}
	s.mu.Lock()
	e.StartN = 0
	if n := len(s.log); n > 0 {
		r := s.log[n-1]
		e.StartN = r.m.events[r.i].N
	}
	s.mu.Unlock()
	if e.Status == "" {
		e.Status = store.EndpointActive
	}
	if err := s.putEndpoint(ctx, e, true); errors.Is(err, errExists) {
		return e, &store.ConflictError{Msg: "webhook endpoint " + strconv.Quote(e.ID) + " already exists"}
	} else if err != nil {
		return e, err
	}
	return e, nil
}

func decodeEndpoint(b []byte) (store.Endpoint, error) {
	var e endpointJSON
	if err := json.Unmarshal(b, &e); err != nil {
		return store.Endpoint{}, fmt.Errorf("natsjs: webhook endpoint: %w", err)
	}
	return store.Endpoint(e), nil
}

// Endpoint implements store.Webhooks.
func (s *Store) Endpoint(ctx context.Context, id string) (store.Endpoint, error) {
	b, _, ok := s.endpoints.get(token(id))
	if !ok {
		return store.Endpoint{}, notFound("webhook endpoint", id)
	}
	return decodeEndpoint(b)
}

// Endpoints implements store.Webhooks: by creation time.
func (s *Store) Endpoints(ctx context.Context) ([]store.Endpoint, error) {
	_, vals := s.endpoints.all()
	out := make([]store.Endpoint, 0, len(vals))
	for _, b := range vals {
		e, err := decodeEndpoint(b)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// UpdateEndpoint implements store.Webhooks.
func (s *Store) UpdateEndpoint(ctx context.Context, e store.Endpoint) error {
	if err := s.putEndpoint(ctx, e, false); errors.Is(err, errMissing) {
		return notFound("webhook endpoint", e.ID)
	} else if err != nil {
		return err
	}
	return nil
}

// DeleteEndpoint implements store.Webhooks: its cursors go with it.
func (s *Store) DeleteEndpoint(ctx context.Context, id string) error {
	if err := s.endpoints.remove(ctx, token(id)); errors.Is(err, errMissing) {
		return notFound("webhook endpoint", id)
	} else if err != nil {
		return err
	}
	keys, _ := s.cursors.all()
	for _, k := range keys {
		if strings.HasPrefix(k, token(id)+".") {
			if err := s.cursors.remove(ctx, k); err != nil && !errors.Is(err, errMissing) {
				return err
			}
		}
	}
	s.mu.Lock()
	delete(s.attempts, id)
	s.mu.Unlock()
	return nil
}

// cursor returns endpoint id's cursor for meeting mid.
func (s *Store) cursor(id, mid string) uint64 {
	b, _, ok := s.cursors.get(token(id) + "." + token(mid))
	if !ok {
		return 0
	}
	v, _ := strconv.ParseUint(string(b), 10, 64)
	return v
}

// PendingEvents implements store.Webhooks.
func (s *Store) PendingEvents(ctx context.Context, id string, after int64, limit int) ([]store.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := func(i int) store.Event { return s.log[i].m.events[s.log[i].i] }
	i := sort.Search(len(s.log), func(i int) bool { return at(i).N > after })
	var out []store.Event
	cursors := map[string]uint64{}
	for ; i < len(s.log) && len(out) < limit; i++ {
		e := at(i)
		c, ok := cursors[e.MeetingID]
		if !ok {
			c = s.cursor(id, e.MeetingID) // the cursors' view has a lock of its own
			cursors[e.MeetingID] = c
		}
		if e.Seq > c {
			out = append(out, e)
		}
	}
	return out, nil
}

// attemptRow is a delivery attempt with its place in the attempts stream.
type attemptRow struct {
	a store.Attempt
	n int64
}

// applyAttempts folds one message of the attempts stream into the view.
func (s *Store) applyAttempts(seq uint64, data []byte) {
	var as []store.Attempt
	err := json.Unmarshal(data, &as)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.attApp.advance(seq)
	if err != nil {
		return
	}
	for k, a := range as {
		rows := append(s.attempts[a.EndpointID], attemptRow{a: a, n: int64(seq)*perRecord + int64(k)})
		if len(rows) > maxAttemptsKept {
			rows = slices.Delete(rows, 0, len(rows)-maxAttemptsKept)
		}
		s.attempts[a.EndpointID] = rows
	}
}

// addAttempts writes attempts of endpoint id in one message.
func (s *Store) addAttempts(ctx context.Context, id string, as []store.Attempt) error {
	if len(as) == 0 {
		return nil
	}
	b, err := json.Marshal(as)
	if err != nil {
		return err
	}
	ack, err := s.js.Publish(ctx, s.cfg.Prefix+".a."+token(id), b)
	if err != nil {
		return unavailable(err)
	}
	return s.waitFor(ctx, &s.attApp, ack.Sequence)
}

// Record implements store.Webhooks. The attempts are written first, then
// the cursors: a node stopping between the two redelivers those entries,
// as SQLite does when its transaction did not commit.
func (s *Store) Record(ctx context.Context, id string, attempts []store.Attempt, delivered map[string]uint64) error {
	if _, _, ok := s.endpoints.get(token(id)); !ok {
		return nil // deleted meanwhile
	}
	if err := s.addAttempts(ctx, id, attempts); err != nil {
		return err
	}
	for mid, seq := range delivered {
		if seq <= s.cursor(id, mid) {
			continue
		}
		if err := s.cursors.put(ctx, token(id)+"."+token(mid), []byte(strconv.FormatUint(seq, 10))); err != nil {
			return err
		}
	}
	return nil
}

// AddAttempt implements store.Webhooks.
func (s *Store) AddAttempt(ctx context.Context, a store.Attempt) error {
	return s.addAttempts(ctx, a.EndpointID, []store.Attempt{a})
}

// Attempts implements store.Webhooks: newest first (of the last 10,000 of
// the endpoint); the cursor is a position, counting down.
func (s *Store) Attempts(ctx context.Context, id string, p store.Page) ([]store.Attempt, string, error) {
	before, err := store.ParseCursor(p.After)
	if err != nil {
		return nil, "", err
	}
	if before == 0 {
		before = 1<<63 - 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := s.attempts[id]
	var out []store.Attempt
	var last int64
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].n >= before {
			continue
		}
		if len(out) == p.Limit {
			return out, strconv.FormatInt(last, 10), nil
		}
		out, last = append(out, rows[i].a), rows[i].n
	}
	return out, "", nil
}

// ErrNoPrune is returned by Prune asked to delete log entries: a meeting's
// entries live in the records of its changes, which a later version will
// compact into snapshots; until then the audit log is kept for ever in
// cluster mode.
var ErrNoPrune = stage.Errorf(stage.ErrBadRequest, "the audit log cannot be pruned in cluster mode yet")

// Prune implements store.Webhooks: attempts older than attemptsBefore
// leave the view (the stream drops them after 30 days by itself).
func (s *Store) Prune(ctx context.Context, logBefore, attemptsBefore time.Time) (entries, attempts int64, err error) {
	s.mu.Lock()
	for id, rows := range s.attempts {
		k := 0
		for k < len(rows) && rows[k].a.At.Before(attemptsBefore) {
			k++
		}
		attempts += int64(k)
		s.attempts[id] = rows[k:]
	}
	s.mu.Unlock()
	if !logBefore.IsZero() {
		return 0, attempts, ErrNoPrune
	}
	return 0, attempts, nil
}
