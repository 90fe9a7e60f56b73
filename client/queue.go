package client

import "sync"

// queue delivers events in order on a channel without ever blocking the
// reader: events wait in a slice until the application takes them.
type queue struct {
	out    chan Event
	mu     sync.Mutex
	items  []Event
	wake   chan struct{}
	closed bool
}

func newQueue() *queue {
	q := &queue{out: make(chan Event), wake: make(chan struct{}, 1)}
	go q.pump()
	return q
}

func (q *queue) push(e Event) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, e)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// close lets the pump end once every queued event is delivered.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) pump() {
	defer close(q.out)
	for {
		q.mu.Lock()
		items, closed := q.items, q.closed
		q.items = nil
		q.mu.Unlock()
		for _, e := range items {
			q.out <- e
		}
		if closed && len(items) == 0 {
			return
		}
		if len(items) == 0 {
			<-q.wake
		}
	}
}
