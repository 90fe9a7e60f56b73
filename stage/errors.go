package stage

import "errors"

// Code is a stable error code, the same in REST, the realtime protocol and
// both SDKs.
type Code string

// The error codes of the spec.
const (
	CodeStageDisabled      Code = "STAGE_DISABLED"
	CodePermissionDenied   Code = "PERMISSION_DENIED"
	CodeInvalidStageStatus Code = "INVALID_STAGE_STATUS"
	CodeNoRequestToCancel  Code = "NO_REQUEST_TO_CANCEL"
	CodeNotFound           Code = "NOT_FOUND"
	CodeStageFull          Code = "STAGE_FULL"
	CodeBadRequest         Code = "BAD_REQUEST"
	CodeUnauthenticated    Code = "UNAUTHENTICATED"
	CodeRateLimited        Code = "RATE_LIMITED"
	CodeUnavailable        Code = "UNAVAILABLE"
	CodeInternal           Code = "INTERNAL"
)

// Error is an error that carries a spec code. The exported Err* values are
// the sentinels; errors made with Errorf wrap one of them, so callers test
// with errors.Is(err, stage.ErrStageFull).
type Error struct {
	Code Code
	msg  string
}

// Error implements error.
func (e *Error) Error() string { return e.msg }

// The sentinel error of each code.
var (
	ErrStageDisabled      = &Error{CodeStageDisabled, "stage is disabled"}
	ErrPermissionDenied   = &Error{CodePermissionDenied, "permission denied"}
	ErrInvalidStageStatus = &Error{CodeInvalidStageStatus, "action invalid for stage status"}
	ErrNoRequestToCancel  = &Error{CodeNoRequestToCancel, "no request to cancel"}
	ErrNotFound           = &Error{CodeNotFound, "not found"}
	ErrStageFull          = &Error{CodeStageFull, "stage is full"}
	ErrBadRequest         = &Error{CodeBadRequest, "bad request"}
	ErrUnauthenticated    = &Error{CodeUnauthenticated, "unauthenticated"}
	ErrRateLimited        = &Error{CodeRateLimited, "rate limited"}
	ErrUnavailable        = &Error{CodeUnavailable, "unavailable"}
	ErrInternal           = &Error{CodeInternal, "internal error"}
)

var byCode = map[Code]*Error{}

func init() {
	for _, e := range []*Error{ErrStageDisabled, ErrPermissionDenied, ErrInvalidStageStatus,
		ErrNoRequestToCancel, ErrNotFound, ErrStageFull, ErrBadRequest, ErrUnauthenticated,
		ErrRateLimited, ErrUnavailable, ErrInternal} {
		byCode[e.Code] = e
	}
}

// detailed is an error with its own message that wraps a sentinel.
type detailed struct {
	sentinel *Error
	msg      string
}

// Error implements error.
func (d *detailed) Error() string { return d.msg }

// Unwrap returns the sentinel.
func (d *detailed) Unwrap() error { return d.sentinel }

// Errorf returns an error with message msg that wraps sentinel, so that
// errors.Is(err, sentinel) holds and CodeOf(err) is sentinel's code.
func Errorf(sentinel *Error, msg string) error {
	return &detailed{sentinel: sentinel, msg: msg}
}

// CodeOf returns the code that err carries, or CodeInternal if it carries
// none. It is the one place where errors become wire codes.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorOf returns the sentinel of code c, or nil for an unknown code. The
// SDKs use it to turn a wire code back into an error callers can test.
func ErrorOf(c Code) *Error { return byCode[c] }
