package meeting_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
	"github.com/cocmd/cocmd/store/sqlite"
)

// BenchmarkStageCommands is the throughput and latency of durable stage
// commands on the real store: 100 meetings, each with 10 hosts that grant
// and kick a viewer of their own, all at once (1,000 concurrent callers).
// A command returns once its change is committed. Run it with a fixed
// count, for example -benchtime 20000x; it reports commands a second and
// the p50 and p99 latency of one command.
func BenchmarkStageCommands(b *testing.B) {
	const meetings, hosts = 100, 10
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "cocmd.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for _, p := range stage.BuiltinPresets() {
		if err := db.CreatePreset(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i := range meetings {
		mid := fmt.Sprint("mtg_", i)
		if err := db.CreateMeeting(ctx, store.Meeting{ID: mid, Title: mid, Type: stage.Webinar, CreatedAt: now}, nil); err != nil {
			b.Fatal(err)
		}
		for j := range hosts {
			p := store.Participant{ID: fmt.Sprint(mid, "_v", j), MeetingID: mid, UserID: fmt.Sprint("v", j),
				Name: "viewer", Preset: "webinar_viewer", CreatedAt: now}
			if err := db.AddParticipant(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
	}
	reg := meeting.NewRegistry(db, meeting.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer reg.Close()
	for i := range meetings { // loaded before the clock starts
		if _, err := reg.Live(ctx, fmt.Sprint("mtg_", i)); err != nil {
			b.Fatal(err)
		}
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	lat := make([][]time.Duration, meetings*hosts)
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := range meetings * hosts {
		mid, uid := fmt.Sprint("mtg_", i/hosts), []string{fmt.Sprint("v", i%hosts)}
		wg.Go(func() {
			for n := 0; left.Add(-1) >= 0; n++ {
				call := reg.GrantAccess
				if n%2 == 1 {
					call = reg.Kick
				}
				start := time.Now()
				res, err := call(ctx, mid, uid)
				lat[i] = append(lat[i], time.Since(start))
				if err != nil || res[0].Err != nil {
					b.Errorf("%s %v: %v %v", mid, uid, err, res)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "commands/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}
