// Package stage holds the rules of a meeting's stage: the statuses, the
// permissions that matter to them, the transition table of the eight stage
// methods and the stable error codes of ../shared/spec/stage.md.
//
// The package is pure: it performs no I/O, starts no goroutines and reads no
// clock it was not handed. A live meeting (package meeting) is its only caller.
package stage

import "fmt"

// Status is a participant's position relative to the stage.
type Status uint8

// The four stage statuses of the spec.
const (
	OffStage Status = iota
	Requested
	Accepted
	OnStage
)

var statusNames = [...]string{
	OffStage:  "OFF_STAGE",
	Requested: "REQUESTED_TO_JOIN_STAGE",
	Accepted:  "ACCEPTED_TO_JOIN_STAGE",
	OnStage:   "ON_STAGE",
}

// String returns the wire name of s, for example "ON_STAGE".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", s)
}

// ParseStatus parses a wire name produced by Status.String.
func ParseStatus(v string) (Status, error) {
	for i, n := range statusNames {
		if n == v {
			return Status(i), nil
		}
	}
	return 0, fmt.Errorf("stage: unknown status %q", v)
}

// MarshalText implements encoding.TextMarshaler.
func (s Status) MarshalText() ([]byte, error) {
	if int(s) >= len(statusNames) {
		return nil, fmt.Errorf("stage: invalid status %d", s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Status) UnmarshalText(b []byte) error {
	v, err := ParseStatus(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Access is a preset's stage_access value.
type Access uint8

// The three stage_access values of the spec.
const (
	CanRequest Access = iota
	Allowed
	NotAllowed
)

var accessNames = [...]string{
	CanRequest: "CAN_REQUEST",
	Allowed:    "ALLOWED",
	NotAllowed: "NOT_ALLOWED",
}

// String returns the wire name of a, for example "CAN_REQUEST".
func (a Access) String() string {
	if int(a) < len(accessNames) {
		return accessNames[a]
	}
	return fmt.Sprintf("Access(%d)", a)
}

// ParseAccess parses a wire name produced by Access.String.
func ParseAccess(v string) (Access, error) {
	for i, n := range accessNames {
		if n == v {
			return Access(i), nil
		}
	}
	return 0, fmt.Errorf("stage: unknown stage_access %q", v)
}

// MarshalText implements encoding.TextMarshaler.
func (a Access) MarshalText() ([]byte, error) {
	if int(a) >= len(accessNames) {
		return nil, fmt.Errorf("stage: invalid stage_access %d", a)
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Access) UnmarshalText(b []byte) error {
	v, err := ParseAccess(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// MeetingType tells whether a meeting has a managed stage.
type MeetingType uint8

// The two meeting types of the spec.
const (
	Webinar MeetingType = iota
	GroupCall
)

// String returns the wire name of t.
func (t MeetingType) String() string {
	switch t {
	case Webinar:
		return "WEBINAR"
	case GroupCall:
		return "GROUP_CALL"
	}
	return fmt.Sprintf("MeetingType(%d)", t)
}

// ParseMeetingType parses "WEBINAR" or "GROUP_CALL".
func ParseMeetingType(v string) (MeetingType, error) {
	switch v {
	case "WEBINAR":
		return Webinar, nil
	case "GROUP_CALL":
		return GroupCall, nil
	}
	return 0, fmt.Errorf("stage: unknown meeting type %q", v)
}

// MarshalText implements encoding.TextMarshaler.
func (t MeetingType) MarshalText() ([]byte, error) {
	if t > GroupCall {
		return nil, fmt.Errorf("stage: invalid meeting type %d", t)
	}
	return []byte(t.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *MeetingType) UnmarshalText(b []byte) error {
	v, err := ParseMeetingType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Media says which kinds of track a participant may publish while on stage.
type Media struct {
	Audio       bool `json:"audio"`
	Video       bool `json:"video"`
	Screenshare bool `json:"screenshare"`
}

// Permissions is the stage part of a preset.
type Permissions struct {
	StageEnabled        bool   `json:"stage_enabled"`
	StageAccess         Access `json:"stage_access"`
	AcceptStageRequests bool   `json:"accept_stage_requests"`
	KickParticipant     bool   `json:"kick_participant"`
	Media               Media  `json:"media"`
	HiddenParticipant   bool   `json:"hidden_participant"`
}

// IsHost reports whether p moderates the stage, so is told about requests
// and sees every participant.
func (p Permissions) IsHost() bool { return p.AcceptStageRequests || p.KickParticipant }

// mayBeOnStage reports whether a participant with p can ever hold a status
// other than OFF_STAGE.
func (p Permissions) mayBeOnStage() bool {
	return p.StageEnabled && !p.HiddenParticipant && p.StageAccess != NotAllowed
}

// Preset is a named set of permissions.
type Preset struct {
	Name        string      `json:"name"`
	Permissions Permissions `json:"permissions"`
}

// BuiltinPresets returns the presets every new server starts with.
func BuiltinPresets() []Preset {
	all := Media{Audio: true, Video: true, Screenshare: true}
	return []Preset{
		{"webinar_host", Permissions{StageEnabled: true, StageAccess: Allowed, AcceptStageRequests: true, KickParticipant: true, Media: all}},
		{"webinar_panelist", Permissions{StageEnabled: true, StageAccess: Allowed, Media: all}},
		{"webinar_viewer", Permissions{StageEnabled: true, StageAccess: CanRequest, Media: Media{Audio: true, Video: true}}},
		{"webinar_audience", Permissions{StageEnabled: true, StageAccess: NotAllowed}},
		{"group_call_host", Permissions{StageEnabled: false, StageAccess: Allowed, KickParticipant: true, Media: all}},
		{"group_call_participant", Permissions{StageEnabled: false, StageAccess: Allowed, Media: all}},
	}
}
