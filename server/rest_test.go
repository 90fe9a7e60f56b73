package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/stage"
)

func TestREST_presets(t *testing.T) {
	ts := startServer(t, testOptions{})
	var list server.List[stage.Preset]
	ts.mustAPI("GET", "/v1/presets", nil, &list)
	if len(list.Data) != len(stage.BuiltinPresets()) {
		t.Fatalf("%d built-in presets", len(list.Data))
	}
	p := stage.Preset{Name: "moderator", Permissions: stage.Permissions{StageEnabled: true, StageAccess: stage.CanRequest, AcceptStageRequests: true}}
	if code := ts.api("POST", "/v1/presets", p, nil); code != 201 {
		t.Fatalf("create: %d", code)
	}
	var got stage.Preset
	ts.mustAPI("GET", "/v1/presets/moderator", nil, &got)
	if got != p {
		t.Fatalf("got %+v", got)
	}
	// An update reaches a live participant with that preset.
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	mod := ts.join(ts.participant(mid, "mod", "moderator"))
	p.Permissions.KickParticipant = true
	ts.mustAPI("PUT", "/v1/presets/moderator", map[string]any{"permissions": p.Permissions}, nil)
	waitFor(t, mod, "permissions", named("permissionsUpdate"))
	if !mod.Permissions().KickParticipant {
		t.Fatal("the live participant kept the old permissions")
	}
	if code := ts.api("DELETE", "/v1/presets/moderator", nil, nil); code != 409 {
		t.Fatalf("deleting a preset in use: %d", code)
	}
	ts.mustAPI("POST", "/v1/presets", map[string]any{"name": "spare", "permissions": map[string]any{}}, nil)
	if code := ts.api("DELETE", "/v1/presets/spare", nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code := ts.api("GET", "/v1/presets/spare", nil, nil); code != 404 {
		t.Fatalf("deleted preset: %d", code)
	}
}

func TestREST_meetingsAndParticipants(t *testing.T) {
	ts := startServer(t, testOptions{})
	var ids []string
	for i := range 5 {
		ids = append(ids, ts.meeting(map[string]any{"title": "M" + itoa(i), "type": "WEBINAR"}))
	}
	var seen []string
	for cursor := ""; ; {
		var page server.List[server.Meeting]
		ts.mustAPI("GET", "/v1/meetings?limit=2&cursor="+cursor, nil, &page)
		for _, m := range page.Data {
			seen = append(seen, m.ID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if strings.Join(seen, ",") != strings.Join(ids, ",") {
		t.Fatalf("paged %v, want %v", seen, ids)
	}
	var m server.Meeting
	ts.mustAPI("PATCH", "/v1/meetings/"+ids[0], map[string]any{"max_on_stage": 3, "stage_request_ttl": 30}, &m)
	if m.MaxOnStage != 3 || m.StageRequestTTL != 30 || m.Title != "M0" || m.Status != "LIVE" {
		t.Fatalf("updated %+v", m)
	}
	if code := ts.api("PATCH", "/v1/meetings/"+ids[0], map[string]any{"type": "GROUP_CALL"}, nil); code != 400 {
		t.Fatalf("changing the type: %d", code)
	}

	var added server.AddedParticipant
	ts.mustAPI("POST", "/v1/meetings/"+ids[0]+"/participants", map[string]any{"name": "Ann", "user_id": "ann", "preset": "webinar_viewer", "token_ttl": 60}, &added)
	var p server.Participant
	ts.mustAPI("GET", "/v1/meetings/"+ids[0]+"/participants/"+added.Participant.ID, nil, &p)
	if p.UserID != "ann" || p.StageStatus != stage.OffStage {
		t.Fatalf("participant %+v", p)
	}
	// A participant of one meeting is not found under another.
	if code := ts.api("GET", "/v1/meetings/"+ids[1]+"/participants/"+added.Participant.ID, nil, nil); code != 404 {
		t.Fatalf("participant under another meeting: %d", code)
	}
	var renewed server.AddedParticipant
	ts.mustAPI("POST", "/v1/meetings/"+ids[0]+"/participants/"+added.Participant.ID+"/token", nil, &renewed)
	if renewed.Token == "" || renewed.Token == added.Token && renewed.TokenExpiresAt.Equal(added.TokenExpiresAt) {
		t.Fatalf("renewed %+v", renewed)
	}
	ann := ts.join(renewed.Token)
	if ann.Self().UserID != "ann" {
		t.Fatalf("joined as %+v", ann.Self())
	}
	// Ending the meeting.
	ts.mustAPI("POST", "/v1/meetings/"+ids[0]+"/end", nil, &m)
	if m.Status != "ENDED" || m.EndedAt == nil {
		t.Fatalf("ended %+v", m)
	}
	<-ann.Done()
	if code := ts.api("PATCH", "/v1/meetings/"+ids[0], map[string]any{"title": "again"}, nil); code != 404 {
		t.Fatalf("updating an ended meeting: %d", code)
	}
}

func TestREST_openAPIServed(t *testing.T) {
	ts := startServer(t, testOptions{})
	resp, err := http.Get(ts.URL + "/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, path := range []string{"/v1/presets/{name}", "/v1/meetings/{id}/participants/{pid}/token", "/v1/meetings/{id}/live", "/v1/meetings/{id}/audit", "/v1/webhooks/{id}/replay", "/v1/webhooks/{id}/attempts", "/v1/meetings/{id}/stage/{action}", "/v1/realtime"} {
		if !strings.Contains(string(b), path+":") {
			t.Errorf("openapi.yaml does not describe %s", path)
		}
	}
}
