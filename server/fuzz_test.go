package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/store/sqlite"
)

// FuzzCreateMeeting feeds arbitrary bodies to POST /v1/meetings: the answer
// is a created meeting or a 4xx in the one error shape, never a 500.
func FuzzCreateMeeting(f *testing.F) {
	db, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	keys, err := Bootstrap(context.Background(), db, "ck_fuzz_key_0123456789", true)
	if err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := meeting.NewRegistry(db, meeting.Config{Logger: log})
	defer reg.Close()
	s := New(Config{Logger: log}, db, reg, keys)
	defer s.Wait()
	h := s.Handler()
	for _, seed := range []string{
		`{"title":"a","type":"WEBINAR"}`,
		`{"title":"a","type":"GROUP_CALL","max_on_stage":3,"stage_request_ttl":60}`,
		`{"title":"","type":"WEBINAR"}`,
		`{"title":"a","type":"WEBINAR","x":1}`,
		`{"title":"\u0000","type":"WEBINAR","max_on_stage":1e9}`,
		`[]`, `null`, `{`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/meetings", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer ck_fuzz_key_0123456789")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusCreated:
			var m Meeting
			if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || m.ID == "" || m.Title == "" {
				t.Fatalf("created %s", rec.Body)
			}
		case rec.Code >= 400 && rec.Code < 500:
			var e errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Code == "" {
				t.Fatalf("%d with body %s", rec.Code, rec.Body)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}
