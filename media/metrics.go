package media

import (
	"fmt"
	"io"
	"slices"
	"strconv"
)

// WriteMetrics writes the media figures of every live meeting in the
// Prometheus text exposition format (version 0.0.4).
func (s *SFU) WriteMetrics(w io.Writer) error {
	s.mu.Lock()
	ids := make([]string, 0, len(s.rooms))
	rooms := make(map[string]*Room, len(s.rooms))
	for id, r := range s.rooms {
		ids = append(ids, id)
		rooms[id] = r
	}
	s.mu.Unlock()
	slices.Sort(ids)
	stats := make([]Stats, len(ids))
	for i, id := range ids {
		stats[i] = rooms[id].stats()
	}
	metrics := []struct {
		name, typ, help string
		value           func(Stats) uint64
	}{
		{"cocmd_media_tracks", "gauge", "Tracks being forwarded.", func(s Stats) uint64 { return uint64(s.Tracks) }},
		{"cocmd_media_subscribers", "gauge", "Participants with a subscriber connection.", func(s Stats) uint64 { return uint64(s.Subscribers) }},
		{"cocmd_media_packets_received_total", "counter", "RTP packets received from publishers.", func(s Stats) uint64 { return s.PacketsIn }},
		{"cocmd_media_bytes_received_total", "counter", "RTP bytes received from publishers.", func(s Stats) uint64 { return s.BytesIn }},
		{"cocmd_media_packets_forwarded_total", "counter", "RTP packets forwarded to subscribers.", func(s Stats) uint64 { return s.PacketsOut }},
		{"cocmd_media_bytes_forwarded_total", "counter", "RTP bytes forwarded to subscribers (before encryption).", func(s Stats) uint64 { return s.BytesOut }},
		{"cocmd_media_retransmits_total", "counter", "Packets sent again from the cache on a subscriber's NACK.", func(s Stats) uint64 { return s.Retransmits }},
		{"cocmd_media_keyframe_requests_total", "counter", "Keyframe requests (PLI) sent to publishers.", func(s Stats) uint64 { return s.KeyframeRequests }},
		{"cocmd_media_layer_switches_total", "counter", "Subscribers moved to another simulcast layer.", func(s Stats) uint64 { return s.LayerSwitches }},
		{"cocmd_media_simulcast_layers", "gauge", "Simulcast layers received from publishers.", func(s Stats) uint64 { return uint64(s.SimulcastLayers) }},
		{"cocmd_media_simulcast_layers_paused", "gauge", "Simulcast layers publishers were told to pause: nobody receives them (dynacast).", func(s Stats) uint64 { return uint64(s.PausedLayers) }},
		{"cocmd_media_paused_video", "gauge", "Simulcast video tracks a subscriber gets no video of (hidden, or no layer fits).", func(s Stats) uint64 { return uint64(s.PausedDowns) }},
		{"cocmd_media_probe_packets_total", "counter", "Padding packets sent to probe subscribers' links before a larger layer.", func(s Stats) uint64 { return s.ProbePackets }},
		{"cocmd_media_probes_total", "counter", "Probes of subscribers' links.", func(s Stats) uint64 { return s.Probes }},
		{"cocmd_media_probes_succeeded_total", "counter", "Probes whose packets arrived at the rate probed.", func(s Stats) uint64 { return s.ProbesOK }},
		{"cocmd_media_direct_subscribers", "gauge", "Subscriber connections sent to on the direct path (the SFU's own SRTP and socket), not pion's write path.", func(s Stats) uint64 { return uint64(s.Direct) }},
		{"cocmd_media_direct_rtcp_total", "counter", "RTCP packets from subscribers read on the direct path.", func(s Stats) uint64 { return s.DirectRTCP }},
		{"cocmd_media_twcc_feedback_total", "counter", "Transport-wide congestion control feedback packets from subscribers.", func(s Stats) uint64 { return s.Feedback }},
	}
	for _, m := range metrics {
		if _, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ); err != nil {
			return err
		}
		for i, id := range ids {
			if _, err := fmt.Fprintf(w, "%s{meeting=%s} %d\n", m.name, strconv.Quote(id), m.value(stats[i])); err != nil {
				return err
			}
		}
	}
	if _, err := fmt.Fprintf(w, "# HELP cocmd_media_forwarded_layer Simulcast tracks subscribers receive, by the layer they receive (0: the smallest; none: paused).\n# TYPE cocmd_media_forwarded_layer gauge\n"); err != nil {
		return err
	}
	for i, id := range ids {
		for l, n := range stats[i].OnLayer {
			if _, err := fmt.Fprintf(w, "cocmd_media_forwarded_layer{meeting=%s,layer=\"%d\"} %d\n", strconv.Quote(id), l, n); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintf(w, "cocmd_media_forwarded_layer{meeting=%s,layer=\"none\"} %d\n", strconv.Quote(id), stats[i].PausedDowns); err != nil {
			return err
		}
	}
	// The subscribers' estimates, as a cumulative count per bound: a
	// snapshot, not a histogram of observations.
	if _, err := fmt.Fprintf(w, "# HELP cocmd_media_subscriber_estimates Subscribers whose bandwidth estimate is at most le bits a second.\n# TYPE cocmd_media_subscriber_estimates gauge\n"); err != nil {
		return err
	}
	for i, id := range ids {
		for _, le := range estimateBounds {
			n := 0
			for _, e := range stats[i].Estimates {
				if le == "+Inf" || e <= mustFloat(le) {
					n++
				}
			}
			if _, err := fmt.Fprintf(w, "cocmd_media_subscriber_estimates{meeting=%s,le=%q} %d\n", strconv.Quote(id), le, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// estimateBounds are the bounds cocmd_media_subscriber_estimates counts
// estimates under: the rates of a small, a middle and a large layer, and
// beyond.
var estimateBounds = []string{"150000", "300000", "600000", "1000000", "2000000", "5000000", "+Inf"}

func mustFloat(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic(err)
	}
	return f
}

// Stats returns the media figures of meeting id (zero if it has none).
func (s *SFU) Stats(id string) Stats {
	s.mu.Lock()
	r := s.rooms[id]
	s.mu.Unlock()
	if r == nil {
		return Stats{}
	}
	return r.stats()
}
