package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync/atomic"
	"time"
)

// benchWebhooks measures webhook delivery: how many deliveries a second one
// endpoint drains from a backlog, to a fast receiver on loopback; and the
// latency of a grant (REST, to the committed answer) with no endpoint, with
// five fast ones and with five slow ones (each answer 200 ms late), in one
// run.
func benchWebhooks(args []string) error {
	fs := flag.NewFlagSet("bench webhooks", flag.ContinueOnError)
	entries := fs.Int("entries", 4000, "log entries in the backlog the endpoint drains")
	rounds := fs.Int("grants", 400, "grants (and as many denials) timed per configuration")
	serverCPU := fs.Int("server-cpu", 0, "CPU the server is pinned to (-1: not pinned)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv, err := startBenchServer(*serverCPU, "", "-webhooks-allow-private")
	if err != nil {
		return err
	}
	defer srv.stop()

	// Receivers on loopback: fast ones answer at once; slow ones 200 ms
	// late; the backlog's answers 503 until it is opened.
	var open atomic.Bool
	var got atomic.Int64
	var last atomic.Int64
	backlog, err := receiverOn(func(w http.ResponseWriter) {
		if !open.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got.Add(1)
		last.Store(time.Now().UnixNano())
		w.WriteHeader(http.StatusNoContent)
	})
	if err != nil {
		return err
	}
	defer backlog.Close()
	fast, err := receiverOn(func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) })
	if err != nil {
		return err
	}
	defer fast.Close()
	slow, err := receiverOn(func(w http.ResponseWriter) {
		time.Sleep(200 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	})
	if err != nil {
		return err
	}
	defer slow.Close()

	// A meeting whose 100 viewers are invited and uninvited by the back
	// end: an entry per viewer per call.
	var m struct{ ID string }
	if err := srv.api("POST", "/v1/meetings", map[string]any{"title": "bench", "type": "WEBINAR"}, &m); err != nil {
		return err
	}
	uids := make([]string, 100)
	for i := range uids {
		uids[i] = fmt.Sprintf("v%03d", i)
		if err := srv.api("POST", "/v1/meetings/"+m.ID+"/participants", map[string]any{"name": uids[i], "user_id": uids[i], "preset": "webinar_viewer"}, nil); err != nil {
			return err
		}
	}
	moderate := func(action string, ids []string) (time.Duration, error) {
		t0 := time.Now()
		err := srv.api("POST", "/v1/meetings/"+m.ID+"/stage/"+action, map[string]any{"user_ids": ids}, nil)
		return time.Since(t0), err
	}

	fmt.Printf("cocmd bench webhooks: %d CPUs, server on CPU %d, receivers and load in this process\n\n", runtime.NumCPU(), *serverCPU)

	// Deliveries a second: a backlog of entries, then the receiver opens.
	var ep struct{ ID string }
	if err := srv.api("POST", "/v1/webhooks", map[string]any{"url": "http://" + backlog.Addr().String()}, &ep); err != nil {
		return err
	}
	made := 0
	for i := 0; made < *entries; i++ {
		action := "grant"
		if i%2 == 1 {
			action = "deny"
		}
		if _, err := moderate(action, uids); err != nil {
			return err
		}
		made += len(uids)
	}
	time.Sleep(500 * time.Millisecond) // the first entry has been tried, and failed
	t0 := time.Now()
	open.Store(true)
	deadline := time.Now().Add(5 * time.Minute)
	for got.Load() < int64(made) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d entries delivered in 5 minutes", got.Load(), made)
		}
		time.Sleep(10 * time.Millisecond)
	}
	drain := time.Unix(0, last.Load()).Sub(t0)
	fmt.Println("| backlog | delivered in | deliveries/s |")
	fmt.Println("|---:|---:|---:|")
	fmt.Printf("| %d | %s | %.0f |\n\n", made, drain.Round(time.Millisecond), float64(made)/drain.Seconds())
	if err := srv.api("DELETE", "/v1/webhooks/"+ep.ID, nil, nil); err != nil {
		return err
	}

	// Grant latency: none, five fast, five slow endpoints.
	fmt.Println("| endpoints | grant p50 | p99 | deny p50 | p99 |")
	fmt.Println("|---|---:|---:|---:|---:|")
	var registered []string
	for _, c := range []struct {
		name string
		url  string
		n    int
	}{{"none", "", 0}, {"5, answering at once", "http://" + fast.Addr().String(), 5}, {"5, answering 200 ms late", "http://" + slow.Addr().String(), 5}} {
		for _, id := range registered {
			if err := srv.api("DELETE", "/v1/webhooks/"+id, nil, nil); err != nil {
				return err
			}
		}
		registered = registered[:0]
		for range c.n {
			var e struct{ ID string }
			if err := srv.api("POST", "/v1/webhooks", map[string]any{"url": c.url}, &e); err != nil {
				return err
			}
			registered = append(registered, e.ID)
		}
		var grants, denies []time.Duration
		for i := range *rounds {
			uid := uids[i%len(uids)]
			g, err := moderate("grant", []string{uid})
			if err != nil {
				return err
			}
			d, err := moderate("deny", []string{uid})
			if err != nil {
				return err
			}
			grants, denies = append(grants, g), append(denies, d)
		}
		slices.Sort(grants)
		slices.Sort(denies)
		p := func(s []time.Duration, q int) string { return ms(s[min(len(s)-1, len(s)*q/100)]) }
		fmt.Printf("| %s | %s | %s | %s | %s |\n", c.name, p(grants, 50), p(grants, 99), p(denies, 50), p(denies, 99))
	}
	return nil
}

// receiverOn serves answer on a loopback port.
func receiverOn(answer func(http.ResponseWriter)) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answer(w)
	})}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("receiver:", err)
		}
	}()
	return ln, nil
}
