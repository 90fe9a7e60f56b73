package server

import (
	"bytes"
	"testing"
)

func TestTextFrame(t *testing.T) {
	for _, c := range []struct {
		n    int
		head []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		p := bytes.Repeat([]byte{'x'}, c.n)
		f := textFrame(p).([]byte)
		if !bytes.HasPrefix(f, c.head) || !bytes.Equal(f[len(c.head):], p) {
			t.Errorf("%d bytes: header % x", c.n, f[:min(len(f), 10)])
		}
	}
}
