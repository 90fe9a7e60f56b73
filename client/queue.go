package client

import "sync"

// queue delivers events in order on a channel without ever blocking the
// reader: events wait in a slice until the application takes them.
type queue struct {
	out    chan Event
	quit   chan struct{} // closed by discard
	mu     sync.Mutex
	items  []Event
	wake   chan struct{}
	closed bool
}

func newQueue() *queue {
	q := &queue{out: make(chan Event), quit: make(chan struct{}), wake: make(chan struct{}, 1)}
	go q.pump()
	return q
}

func (q *queue) push(e Event) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, e)
	}
	q.mu.Unlock()
	q.signal()
}

func (q *queue) signal() {
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
	q.signal()
}

// discard drops the events nobody took and ends the pump.
func (q *queue) discard() {
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-q.quit:
	default:
		close(q.quit)
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
			select {
			case q.out <- e:
			case <-q.quit:
				return
			}
		}
		if closed && len(items) == 0 {
			return
		}
		if len(items) == 0 {
			select {
			case <-q.wake:
			case <-q.quit:
				return
			}
		}
	}
}
