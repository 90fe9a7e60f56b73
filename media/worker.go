package media

import "sync"

// worker runs a room's slow jobs — renegotiating subscribers, closing peer
// connections, telling clients their tracks stopped — one at a time, in the
// order they were queued, so that what a client is told arrives in the
// order it happened. Its goroutine exists only while there are jobs.
type worker struct {
	wg *sync.WaitGroup // the SFU's: Close waits for every job

	mu      sync.Mutex
	jobs    []func()
	running bool
}

// do queues job and returns at once.
func (w *worker) do(job func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.jobs = append(w.jobs, job)
	if !w.running {
		w.running = true
		w.wg.Add(1)
		go w.run()
	}
}

func (w *worker) run() {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		if len(w.jobs) == 0 {
			w.running = false
			w.jobs = nil
			w.mu.Unlock()
			return
		}
		job := w.jobs[0]
		w.jobs[0] = nil
		w.jobs = w.jobs[1:]
		w.mu.Unlock()
		job()
	}
}
