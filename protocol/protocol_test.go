package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cocmd/cocmd/stage"
)

func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		in      string
		wantErr bool
	}{
		{`{"id":1,"method":"stage.join"}`, false},
		{`{"id":1,"method":"stage.join","params":{}}`, false},
		{`{"id":1,"method":"stage.join","extra":true}`, false}, // envelope: ignored
		{`{"id":2,"method":"stage.grantAccess","params":{"user_ids":["a","b"]}}`, false},
		{`{"id":2,"method":"stage.grantAccess","params":{"userIds":["a"]}}`, true}, // would be lost
		{`{"id":2,"method":"stage.grantAccess","params":{"user_ids":[]}}`, true},
		{`{"id":2,"method":"stage.grantAccess","params":{"user_ids":[""]}}`, true},
		{`{"id":2,"method":"stage.grantAccess"}`, true},
		{`{"id":1,"method":"stage.join","params":{"force":true}}`, true},
		{`{"id":0,"method":"stage.join"}`, true},
		{`{"method":"stage.join"}`, true},
		{`{"id":1,"method":"stage.fly"}`, true},
		{`{"id":1}`, true},
		{`{"id":1,"method":"stage.join"`, true},
		{`[]`, true},
		{`null`, true},
		{`{"id":-1,"method":"ping"}`, true},
		// media
		{`{"id":3,"method":"media.publish","params":{"sdp":"v=0\r\n","sources":{"0":"camera","1":"microphone"}}}`, false},
		{`{"id":3,"method":"media.publish","params":{"sdp":"v=0\r\n"}}`, false},
		{`{"id":3,"method":"media.publish","params":{"sdp":""}}`, true},
		{`{"id":3,"method":"media.publish","params":{"sdp":"hello"}}`, true},
		{`{"id":3,"method":"media.publish","params":{"sdp":"v=0","sources":{"0":"webcam"}}}`, true},
		{`{"id":3,"method":"media.publish","params":{"offer":"v=0"}}`, true},
		{`{"id":3,"method":"media.publish"}`, true},
		{`{"id":3,"method":"media.subscribe"}`, false},
		{`{"id":3,"method":"media.subscribe","params":{"all":true}}`, true},
		{`{"id":3,"method":"media.unpublish"}`, false},
		{`{"id":3,"method":"media.answer","params":{"sdp":"v=0\r\n"}}`, false},
		{`{"id":3,"method":"media.answer","params":{}}`, true},
		{`{"id":3,"method":"media.candidate","params":{"target":"publisher","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}}`, false},
		{`{"id":3,"method":"media.candidate","params":{"target":"both","candidate":{"candidate":""}}}`, true},
		{`{"id":3,"method":"media.candidate","params":{"target":"subscriber","candidate":{"candidate":"","foo":1}}}`, true},
		{`{"id":3,"method":"media.fly"}`, true},
	}
	for _, c := range cases {
		_, _, err := DecodeRequest([]byte(c.in))
		if (err != nil) != c.wantErr {
			t.Errorf("%s: err = %v", c.in, err)
		}
		if err != nil && !errors.Is(err, stage.ErrBadRequest) {
			t.Errorf("%s: err %v is not BAD_REQUEST", c.in, err)
		}
	}
	big := `{"id":1,"method":"ping","params":{"x":"` + strings.Repeat("a", MaxMessageSize) + `"}}`
	if _, _, err := DecodeRequest([]byte(big)); err == nil {
		t.Fatal("oversized message accepted")
	}
	sdp, _ := json.Marshal(Request{ID: 1, Method: MethodPublish, Params: mustJSON(PublishParams{SDP: "v=0\r\n" + strings.Repeat("a=x\r\n", MaxSDP/5)})})
	if _, _, err := DecodeRequest(sdp); err == nil {
		t.Fatal("oversized sdp accepted")
	}
	ids := make([]string, MaxBatch+1)
	for i := range ids {
		ids[i] = "u"
	}
	b, _ := json.Marshal(Request{ID: 1, Method: MethodKick, Params: mustJSON(UserIDs{ids})})
	if _, _, err := DecodeRequest(b); err == nil {
		t.Fatal("oversized batch accepted")
	}
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func TestEncodeRoundTrip(t *testing.T) {
	b, err := EncodeEvent(42, EventPeerStageStatusUpdate, PeerStageStatusUpdate{
		Participant: Participant{ID: "p", UserID: "u", Status: stage.OnStage},
		Old:         stage.Accepted, New: stage.OnStage, Reason: stage.CauseJoin,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMessage(b)
	if err != nil || m.Seq != 42 || m.Event != EventPeerStageStatusUpdate {
		t.Fatalf("%+v %v", m, err)
	}
	var p PeerStageStatusUpdate
	if err := json.Unmarshal(m.Data, &p); err != nil || p.New != stage.OnStage || p.Reason != stage.CauseJoin {
		t.Fatalf("%+v %v", p, err)
	}
	b, _ = EncodeResponse(7, nil, stage.Errorf(stage.ErrStageFull, "full"))
	m, _ = DecodeMessage(b)
	if m.ID != 7 || m.Error == nil || !errors.Is(m.Error.Err(), stage.ErrStageFull) {
		t.Fatalf("%s", b)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"id":1,"method":"stage.join"}`))
	f.Add([]byte(`{"id":2,"method":"stage.kick","params":{"user_ids":["a"]}}`))
	f.Add([]byte(`{"id":3,"method":"stage.grantAccess","params":{"user_ids":["a","b"],"x":1}}`))
	f.Add([]byte(`{"id":1e3,"method":"ping","params":null}`))
	f.Add([]byte(`{"id":4,"method":"media.publish","params":{"sdp":"v=0\r\n","sources":{"0":"camera"}}}`))
	f.Add([]byte(`{"id":5,"method":"media.candidate","params":{"target":"subscriber","candidate":{"candidate":"c","sdpMLineIndex":1}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, params, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, stage.ErrBadRequest) {
				t.Fatalf("error %v is not BAD_REQUEST", err)
			}
			return
		}
		if r.ID == 0 || r.Method == "" {
			t.Fatalf("accepted %+v", r)
		}
		if p, ok := params.(UserIDs); ok && (len(p.UserIDs) == 0 || len(p.UserIDs) > MaxBatch) {
			t.Fatalf("accepted batch of %d", len(p.UserIDs))
		}
	})
}
