package meeting

import (
	"context"
	"errors"
	"sync"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// memStore is a hand-written in-memory Store. fail, when set, is the error
// of every write until it is cleared; the writes that failed change
// nothing.
type memStore struct {
	mu       sync.Mutex
	m        store.Meeting
	parts    []store.Participant
	presets  []stage.Preset // beside the built-in ones
	saved    int
	statuses map[string]store.Status // the last saved status of each participant
	events   []store.Event           // the log, as written
	fail     error
}

// errDiskFull is the failure tests inject.
var errDiskFull = errors.New("disk I/O error (SQLITE_FULL)")

func (s *memStore) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *memStore) status(pid string) (store.Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.statuses[pid]
	return st, ok
}

func (s *memStore) Meeting(context.Context, string) (store.Meeting, error) { return s.m, nil }
func (s *memStore) UpdateMeeting(_ context.Context, m store.Meeting, ev []store.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.m = m
	s.events = append(s.events, ev...)
	return nil
}
func (s *memStore) AppendEvents(_ context.Context, _ string, ev []store.Event, done func(error)) {
	s.mu.Lock()
	if s.fail == nil {
		s.events = append(s.events, ev...)
	}
	err := s.fail
	s.mu.Unlock()
	if done != nil {
		done(err)
	}
}
func (s *memStore) LastEventSeq(context.Context, string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.events) == 0 {
		return 0, nil
	}
	return s.events[len(s.events)-1].Seq, nil
}
func (s *memStore) log() []store.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.Event(nil), s.events...)
}
func (s *memStore) Presets(context.Context) ([]stage.Preset, error) {
	return stage.BuiltinPresets(), nil
}
func (s *memStore) AddParticipant(_ context.Context, p store.Participant) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail
}
func (s *memStore) SetParticipantPreset(_ context.Context, _, _, _ string, st []store.Status, ev []store.Event) error {
	return s.SaveStatuses(context.Background(), "", st, ev)
}
func (s *memStore) RemoveParticipant(_ context.Context, _, _ string, ev []store.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.events = append(s.events, ev...)
	return nil
}
func (s *memStore) SaveStatuses(_ context.Context, _ string, st []store.Status, ev []store.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.saved++
	if s.statuses == nil {
		s.statuses = map[string]store.Status{}
	}
	for _, r := range st {
		s.statuses[r.ParticipantID] = r
	}
	s.events = append(s.events, ev...)
	return nil
}
func (s *memStore) AllParticipants(context.Context, string) ([]store.Participant, error) {
	return s.parts, nil
}
func (s *memStore) Preset(_ context.Context, name string) (stage.Preset, error) {
	for _, p := range append(stage.BuiltinPresets(), s.presets...) {
		if p.Name == name {
			return p, nil
		}
	}
	return stage.Preset{}, stage.ErrNotFound
}
