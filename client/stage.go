package client

import (
	"context"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// Stage is the meeting's stage as the seed document names it. Each method
// returns once the server has answered; the events the call caused have been
// queued on Meeting.Events by then.
type Stage struct {
	m *Meeting
}

// Status returns this participant's stage status.
func (s *Stage) Status() stage.Status {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.m.self.Status
}

// Requests returns the pending requests as last told (hosts only; nil for
// others), oldest first.
func (s *Stage) Requests() []stage.Request {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return clone(s.m.requests)
}

// GetAccessRequests fetches the pending requests, oldest first. It needs
// accept_stage_requests.
func (s *Stage) GetAccessRequests(ctx context.Context) ([]stage.Request, error) {
	var r protocol.AccessRequests
	if err := s.m.call(ctx, protocol.MethodGetAccessRequests, nil, &r); err != nil {
		return nil, err
	}
	return r.Requests, nil
}

// RequestAccess asks the hosts for the stage (with stage_access ALLOWED it
// is accepted at once).
func (s *Stage) RequestAccess(ctx context.Context) error {
	return s.m.call(ctx, protocol.MethodRequestAccess, nil, nil)
}

// CancelRequestAccess withdraws a pending request.
func (s *Stage) CancelRequestAccess(ctx context.Context) error {
	return s.m.call(ctx, protocol.MethodCancelRequestAccess, nil, nil)
}

// Join goes on stage: allowed once accepted, or directly with stage_access
// ALLOWED.
func (s *Stage) Join(ctx context.Context) error {
	return s.m.call(ctx, protocol.MethodJoin, nil, nil)
}

// Leave leaves the stage, or declines an invitation.
func (s *Stage) Leave(ctx context.Context) error {
	return s.m.call(ctx, protocol.MethodLeave, nil, nil)
}

// GrantAccess accepts the requests of, or invites, the users. It needs
// accept_stage_requests. If some user ids fail, the others still succeed
// and the error is a *BatchError.
func (s *Stage) GrantAccess(ctx context.Context, userIDs ...string) error {
	return s.batch(ctx, protocol.MethodGrantAccess, userIDs)
}

// DenyAccess rejects the requests of, or withdraws the invitations of, the
// users. It needs accept_stage_requests.
func (s *Stage) DenyAccess(ctx context.Context, userIDs ...string) error {
	return s.batch(ctx, protocol.MethodDenyAccess, userIDs)
}

// Kick takes the users off the stage. It needs kick_participant.
func (s *Stage) Kick(ctx context.Context, userIDs ...string) error {
	return s.batch(ctx, protocol.MethodKick, userIDs)
}

func (s *Stage) batch(ctx context.Context, method string, userIDs []string) error {
	var r protocol.BatchResult
	if err := s.m.call(ctx, method, protocol.UserIDs{UserIDs: userIDs}, &r); err != nil {
		return err
	}
	var be BatchError
	for _, u := range r.Results {
		if u.Error != nil {
			be.Failed = append(be.Failed, &UserError{UserID: u.UserID, Err: u.Error.Err()})
		}
	}
	if len(be.Failed) > 0 {
		return &be
	}
	return nil
}
