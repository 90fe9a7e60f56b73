package server

import (
	"context"
	"time"

	"golang.org/x/text/unicode/norm"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// callTimeout bounds how long one realtime call may wait for its meeting
// (and the meeting for its store) before it fails with UNAVAILABLE.
const callTimeout = 10 * time.Second

// method is how the server serves one realtime method: it turns the params
// protocol.DecodeRequest checked into a typed call on the meeting (or on the
// connection's media session) and the result into its wire form. This table
// and the REST handlers are the only places where the wire meets the
// domain.
type method struct {
	run func(ctx context.Context, w *wsConn, params any) (any, error)
	// selfChange: the method changes the caller's own status, which
	// everyone is told about; such calls have a rate limit of their own.
	selfChange bool
}

var methods = map[string]method{
	protocol.MethodPing: {run: func(ctx context.Context, w *wsConn, _ any) (any, error) {
		return protocol.Empty{}, w.c.Ping(ctx)
	}},
	protocol.MethodGetAccessRequests: {run: func(ctx context.Context, w *wsConn, _ any) (any, error) {
		reqs, err := w.c.AccessRequests(ctx)
		if err != nil {
			return nil, err
		}
		return protocol.AccessRequests{Requests: reqs}, nil
	}},
	protocol.MethodRequestAccess:       {run: selfCall((*meeting.Client).RequestAccess), selfChange: true},
	protocol.MethodCancelRequestAccess: {run: selfCall((*meeting.Client).CancelRequestAccess), selfChange: true},
	protocol.MethodJoin:                {run: selfCall((*meeting.Client).JoinStage), selfChange: true},
	protocol.MethodLeave:               {run: selfCall((*meeting.Client).LeaveStage), selfChange: true},
	protocol.MethodGrantAccess:         {run: batchCall((*meeting.Client).GrantAccess)},
	protocol.MethodDenyAccess:          {run: batchCall((*meeting.Client).DenyAccess)},
	protocol.MethodKick:                {run: batchCall((*meeting.Client).Kick)},

	protocol.MethodRefreshToken: {run: func(_ context.Context, w *wsConn, params any) (any, error) {
		c, err := w.s.tokens.Verify(params.(protocol.TokenParams).Token)
		if err != nil {
			return nil, err
		}
		if err := w.refresh(c); err != nil {
			return nil, err
		}
		return protocol.TokenRefreshed{ExpiresAt: time.Unix(c.Expires, 0).UTC(), Media: w.s.mediaConfig(w.host, c)}, nil
	}},

	protocol.MethodPublish: {run: func(_ context.Context, w *wsConn, params any) (any, error) {
		sess, err := w.mediaSession()
		if err != nil {
			return nil, err
		}
		p := params.(protocol.PublishParams)
		answer, err := sess.Publish(p.SDP, p.Sources)
		if err != nil {
			return nil, err
		}
		return protocol.SDPParams{SDP: answer}, nil
	}},
	protocol.MethodUnpublish: {run: func(_ context.Context, w *wsConn, _ any) (any, error) {
		sess, err := w.mediaSession()
		if err != nil {
			return nil, err
		}
		sess.Unpublish()
		return protocol.Empty{}, nil
	}},
	protocol.MethodSubscribe: {run: func(_ context.Context, w *wsConn, _ any) (any, error) {
		sess, err := w.mediaSession()
		if err != nil {
			return nil, err
		}
		return protocol.Empty{}, sess.Subscribe()
	}},
	protocol.MethodAnswer: {run: func(_ context.Context, w *wsConn, params any) (any, error) {
		sess, err := w.mediaSession()
		if err != nil {
			return nil, err
		}
		return protocol.Empty{}, sess.Answer(params.(protocol.SDPParams).SDP)
	}},
	protocol.MethodRestartICE: {run: func(_ context.Context, w *wsConn, _ any) (any, error) {
		sess, err := w.mediaSession()
		if err != nil {
			return nil, err
		}
		return protocol.Empty{}, sess.RestartICE()
	}},
	protocol.MethodSetTrackSize: {run: func(_ context.Context, w *wsConn, params any) (any, error) {
		sess, err := w.mediaSession()
		if err != nil {
			return nil, err
		}
		p := params.(protocol.TrackSizeParams)
		return protocol.Empty{}, sess.SetTrackSize(p.TrackID, p.Width, p.Height)
	}},
	protocol.MethodCandidate: {run: func(_ context.Context, w *wsConn, params any) (any, error) {
		sess, err := w.mediaSession()
		if err != nil {
			return nil, err
		}
		return protocol.Empty{}, sess.AddCandidate(params.(protocol.CandidateParams))
	}},
}

// selfCall serves a stage method the caller makes on itself.
func selfCall(call func(*meeting.Client, context.Context) (stage.Status, error)) func(context.Context, *wsConn, any) (any, error) {
	return func(ctx context.Context, w *wsConn, _ any) (any, error) {
		st, err := call(w.c, ctx)
		if err != nil {
			return nil, err
		}
		return protocol.StatusResult{Status: st}, nil
	}
}

// batchCall serves a moderation method.
func batchCall(call func(*meeting.Client, context.Context, []string) ([]stage.Result, error)) func(context.Context, *wsConn, any) (any, error) {
	return func(ctx context.Context, w *wsConn, params any) (any, error) {
		res, err := call(w.c, ctx, nfc(params.(protocol.UserIDs).UserIDs))
		if err != nil {
			return nil, err
		}
		return batchResult(res), nil
	}
}

// nfc normalizes user ids as they were stored (NFC), so that another
// encoding of the same text finds its user.
func nfc(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = norm.NFC.String(id)
	}
	return out
}

// batchResult is the wire form of a moderation method's results, for the
// realtime protocol and REST alike.
func batchResult(res []stage.Result) protocol.BatchResult {
	out := protocol.BatchResult{Results: make([]protocol.UserResult, len(res))}
	for i, r := range res {
		out.Results[i].UserID = r.UserID
		if r.Err != nil {
			out.Results[i].Error = protocol.ErrorFrom(r.Err)
		}
	}
	return out
}

// moderation maps the REST stage actions to the meeting's methods.
var moderation = map[string]func(r *meeting.Registry, ctx context.Context, meetingID string, userIDs []string) ([]stage.Result, error){
	"grant": (*meeting.Registry).GrantAccess,
	"deny":  (*meeting.Registry).DenyAccess,
	"kick":  (*meeting.Registry).Kick,
}
