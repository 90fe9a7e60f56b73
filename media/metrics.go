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
	return nil
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
