package server_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// Names, titles and user ids are NFC-normalized and bounded; text that
// holds a control, bidi, zero-width or invisible character is refused with
// BAD_REQUEST and nothing is stored.
func TestREST_names(t *testing.T) {
	ts := startServer(t, testOptions{})
	mid := ts.meeting(map[string]any{"title": "T", "type": "WEBINAR"})
	add := func(name, uid string) (int, map[string]any) {
		var out map[string]any
		code := ts.api("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": name, "user_id": uid, "preset": "webinar_viewer"}, &out)
		return code, out
	}
	for class, name := range map[string]string{
		"control":          "Ann\x07",
		"newline":          "Ann\nBob",
		"bidi override":    "Ann\u202Egnp.exe",
		"bidi isolate":     "\u2067Ann",
		"zero width":       "A\u200Bnn",
		"zero width join":  "A\u200Dnn",
		"BOM":              "\uFEFFAnn",
		"soft hyphen":      "An\u00ADn",
		"invisible letter": "\u3164",
		"line separator":   "Ann\u2028Bob",
		"private use":      "Ann\uE000",
		"only spaces":      "   ",
		"too long":         strings.Repeat("a", 65),
	} {
		if code, out := add(name, "u-"+class); code != 400 || !strings.Contains(jsonString(out), "BAD_REQUEST") {
			t.Errorf("name with %s: %d %v", class, code, out)
		}
		if code, _ := add("Ann", "u\u202E"+class); code != 400 {
			t.Errorf("user id with a bidi override (%s): %d", class, code)
		}
	}
	if code, _ := add("Ann", strings.Repeat("u", 129)); code != 400 {
		t.Errorf("a user id of 129 bytes: %d", code)
	}
	if code := ts.api("POST", "/v1/meetings", map[string]any{"title": "Launch\u202E", "type": "WEBINAR"}, nil); code != 400 {
		t.Errorf("a title with a bidi override: %d", code)
	}
	// NFC: "e" + combining acute is stored as "é"; 64 characters pass.
	code, out := add("Jose\u0301 "+strings.Repeat("x", 58), "jose\u0301")
	if code != 201 {
		t.Fatalf("a decomposed name: %d %v", code, out)
	}
	p := out["participant"].(map[string]any)
	if p["name"] != "José "+strings.Repeat("x", 58) || p["user_id"] != "josé" {
		t.Errorf("stored %q %q", p["name"], p["user_id"])
	}
	// The same user id in either form names the same user.
	if code, _ := add("Other", "josé"); code != 409 {
		t.Errorf("the composed form of a stored user id: %d", code)
	}
	var res struct {
		Results []struct{ Error any }
	}
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/stage/grant", map[string]any{"user_ids": []string{"jose\u0301"}}, &res)
	if res.Results[0].Error != nil {
		t.Errorf("granting by the decomposed form: %v", res.Results[0].Error)
	}
}

func jsonString(v any) string { b, _ := json.Marshal(v); return string(b) }
