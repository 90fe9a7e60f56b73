package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cocmd/cocmd/server"
)

func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	return getAuth(t, url, "")
}

// getAuth is get with a Bearer token, if tok is not empty.
func getAuth(t *testing.T, url, tok string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// The app, the SDK and the token check are served; demo webinars only in
// development mode.
func TestWeb(t *testing.T) {
	ts := startServer(t, testOptions{tokenTTL: time.Hour})
	for path, want := range map[string]string{"/": "text/html", "/join": "text/html", "/app/app.js": "text/javascript",
		"/sdk/cocmd.js": "text/javascript", "/sdk/cocmd.d.ts": "", "/app/app.css": "text/css"} {
		code, ct, body := get(t, ts.URL+path)
		if code != 200 || !strings.HasPrefix(ct, want) || body == "" {
			t.Errorf("GET %s: %d %s", path, code, ct)
		}
	}
	if code, _, _ := get(t, ts.URL+"/sdk/nothing.js"); code != 404 {
		t.Errorf("a missing file: %d", code)
	}
	if code := ts.api("POST", "/v1/demo/webinars", nil, nil); code != 404 {
		t.Errorf("demo webinars outside development mode: %d", code)
	}
	_, _, body := get(t, ts.URL+"/v1/demo")
	if !strings.Contains(body, `"enabled":false`) {
		t.Errorf("GET /v1/demo: %s", body)
	}

	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	tok := ts.participant(mid, "u", "webinar_viewer")
	var info server.TokenInfo
	var code int
	code, _, body = getAuth(t, ts.URL+"/v1/token", tok)
	if err := json.Unmarshal([]byte(body), &info); code != 200 || err != nil {
		t.Fatalf("GET /v1/token: %d %s", code, body)
	}
	if info.MeetingID != mid || info.ParticipantID == "" || time.Until(info.ExpiresAt) < 50*time.Minute {
		t.Errorf("token info %+v", info)
	}
	for name, tk := range map[string]string{"forged": tok[:len(tok)-4] + "AAAA", "garbage": "v1.x.y", "none": ""} {
		if code, _, body := getAuth(t, ts.URL+"/v1/token", tk); code != 401 || !strings.Contains(body, "UNAUTHENTICATED") {
			t.Errorf("%s token: %d %s", name, code, body)
		}
	}
	var p struct{ Participant struct{ ID string } }
	var added server.AddedParticipant
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "Gone", "user_id": "gone", "preset": "webinar_viewer"}, &added)
	p.Participant.ID = added.Participant.ID
	ts.mustAPI("DELETE", "/v1/meetings/"+mid+"/participants/"+p.Participant.ID, nil, nil)
	if code, _, body := getAuth(t, ts.URL+"/v1/token", added.Token); code != 401 || !strings.Contains(body, "removed") {
		t.Errorf("a removed participant's token: %d %s", code, body)
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/end", nil, nil)
	if code, _, body := getAuth(t, ts.URL+"/v1/token", tok); code != 401 || !strings.Contains(body, "ended") {
		t.Errorf("an ended meeting's token: %d %s", code, body)
	}
}

func TestWeb_demoWebinar(t *testing.T) {
	ts := startServer(t, testOptions{dev: true})
	resp, err := http.Post(ts.URL+"/v1/demo/webinars", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var w server.DemoWebinar
	if err := jsonDecode(resp.Body, &w); err != nil || resp.StatusCode != 201 {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	if len(w.Viewers) < 3 || w.Host.Preset != "webinar_host" || !strings.HasPrefix(w.Host.Link, ts.URL+"/join#token=v1.") {
		t.Fatalf("demo webinar %+v", w)
	}
	// Its links work.
	host := ts.join(strings.TrimPrefix(w.Host.Link, ts.URL+"/join#token="))
	if host.Self().UserID != "host" || !host.Permissions().AcceptStageRequests {
		t.Errorf("host %+v", host.Self())
	}
}

// The demo endpoint needs no key, so the whole server makes only a few
// demo webinars a minute.
func TestWeb_demoWebinarRateLimited(t *testing.T) {
	ts := startServer(t, testOptions{dev: true})
	codes := map[int]int{}
	for range 12 {
		resp, err := http.Post(ts.URL+"/v1/demo/webinars", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
	}
	if codes[201] != 5 || codes[429] != 7 {
		t.Errorf("12 demo webinars at once: %v", codes)
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
