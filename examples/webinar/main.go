// Command webinar plays a short webinar against a running cocmd server:
// it creates a meeting and participants through the REST API, joins them
// all with the Go SDK, and runs the stage story — requests, a grant, a
// denial, a direct invite, joins and a kick — printing what each side sees.
//
//	go run ./examples/webinar -url http://localhost:8080 -api-key ck_…
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cocmd/cocmd/client"
)

func main() {
	url := flag.String("url", "http://localhost:8080", "the cocmd server")
	key := flag.String("api-key", os.Getenv("COCMD_API_KEY"), "the server's API key (env COCMD_API_KEY)")
	viewers := flag.Int("viewers", 5, "how many viewers join")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, *url, *key, *viewers, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "webinar:", err)
		os.Exit(1)
	}
}

// api is a tiny REST client.
type api struct {
	url, key string
}

func (a api) call(ctx context.Context, method, path string, in, out any) error {
	b, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, method, a.url+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	return json.Unmarshal(raw, out)
}

func run(ctx context.Context, url, key string, nViewers int, out io.Writer) error {
	if nViewers < 3 {
		return errors.New("at least 3 viewers")
	}
	a := api{url: strings.TrimSuffix(url, "/"), key: key}
	var m struct{ ID string }
	if err := a.call(ctx, "POST", "/v1/meetings", map[string]any{"title": "Launch day", "type": "WEBINAR", "max_on_stage": 3}, &m); err != nil {
		return err
	}
	fmt.Fprintf(out, "meeting %s\n", m.ID)
	join := func(uid, name, preset string) (*client.Meeting, error) {
		var p struct{ Token string }
		if err := a.call(ctx, "POST", "/v1/meetings/"+m.ID+"/participants", map[string]any{"name": name, "user_id": uid, "preset": preset}, &p); err != nil {
			return nil, err
		}
		return client.Join(ctx, url, p.Token, nil)
	}
	host, err := join("host", "Hana (host)", "webinar_host")
	if err != nil {
		return err
	}
	defer host.Close()
	viewers := make([]*client.Meeting, nViewers)
	for i := range viewers {
		if viewers[i], err = join(fmt.Sprintf("viewer-%d", i), fmt.Sprintf("Viewer %d", i), "webinar_viewer"); err != nil {
			return err
		}
		defer viewers[i].Close()
	}
	// Print what the host and the first viewer see, as it happens.
	out = &syncWriter{w: out}
	done := make(chan struct{})
	var printers sync.WaitGroup
	defer func() { close(done); printers.Wait() }()
	for _, w := range []struct {
		who string
		m   *client.Meeting
	}{{"host", host}, {"viewer-0", viewers[0]}} {
		printers.Go(func() {
			for {
				select {
				case e, ok := <-w.m.Events():
					if !ok {
						return
					}
					fmt.Fprintf(out, "  [%s] %s\n", w.who, describe(e))
				case <-done:
					return
				}
			}
		})
	}
	step := func(what string, err error) error {
		fmt.Fprintf(out, "%s\n", what)
		time.Sleep(100 * time.Millisecond) // let the printers catch up
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := step("host goes on stage", host.Stage.Join(ctx)); err != nil {
		return err
	}
	for i := range 3 {
		if err := step(fmt.Sprintf("viewer-%d asks for the stage", i), viewers[i].Stage.RequestAccess(ctx)); err != nil {
			return err
		}
	}
	reqs, err := host.Stage.GetAccessRequests(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pending, oldest first:")
	for _, r := range reqs {
		fmt.Fprintf(out, " %s", r.UserID)
	}
	fmt.Fprintln(out)
	for _, s := range []struct {
		what string
		do   func() error
	}{
		{"host grants viewer-0", func() error { return host.Stage.GrantAccess(ctx, "viewer-0") }},
		{"host denies viewer-1", func() error { return host.Stage.DenyAccess(ctx, "viewer-1") }},
		{"viewer-2 cancels", func() error { return viewers[2].Stage.CancelRequestAccess(ctx) }},
		{"viewer-0 joins the stage", func() error { return viewers[0].Stage.Join(ctx) }},
		{"host invites viewer-2 directly", func() error { return host.Stage.GrantAccess(ctx, "viewer-2") }},
		{"viewer-2 joins the stage", func() error { return viewers[2].Stage.Join(ctx) }},
		{"host kicks viewer-0", func() error { return host.Stage.Kick(ctx, "viewer-0") }},
	} {
		if err := step(s.what, s.do()); err != nil {
			return err
		}
	}
	// A viewer calling a host method is refused.
	if err := viewers[1].Stage.Kick(ctx, "viewer-2"); !errors.Is(err, client.ErrPermissionDenied) {
		return fmt.Errorf("a viewer's kick: %v", err)
	}
	fmt.Fprintln(out, "viewer-1 tries to kick viewer-2: PERMISSION_DENIED")
	fmt.Fprintln(out, "final:")
	for i, v := range viewers[:3] {
		fmt.Fprintf(out, "  viewer-%d %s\n", i, v.Stage.Status())
	}
	return nil
}

// syncWriter lets several goroutines print.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// Write implements io.Writer.
func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func describe(e client.Event) string {
	switch e := e.(type) {
	case client.StageStatusUpdate:
		return fmt.Sprintf("my status %s → %s (%s)", e.Old, e.New, e.Reason)
	case client.PeerStageStatusUpdate:
		return fmt.Sprintf("%s: %s → %s (%s)", e.Participant.UserID, e.Old, e.New, e.Reason)
	case client.NewStageRequest:
		return fmt.Sprintf("new request from %s (%d pending)", e.Request.UserID, e.Count)
	case client.StageAccessRequestUpdate:
		ids := make([]string, len(e.Requests))
		for i, r := range e.Requests {
			ids[i] = r.UserID
		}
		return fmt.Sprintf("pending now [%s]", strings.Join(ids, " "))
	case client.ParticipantJoined:
		return "joined: " + e.Participant.UserID
	}
	return e.Name()
}
