package server_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/stage"
)

// The audit log over REST: every change of a scripted webinar, in order,
// with who made it, a page at a time; filtered by participant, type and
// time; and bad queries refused, each for its reason.
func TestREST_audit(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "audit", "type": "WEBINAR"})
	ctx := ctxT(t)
	host := ts.join(ts.participant(mid, "host", "webinar_host"))
	ann := ts.join(ts.participant(mid, "ann", "webinar_viewer"))
	if err := ann.Stage.RequestAccess(ctx); err != nil {
		t.Fatal(err)
	}
	if err := host.Stage.GrantAccess(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if err := ann.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	mark := time.Now().UTC()
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/stage/kick", map[string]any{"user_ids": []string{"ann"}}, nil)
	var all []server.AuditEntry
	var list server.List[server.AuditEntry]
	for cursor := ""; ; cursor = list.NextCursor {
		list = server.List[server.AuditEntry]{}
		ts.mustAPI("GET", "/v1/meetings/"+mid+"/audit?limit=2&cursor="+url.QueryEscape(cursor), nil, &list)
		all = append(all, list.Data...)
		if list.NextCursor == "" {
			break
		}
	}
	var got []string
	for i, e := range all {
		got = append(got, e.Type+" "+string(e.Actor.Kind))
		if i > 0 && e.Seq <= all[i-1].Seq || e.ID == "" || e.At.IsZero() {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	want := "meeting.started api, participant.joined participant, participant.joined participant, stage.requested participant, stage.granted participant, stage.joined participant, stage.kicked api"
	if strings.Join(got, ", ") != want {
		t.Fatalf("the audit log: %s\nwant %s", strings.Join(got, ", "), want)
	}
	if all[4].Actor.ParticipantID == "" || all[4].Actor.ParticipantID == all[4].ParticipantID || all[6].UserID != "ann" {
		t.Errorf("who granted whom: %+v; kicked: %+v", all[4], all[6])
	}
	// Filters: one participant's entries, a type, a time range.
	filter := func(q string) []string {
		t.Helper()
		var l server.List[server.AuditEntry]
		ts.mustAPI("GET", "/v1/meetings/"+mid+"/audit?"+q, nil, &l)
		var out []string
		for _, e := range l.Data {
			out = append(out, e.Type)
		}
		return out
	}
	if got := filter("participant_id=" + all[3].ParticipantID + "&type=stage.granted,stage.kicked"); strings.Join(got, ",") != "stage.granted,stage.kicked" {
		t.Errorf("ann's grants and kicks: %v", got)
	}
	if got := filter("from=" + url.QueryEscape(mark.Format(time.RFC3339Nano))); strings.Join(got, ",") != "stage.kicked" {
		t.Errorf("since before the kick: %v", got)
	}
	if got := filter("to=" + url.QueryEscape(all[0].At.Format(time.RFC3339Nano))); len(got) != 0 {
		t.Errorf("before the meeting began: %v", got)
	}
	for _, c := range []struct{ name, query string }{
		{"a forged cursor", "cursor=eyJzZXEiOjF9"},
		{"a negative cursor", "cursor=-4"},
		{"an inverted time range", "from=2026-12-01T10:00:00Z&to=2026-12-01T09:00:00Z"},
		{"a malformed time", "from=yesterday"},
		{"an unknown type", "type=stage.granted,stage.teleported"},
		{"a limit too large", "limit=100000"},
	} {
		var e struct {
			Error struct {
				Code    stage.Code
				Message string
			}
		}
		if code := ts.api("GET", "/v1/meetings/"+mid+"/audit?"+c.query, nil, &e); code != 400 || e.Error.Code != stage.CodeBadRequest || e.Error.Message == "" {
			t.Errorf("%s: %d %+v", c.name, code, e)
		}
	}
	var e struct{ Error struct{ Code string } }
	if code := ts.api("GET", "/v1/meetings/mtg_nope/audit", nil, &e); code != 404 {
		t.Errorf("an unknown meeting: %d", code)
	}
}
