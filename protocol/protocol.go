// Package protocol defines the realtime protocol between a cocmd server and
// its clients: one Go struct per message and the codec. The protocol is
// described for people in docs/protocol.md; this package holds no state.
//
// Version 1. Every WebSocket text message is one JSON object. A client sends
// Requests; the server sends Messages: one "welcome" after the connection is
// accepted, a "response" for every request, and "event"s in one order per
// meeting (their seq grows by one per meeting event; a client sees the
// subsequence meant for it). Unknown fields in an envelope are ignored;
// unknown fields in a request's params are refused, since they would be lost.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cocmd/cocmd/stage"
)

// Version is the protocol version this package speaks.
const Version = 1

// Subprotocol is the WebSocket subprotocol name of Version.
const Subprotocol = "cocmd.v1"

// TokenSubprotocolPrefix marks the WebSocket subprotocol entry that
// carries a browser's participant token ("cocmd.token.v1.…"), offered
// beside Subprotocol: a browser's WebSocket cannot set an Authorization
// header, and a token in the URL would end up in access logs. The server
// answers with Subprotocol only.
const TokenSubprotocolPrefix = "cocmd.token."

// MaxMessageSize is the largest message either side accepts, in bytes.
const MaxMessageSize = 64 << 10

// Methods a client may call.
const (
	MethodPing                = "ping"
	MethodGetAccessRequests   = "stage.getAccessRequests"
	MethodRequestAccess       = "stage.requestAccess"
	MethodCancelRequestAccess = "stage.cancelRequestAccess"
	MethodGrantAccess         = "stage.grantAccess"
	MethodDenyAccess          = "stage.denyAccess"
	MethodJoin                = "stage.join"
	MethodLeave               = "stage.leave"
	MethodKick                = "stage.kick"
	// MethodRefreshToken hands the connection a fresh token of the same
	// participant (TokenParams) before its own expires.
	MethodRefreshToken = "auth.refresh"
)

// Message types sent by the server.
const (
	TypeWelcome  = "welcome"
	TypeResponse = "response"
	TypeEvent    = "event"
)

// Event names, as in the spec.
const (
	EventStageStatusUpdate        = "stageStatusUpdate"
	EventStageRequestApproved     = "stageRequestApproved"
	EventStageRequestRejected     = "stageRequestRejected"
	EventRemovedFromStage         = "removedFromStage"
	EventNewStageRequest          = "newStageRequest"
	EventStageAccessRequestUpdate = "stageAccessRequestUpdate"
	EventPeerStageStatusUpdate    = "peerStageStatusUpdate"
	EventParticipantJoined        = "participantJoined"
	EventParticipantLeft          = "participantLeft"
	EventPermissionsUpdate        = "permissionsUpdate"
	EventMeetingUpdate            = "meetingUpdate"
	EventParticipantCount         = "participantCount"
	// EventTokenExpiring tells a connection that its token expires soon
	// (TokenExpiring): refresh it (MethodRefreshToken) or the connection
	// is closed with CloseUnauthenticated then.
	EventTokenExpiring = "tokenExpiring"
)

// WebSocket close codes the server uses, with the reason as close text.
const (
	CloseReplaced        = 4001 // a newer connection with the same token took over; do not reconnect
	CloseSlowConsumer    = 4002 // the client fell too far behind; reconnect
	CloseRemoved         = 4003 // the participant was removed from the meeting; do not reconnect
	CloseMeetingEnded    = 4004 // the meeting ended; do not reconnect
	CloseUnauthenticated = 4005 // the token expired or its key was retired; reconnect only with a fresh token
	CloseGoingAway       = 1001 // the server is shutting down; reconnect
	ClosePolicy          = 1008 // a protocol violation
	CloseMessageTooBig   = 1009 // a message over MaxMessageSize
)

// Request is a call from the client. ID is chosen by the client, non-zero,
// and echoed in the Response.
type Request struct {
	ID     uint64          `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

// UserIDs is the params of grantAccess, denyAccess and kick.
type UserIDs struct {
	UserIDs []string `json:"user_ids"`
}

// TokenParams is the params of auth.refresh.
type TokenParams struct {
	Token string `json:"token"`
}

// TokenExpiring is tokenExpiring, and the result of auth.refresh: when
// the connection's token expires.
type TokenExpiring struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// TokenRefreshed is the result of auth.refresh: when the new token
// expires, and the connection's media configuration renewed with it.
type TokenRefreshed struct {
	ExpiresAt time.Time    `json:"expires_at"`
	Media     *MediaConfig `json:"media,omitempty"`
}

// MaxBatch is the most user ids one batch call may name.
const MaxBatch = 1000

// Message is anything the server sends. Data holds the payload struct named
// by Type and Event.
type Message struct {
	Type  string          `json:"type"`
	ID    uint64          `json:"id,omitempty"`
	Seq   uint64          `json:"seq,omitempty"`
	Event string          `json:"event,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Error *Error          `json:"error,omitempty"`
}

// Error is the error shape of the protocol and of the REST API.
type Error struct {
	Code    stage.Code `json:"code"`
	Message string     `json:"message"`
}

// Err returns e as an error that wraps the stage sentinel of its code, so
// errors.Is(err, stage.ErrStageFull) holds.
func (e *Error) Err() error {
	s := stage.ErrorOf(e.Code)
	if s == nil {
		s = stage.ErrInternal
	}
	return stage.Errorf(s, e.Message)
}

// ErrorFrom returns the wire form of err.
func ErrorFrom(err error) *Error {
	return &Error{Code: stage.CodeOf(err), Message: err.Error()}
}

// Meeting describes the meeting in a Welcome.
type Meeting struct {
	ID              string            `json:"id"`
	Title           string            `json:"title"`
	Type            stage.MeetingType `json:"type"`
	MaxOnStage      int               `json:"max_on_stage,omitempty"`
	StageRequestTTL int               `json:"stage_request_ttl,omitempty"` // seconds
}

// Participant describes a participant to others.
type Participant struct {
	ID        string       `json:"id"`
	UserID    string       `json:"user_id"`
	Name      string       `json:"name"`
	Preset    string       `json:"preset"`
	Status    stage.Status `json:"stage_status"`
	Connected bool         `json:"connected"`
}

// Self is the receiving participant, with its permissions.
type Self struct {
	Participant
	Permissions stage.Permissions `json:"permissions"`
}

// Welcome is the first message on every connection: the state of the
// meeting as of Seq. Non-hosts get the participants who are not OFF_STAGE;
// hosts get everyone. Requests is set for participants with
// accept_stage_requests only.
type Welcome struct {
	Protocol         int             `json:"protocol"`
	Meeting          Meeting         `json:"meeting"`
	Self             Self            `json:"self"`
	Participants     []Participant   `json:"participants"`
	Requests         []stage.Request `json:"requests,omitempty"`
	ParticipantCount int             `json:"participant_count"`
	Resumed          bool            `json:"resumed"`
	// Media is how this connection reaches media (ICE servers); absent
	// when the server has none to offer.
	Media *MediaConfig `json:"media,omitempty"`
}

// StageStatusUpdate is stageStatusUpdate: the receiver's own status changed.
type StageStatusUpdate struct {
	Old    stage.Status `json:"old"`
	New    stage.Status `json:"new"`
	Reason stage.Cause  `json:"reason"`
}

// PeerStageStatusUpdate is peerStageStatusUpdate: another participant's
// status changed. Participant carries the new status.
type PeerStageStatusUpdate struct {
	Participant Participant  `json:"participant"`
	Old         stage.Status `json:"old"`
	New         stage.Status `json:"new"`
	Reason      stage.Cause  `json:"reason"`
}

// StageRequestRejected is stageRequestRejected; Reason is "deny" or "expire".
type StageRequestRejected struct {
	Reason stage.Cause `json:"reason"`
}

// NewStageRequest is newStageRequest, for hosts.
type NewStageRequest struct {
	Count   int           `json:"count"`
	Request stage.Request `json:"request"`
}

// StageAccessRequestUpdate is stageAccessRequestUpdate, for hosts: the full
// pending list, oldest first.
type StageAccessRequestUpdate struct {
	Requests []stage.Request `json:"requests"`
}

// ParticipantLeft is participantLeft.
type ParticipantLeft struct {
	ID     string `json:"id"`
	UserID string `json:"user_id"`
}

// PermissionsUpdate is permissionsUpdate: the receiver's preset changed.
type PermissionsUpdate struct {
	Preset      string            `json:"preset"`
	Permissions stage.Permissions `json:"permissions"`
}

// ParticipantCount is participantCount: how many participants are
// connected, sent to everyone every few seconds when it changed.
type ParticipantCount struct {
	Count int `json:"count"`
}

// Empty is the payload of events and results that carry nothing.
type Empty struct{}

// AccessRequests is the result of stage.getAccessRequests.
type AccessRequests struct {
	Requests []stage.Request `json:"requests"`
}

// BatchResult is the result of grantAccess, denyAccess and kick: one entry
// per user id, in call order.
type BatchResult struct {
	Results []UserResult `json:"results"`
}

// UserResult is the outcome for one user id; Error is nil on success.
type UserResult struct {
	UserID string `json:"user_id"`
	Error  *Error `json:"error,omitempty"`
}

// StatusResult is the result of the self methods: the caller's status after
// the call.
type StatusResult struct {
	Status stage.Status `json:"stage_status"`
}

func badRequest(format string, a ...any) error {
	return stage.Errorf(stage.ErrBadRequest, fmt.Sprintf(format, a...))
}

// DecodeRequest parses one client message. It checks the envelope, the
// method and the params, so a Request it returns is ready to execute. The
// returned ID is set whenever the envelope had one, even on error, so the
// error can be answered.
func DecodeRequest(b []byte) (Request, any, error) {
	var r Request
	if len(b) > MaxMessageSize {
		return r, nil, badRequest("message of %d bytes is over the limit of %d", len(b), MaxMessageSize)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Request{}, nil, badRequest("malformed message: %v", err)
	}
	if r.ID == 0 {
		return r, nil, badRequest("request id must be a positive integer")
	}
	switch r.Method {
	case MethodPing, MethodGetAccessRequests, MethodRequestAccess, MethodCancelRequestAccess,
		MethodJoin, MethodLeave:
		if err := strictEmpty(r.Params); err != nil {
			return r, nil, err
		}
		return r, nil, nil
	case MethodGrantAccess, MethodDenyAccess, MethodKick:
		var p UserIDs
		if err := strict(r.Params, &p); err != nil {
			return r, nil, err
		}
		if len(p.UserIDs) == 0 {
			return r, nil, badRequest("%s needs user_ids", r.Method)
		}
		if len(p.UserIDs) > MaxBatch {
			return r, nil, badRequest("%s names %d user ids, more than %d", r.Method, len(p.UserIDs), MaxBatch)
		}
		for _, id := range p.UserIDs {
			if id == "" {
				return r, nil, badRequest("empty user id")
			}
		}
		return r, p, nil
	case MethodRefreshToken:
		var p TokenParams
		if err := strict(r.Params, &p); err != nil {
			return r, nil, err
		}
		if p.Token == "" || len(p.Token) > 1024 {
			return r, nil, badRequest("%s needs a token of at most 1024 bytes", r.Method)
		}
		return r, p, nil
	case MethodPublish, MethodUnpublish, MethodSubscribe, MethodAnswer, MethodCandidate, MethodRestartICE, MethodSetTrackSize:
		p, err := decodeMedia(r)
		return r, p, err
	case "":
		return r, nil, badRequest("request has no method")
	}
	return r, nil, badRequest("unknown method %q", r.Method)
}

func strict(raw json.RawMessage, v any) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return badRequest("missing params")
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return badRequest("bad params: %v", err)
	}
	return nil
}

func strictEmpty(raw json.RawMessage) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return badRequest("bad params: %v", err)
	}
	for k := range m {
		return badRequest("unknown param %q", k)
	}
	return nil
}

// EncodeEvent returns the wire form of event name with payload data.
func EncodeEvent(seq uint64, name string, data any) ([]byte, error) {
	return encode(Message{Type: TypeEvent, Seq: seq, Event: name}, data)
}

// EncodeResponse returns the wire form of the response to request id.
func EncodeResponse(id uint64, result any, err error) ([]byte, error) {
	m := Message{Type: TypeResponse, ID: id}
	if err != nil {
		m.Error = ErrorFrom(err)
		return json.Marshal(m)
	}
	if result == nil {
		result = Empty{}
	}
	return encode(m, result)
}

// EncodeWelcome returns the wire form of w as of meeting event seq.
func EncodeWelcome(seq uint64, w *Welcome) ([]byte, error) {
	return encode(Message{Type: TypeWelcome, Seq: seq}, w)
}

func encode(m Message, data any) ([]byte, error) {
	d, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	m.Data = d
	return json.Marshal(m)
}

// DecodeMessage parses one server message.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("protocol: malformed message: %w", err)
	}
	if m.Type == "" {
		return m, errors.New("protocol: message has no type")
	}
	return m, nil
}

// Seconds converts d to whole seconds for the wire.
func Seconds(d time.Duration) int { return int(d / time.Second) }
