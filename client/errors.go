package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cocmd/cocmd/stage"
)

// One error per spec code; test with errors.Is.
var (
	ErrStageDisabled      = stage.ErrStageDisabled
	ErrPermissionDenied   = stage.ErrPermissionDenied
	ErrInvalidStageStatus = stage.ErrInvalidStageStatus
	ErrNoRequestToCancel  = stage.ErrNoRequestToCancel
	ErrNotFound           = stage.ErrNotFound
	ErrStageFull          = stage.ErrStageFull
	ErrBadRequest         = stage.ErrBadRequest
	ErrUnauthenticated    = stage.ErrUnauthenticated
	ErrRateLimited        = stage.ErrRateLimited
	// ErrUnavailable: the server could not make the change durable (its
	// store failed) and changed nothing; retry later.
	ErrUnavailable = stage.ErrUnavailable
)

// Errors of the client itself.
var (
	// ErrClosed: the client was closed, or stopped for good.
	ErrClosed = errors.New("client: closed")
	// ErrConnectionLost: the connection dropped while a call was in
	// flight; whether the server applied it is unknown (the state after
	// reconnecting tells).
	ErrConnectionLost = errors.New("client: connection lost during the call")
	// ErrReplaced: a newer connection with the same token took over.
	ErrReplaced = errors.New("client: replaced by a newer connection with the same token")
	// ErrRemoved: the participant was removed from the meeting.
	ErrRemoved = errors.New("client: removed from the meeting")
	// ErrMeetingEnded: the meeting ended.
	ErrMeetingEnded = errors.New("client: the meeting has ended")
)

// UserError is the failure of one user id in a batch call.
type UserError struct {
	UserID string
	Err    error
}

// Error implements error.
func (e *UserError) Error() string { return e.UserID + ": " + e.Err.Error() }

// Unwrap returns the error of the user id, which carries its code.
func (e *UserError) Unwrap() error { return e.Err }

// BatchError is returned by GrantAccess, DenyAccess and Kick when some user
// ids failed; the others succeeded. errors.Is matches any of the failures'
// codes.
type BatchError struct {
	Failed []*UserError
}

// Error implements error.
func (e *BatchError) Error() string {
	parts := make([]string, len(e.Failed))
	for i, f := range e.Failed {
		parts[i] = f.Error()
	}
	return fmt.Sprintf("%d user id(s) failed: %s", len(e.Failed), strings.Join(parts, "; "))
}

// Unwrap returns the per-id errors.
func (e *BatchError) Unwrap() []error {
	out := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		out[i] = f
	}
	return out
}
