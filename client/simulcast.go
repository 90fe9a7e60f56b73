package client

import (
	"sync/atomic"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// ridTrack is a simulcast layer as the client sends it: every packet
// carries the mid and rid header extensions, which name its media section
// and layer (browsers add them themselves; pion does not), so that the
// server can tell the layers apart.
type ridTrack struct {
	webrtc.TrackLocal
	mid atomic.Pointer[string]
}

// ridsOf are the layers of one transceiver.
type ridsOf struct {
	tr     *webrtc.RTPTransceiver
	tracks []*ridTrack
}

func (t *ridTrack) setMid(mid string) { t.mid.Store(&mid) }

// Bind implements webrtc.TrackLocal: the wrapped track writes through a
// writer that adds the extensions, with the ids the connection negotiated.
func (t *ridTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	w := &ridWriter{TrackLocalWriter: ctx.WriteStream(), mid: &t.mid, rid: []byte(t.RID())}
	for _, e := range ctx.HeaderExtensions() {
		switch e.URI {
		case sdp.SDESMidURI:
			w.midID = uint8(e.ID)
		case sdp.SDESRTPStreamIDURI:
			w.ridID = uint8(e.ID)
		}
	}
	return t.TrackLocal.Bind(&ridContext{TrackLocalContext: ctx, w: w})
}

type ridContext struct {
	webrtc.TrackLocalContext
	w webrtc.TrackLocalWriter
}

// WriteStream implements webrtc.TrackLocalContext.
func (c *ridContext) WriteStream() webrtc.TrackLocalWriter { return c.w }

type ridWriter struct {
	webrtc.TrackLocalWriter
	midID, ridID uint8
	mid          *atomic.Pointer[string]
	rid          []byte
}

// WriteRTP implements webrtc.TrackLocalWriter.
func (w *ridWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	if m := w.mid.Load(); m != nil && w.midID != 0 {
		h.SetExtension(w.midID, []byte(*m))
	}
	if w.ridID != 0 {
		h.SetExtension(w.ridID, w.rid)
	}
	return w.TrackLocalWriter.WriteRTP(h, payload)
}
