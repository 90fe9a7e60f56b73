package meeting

import (
	"context"
	"time"

	"github.com/cocmd/cocmd/stage"
)

// The stage methods, one per operation. A connected participant calls them
// through its Client; the application's back end calls the moderation ones
// through the Registry (as stage.System). Each runs the stage rule on the
// meeting's owner, makes the outcome durable, and only then tells anyone.

// Ping waits until the meeting has run everything c asked for before it.
func (c *Client) Ping(ctx context.Context) error {
	if c.proxy != nil {
		_, err := c.callRemote(ctx, callPing, nil)
		return err
	}
	return c.call(ctx, func(*Meeting) error { return nil })
}

// AccessRequests returns the pending requests, oldest first, if c's
// participant may accept them.
func (c *Client) AccessRequests(ctx context.Context) ([]stage.Request, error) {
	if c.proxy != nil {
		resp, err := c.callRemote(ctx, callRequests, nil)
		if err != nil {
			return nil, err
		}
		return nonNil(resp.Requests), nil
	}
	var reqs []stage.Request
	err := c.call(ctx, func(m *Meeting) error {
		var err error
		reqs, err = m.st.AccessRequests(c.ParticipantID)
		reqs = nonNil(reqs)
		return err
	})
	return reqs, err
}

// RequestAccess asks for the stage; it returns the participant's status
// after the call.
func (c *Client) RequestAccess(ctx context.Context) (stage.Status, error) {
	if c.proxy != nil {
		return c.selfRemote(ctx, callRequest)
	}
	return c.self(ctx, func(s *stage.State, pid string, now time.Time) (stage.Outcome, error) {
		return s.RequestAccess(pid, now)
	})
}

// CancelRequestAccess withdraws the participant's pending request.
func (c *Client) CancelRequestAccess(ctx context.Context) (stage.Status, error) {
	if c.proxy != nil {
		return c.selfRemote(ctx, callCancel)
	}
	return c.self(ctx, func(s *stage.State, pid string, _ time.Time) (stage.Outcome, error) {
		return s.CancelRequestAccess(pid)
	})
}

// JoinStage puts the participant on the stage (stage.join).
func (c *Client) JoinStage(ctx context.Context) (stage.Status, error) {
	if c.proxy != nil {
		return c.selfRemote(ctx, callJoin)
	}
	return c.self(ctx, func(s *stage.State, pid string, _ time.Time) (stage.Outcome, error) {
		return s.Join(pid)
	})
}

// LeaveStage takes the participant off the stage, or declines its
// invitation (stage.leave). It stays in the meeting.
func (c *Client) LeaveStage(ctx context.Context) (stage.Status, error) {
	if c.proxy != nil {
		return c.selfRemote(ctx, callLeave)
	}
	return c.self(ctx, func(s *stage.State, pid string, _ time.Time) (stage.Outcome, error) {
		return s.Leave(pid)
	})
}

// GrantAccess accepts the requests of, or invites, the users userIDs: one
// result per user id, in order.
func (c *Client) GrantAccess(ctx context.Context, userIDs []string) ([]stage.Result, error) {
	if c.proxy != nil {
		return c.moderateRemote(ctx, callGrant, userIDs)
	}
	return c.moderate(ctx, userIDs, (*stage.State).GrantAccess)
}

// DenyAccess rejects the requests of, or withdraws the invitations of, the
// users userIDs.
func (c *Client) DenyAccess(ctx context.Context, userIDs []string) ([]stage.Result, error) {
	if c.proxy != nil {
		return c.moderateRemote(ctx, callDeny, userIDs)
	}
	return c.moderate(ctx, userIDs, (*stage.State).DenyAccess)
}

// Kick takes the users userIDs off the stage, or withdraws their
// acceptance.
func (c *Client) Kick(ctx context.Context, userIDs []string) ([]stage.Result, error) {
	if c.proxy != nil {
		return c.moderateRemote(ctx, callKick, userIDs)
	}
	return c.moderate(ctx, userIDs, (*stage.State).Kick)
}

// GrantAccess is Client.GrantAccess on behalf of the application's back end
// in meeting meetingID.
func (r *Registry) GrantAccess(ctx context.Context, meetingID string, userIDs []string) ([]stage.Result, error) {
	return r.moderate(ctx, meetingID, userIDs, (*stage.State).GrantAccess)
}

// DenyAccess is Client.DenyAccess on behalf of the application's back end.
func (r *Registry) DenyAccess(ctx context.Context, meetingID string, userIDs []string) ([]stage.Result, error) {
	return r.moderate(ctx, meetingID, userIDs, (*stage.State).DenyAccess)
}

// Kick is Client.Kick on behalf of the application's back end.
func (r *Registry) Kick(ctx context.Context, meetingID string, userIDs []string) ([]stage.Result, error) {
	return r.moderate(ctx, meetingID, userIDs, (*stage.State).Kick)
}

// selfRule is a stage method a participant calls on itself.
type selfRule func(s *stage.State, pid string, now time.Time) (stage.Outcome, error)

// batchRule is a moderation method: GrantAccess, DenyAccess or Kick of
// stage.State.
type batchRule func(s *stage.State, caller string, userIDs []string) (stage.Outcome, error)

func (c *Client) self(ctx context.Context, rule selfRule) (stage.Status, error) {
	var st stage.Status
	err := c.call(ctx, func(m *Meeting) error {
		o, err := rule(m.st, c.ParticipantID, m.now())
		if err != nil {
			return err
		}
		if err := m.commit(o, byParticipant(c.ParticipantID)); err != nil {
			return err
		}
		p, _ := m.st.Participant(c.ParticipantID)
		st = p.Status
		return nil
	})
	return st, err
}

func (c *Client) moderate(ctx context.Context, userIDs []string, rule batchRule) ([]stage.Result, error) {
	var res []stage.Result
	err := c.call(ctx, func(m *Meeting) error {
		var err error
		res, err = m.moderate(c.ParticipantID, userIDs, rule)
		return err
	})
	return res, err
}

func (r *Registry) moderate(ctx context.Context, meetingID string, userIDs []string, rule batchRule) ([]stage.Result, error) {
	var res []stage.Result
	err := r.do(ctx, meetingID, func(m *Meeting) error {
		var err error
		res, err = m.moderate(stage.System, userIDs, rule)
		return err
	})
	return res, err
}

func (m *Meeting) moderate(caller string, userIDs []string, rule batchRule) ([]stage.Result, error) {
	o, err := rule(m.st, caller, userIDs)
	if err != nil {
		return nil, err
	}
	by := byParticipant(caller)
	if caller == stage.System {
		by = byAPI
	}
	if err := m.commit(o, by); err != nil {
		return nil, err
	}
	return o.Results, nil
}

func (c *Client) selfRemote(ctx context.Context, method string) (stage.Status, error) {
	resp, err := c.callRemote(ctx, method, nil)
	if err != nil {
		return 0, err
	}
	return resp.Status, nil
}

func (c *Client) moderateRemote(ctx context.Context, method string, userIDs []string) ([]stage.Result, error) {
	resp, err := c.callRemote(ctx, method, userIDs)
	if err != nil {
		return nil, err
	}
	return fromWireResults(resp.Results), nil
}
