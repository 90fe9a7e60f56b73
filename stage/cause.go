package stage

import "fmt"

// Cause says why a participant's status changed.
type Cause uint8

// The causes of a status change.
const (
	CauseRequest     Cause = iota // requestAccess
	CauseAutoAccept               // requestAccess with stage_access ALLOWED
	CauseCancel                   // cancelRequestAccess
	CauseGrant                    // grantAccess: a request approved or a direct invite
	CauseDeny                     // denyAccess: a request rejected or an invitation withdrawn
	CauseJoin                     // join
	CauseLeave                    // leave: left the stage or declined an invitation
	CauseKick                     // kick
	CauseExpire                   // the request outlived the meeting's stage_request_ttl
	CauseDepart                   // the requester left the meeting
	CausePermissions              // the participant's preset no longer allows its status
	CauseRemoved                  // the participant was removed from the meeting
)

var causeNames = [...]string{
	CauseRequest: "request", CauseAutoAccept: "auto_accept", CauseCancel: "cancel",
	CauseGrant: "grant", CauseDeny: "deny", CauseJoin: "join", CauseLeave: "leave",
	CauseKick: "kick", CauseExpire: "expire", CauseDepart: "depart",
	CausePermissions: "permissions", CauseRemoved: "removed",
}

// String returns the wire name of c, for example "kick".
func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return fmt.Sprintf("Cause(%d)", c)
}

// ParseCause parses a wire name produced by Cause.String.
func ParseCause(v string) (Cause, error) {
	for i, n := range causeNames {
		if n == v {
			return Cause(i), nil
		}
	}
	return 0, fmt.Errorf("stage: unknown cause %q", v)
}

// MarshalText implements encoding.TextMarshaler.
func (c Cause) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (c *Cause) UnmarshalText(b []byte) error {
	v, err := ParseCause(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}
