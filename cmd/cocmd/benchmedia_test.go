package main

import "testing"

// A viewer's count is of packets received once: copies (retransmissions,
// probes) do not hide loss; sequence numbers go on across a wrap.
func TestSeqCounter(t *testing.T) {
	var c seqCounter
	for _, seq := range []uint16{65530, 65531, 65533, 65531, 65530, 2, 1, 2, 65533} {
		c.add(seq, 1)
	}
	// 65530..2 is 9 numbers; 65532, 65534, 65535, 0 never came.
	if got, want := c.count.Load(), uint64(5); got != want {
		t.Errorf("counted %d, want %d (copies counted?)", got, want)
	}
	if got, want := c.highest.Load(), uint64(65530)+1<<16+8; got != want {
		t.Errorf("highest %d, want %d", got, want)
	}
	if !c.add(65532, 1) || c.add(65532, 1) {
		t.Error("a late packet: counted once")
	}
}
