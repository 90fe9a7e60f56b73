package meeting

import (
	"fmt"
	"testing"
)

// BenchmarkBroadcast is the meeting's own cost per recipient of an event:
// encode once, then queue it for every connection (whose writers are not
// running, so no socket is involved).
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := &Meeting{conns: map[string]*Client{}}
			for i := range n {
				c := newClient(nil, fmt.Sprint("p", i), 1<<30)
				m.conns[c.ParticipantID] = c
			}
			b.ReportAllocs()
			for b.Loop() {
				m.broadcast("peerStageStatusUpdate", map[string]int{"x": 1}, "")
				for _, c := range m.conns {
					c.Take(nil)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/recipient")
		})
	}
}
