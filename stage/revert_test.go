package stage

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

// snapshot is a deep copy of everything a State holds, for comparing.
type snapshot struct {
	Parts   map[string]Participant
	Pending []string
	Active  []string
	LastSeq uint64
}

func snap(s *State) snapshot {
	out := snapshot{Parts: map[string]Participant{}, LastSeq: s.lastSeq}
	for id, p := range s.byID {
		out.Parts[id] = *p
		if s.byUser[p.UserID] != p {
			panic("byUser out of step for " + id)
		}
	}
	for _, p := range s.pending {
		out.Pending = append(out.Pending, p.ID)
	}
	for id := range s.byID {
		if _, ok := s.active[id]; ok {
			out.Active = append(out.Active, id)
		}
	}
	slices.Sort(out.Active)
	return out
}

// Reverting any outcome restores the state exactly: statuses, the pending
// list in order, request times and sequence numbers, permissions. Every
// command is tried from a state with several pending requests, so that
// positions in the middle of the list are restored too.
func TestState_Revert(t *testing.T) {
	host := BuiltinPresets()[0].Permissions
	build := func() *State {
		s := New(Config{Type: Webinar, MaxOnStage: 3, RequestTTL: time.Minute})
		s.Add(Participant{ID: "h", UserID: "hu", Perms: host})
		for i, st := range []Status{Requested, Requested, Requested, Accepted, OnStage, OffStage} {
			p := Participant{ID: fmt.Sprint("p", i), UserID: fmt.Sprint("u", i), Perms: perms(CanRequest), Status: st}
			if st == Requested {
				p.RequestedAt = t0.Add(time.Duration(i) * time.Second)
			}
			if err := s.Add(p); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	commands := map[string]func(s *State) (Outcome, error){
		"request":       func(s *State) (Outcome, error) { return s.RequestAccess("p5", t0.Add(time.Hour)) },
		"cancel middle": func(s *State) (Outcome, error) { return s.CancelRequestAccess("p1") },
		"join":          func(s *State) (Outcome, error) { return s.Join("p3") },
		"leave":         func(s *State) (Outcome, error) { return s.Leave("p4") },
		"grant several": func(s *State) (Outcome, error) { return s.GrantAccess("h", []string{"u1", "u0", "u5", "u2"}) },
		"deny":          func(s *State) (Outcome, error) { return s.DenyAccess("h", []string{"u2", "u0", "u3"}) },
		"kick":          func(s *State) (Outcome, error) { return s.Kick("h", []string{"u4", "u3"}) },
		"depart":        func(s *State) (Outcome, error) { return s.Depart("p1"), nil },
		"expire":        func(s *State) (Outcome, error) { return s.Expire(t0.Add(time.Minute + time.Second)), nil },
		"permissions":   func(s *State) (Outcome, error) { return s.SetPermissions("p4", Permissions{}) },
		"permissions req": func(s *State) (Outcome, error) {
			return s.SetPermissions("p1", Permissions{StageEnabled: true, StageAccess: NotAllowed})
		},
	}
	for name, cmd := range commands {
		t.Run(name, func(t *testing.T) {
			s := build()
			before := snap(s)
			o, err := cmd(s)
			if err != nil {
				t.Fatal(err)
			}
			if reflect.DeepEqual(snap(s), before) {
				t.Fatal("the command changed nothing: the test proves nothing")
			}
			s.Revert(o)
			if after := snap(s); !reflect.DeepEqual(after, before) {
				t.Errorf("after Revert\n got %+v\nwant %+v", after, before)
			}
			// The state works on: a new request lands after the old ones.
			if _, err := s.RequestAccess("p5", t0.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if r := s.Requests(); r[len(r)-1].ParticipantID != "p5" {
				t.Errorf("after Revert, a new request is not last: %v", r)
			}
		})
	}
}
