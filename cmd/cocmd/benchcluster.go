package main

import (
	"flag"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"time"
)

// benchCluster measures a grant's fan-out with the viewers spread over
// three nodes (each with an embedded NATS server), against one node, in
// the same run: the latency to every viewer's socket, each node's CPU per
// grant and per recipient.
func benchCluster(args []string) error {
	fs := flag.NewFlagSet("bench cluster", flag.ContinueOnError)
	ns := fs.String("n", "1000,3000", "comma-separated viewer counts")
	rounds := fs.Int("rounds", 20, "grants per N (CPU is read in 10 ms ticks: many rounds make it exact)")
	nodes := fs.Int("nodes", 3, "nodes of the cluster")
	dial := fs.Int("dialers", 64, "concurrent connection attempts")
	fs.BoolVar(&verbose, "v", false, "print each round's figures to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	counts, err := parseCounts(*ns, 2)
	if err != nil {
		return err
	}
	fmt.Printf("cocmd bench cluster: %d CPUs, nothing pinned (the nodes share them), %d grants per N\n\n", runtime.NumCPU(), *rounds)
	fmt.Println("| viewers | nodes | grant → update at every viewer: p50 | p99 | max | CPU per grant, all nodes | CPU per recipient | owner's CPU per grant | others' CPU per grant |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range counts {
		for _, k := range []int{1, *nodes} {
			r, err := benchClusterRun(n, k, *rounds, *dial)
			if err != nil {
				return fmt.Errorf("%d viewers on %d nodes: %w", n, k, err)
			}
			others := "–"
			if k > 1 {
				others = ms(r.othersCPU)
			}
			fmt.Printf("| %d | %d | %s | %s | %s | %s | %.1f µs | %s | %s |\n", n, k, ms(r.p50), ms(r.p99), ms(r.max), ms(r.totalCPU),
				float64(r.totalCPU)/float64(time.Microsecond)/float64(n), ms(r.ownerCPU), others)
		}
	}
	return nil
}

type clusterResult struct {
	p50, p99, max      time.Duration
	totalCPU, ownerCPU time.Duration // per grant
	othersCPU          time.Duration // per grant, the other nodes together
}

func benchClusterRun(n, k, rounds, dialers int) (clusterResult, error) {
	var r clusterResult
	var srvs []*benchServer
	defer func() {
		for _, s := range srvs {
			s.stop()
		}
	}()
	var err error
	if k == 1 {
		s, err := startBenchServer(-1, "")
		if err != nil {
			return r, err
		}
		srvs = append(srvs, s)
	} else if srvs, err = startBenchCluster(k, "-turn=false"); err != nil {
		return r, err
	}
	owner := srvs[0]
	hostToken, viewers, err := owner.webinar(n) // loads the meeting on node 0
	if err != nil {
		return r, err
	}
	ws := func(s *benchServer) string { return strings.Replace(s.base, "http", "ws", 1) + "/v1/realtime" }
	host, err := connectViewer(ws(owner), hostToken)
	if err != nil {
		return r, err
	}
	defer host.Close()
	go func() {
		for {
			if _, _, err := host.ReadMessage(); err != nil {
				return
			}
		}
	}()
	closeAll, err := connectAll(viewers, dialers, func(i int) string { return ws(srvs[i%k]) })
	if err != nil {
		return r, err
	}
	defer closeAll()
	time.Sleep(time.Second)
	cpus := func() []time.Duration {
		out := make([]time.Duration, k)
		for i, s := range srvs {
			out[i], _ = s.cpu()
		}
		return out
	}
	cpu0, t0 := cpus(), time.Now()
	lat, _, err := grantRounds(host, viewers, rounds)
	if err != nil {
		return r, err
	}
	cpu1, took := cpus(), time.Since(t0)
	// What the nodes spend doing nothing (leases, liveness, JetStream's
	// heartbeats, pings) over as long, to take off.
	time.Sleep(took)
	cpu2 := cpus()
	for i := range srvs {
		idle := cpu2[i] - cpu1[i]
		d := (cpu1[i] - cpu0[i] - idle) / time.Duration(rounds)
		r.totalCPU += d
		if i == 0 {
			r.ownerCPU = d
		} else {
			r.othersCPU += d
		}
	}
	slices.Sort(lat)
	r.p50, r.p99, r.max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	return r, nil
}

// startBenchCluster starts k nodes with embedded NATS servers routed to
// each other, nothing pinned, and waits until they are ready.
func startBenchCluster(k int, extra ...string) ([]*benchServer, error) {
	routes := make([]string, k)
	for i := range routes {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		routes[i] = l.Addr().String()
		l.Close()
	}
	type started struct {
		i   int
		s   *benchServer
		err error
	}
	ch := make(chan started, k)
	for i := range k {
		go func() {
			args := append([]string{"-node", fmt.Sprint("n", i), "-cluster-listen", routes[i], "-cluster-routes", strings.Join(routes, ",")}, extra...)
			s, err := startBenchServer(-1, "", args...)
			ch <- started{i, s, err}
		}()
	}
	srvs := make([]*benchServer, k)
	var first error
	for range k {
		st := <-ch
		srvs[st.i] = st.s
		if st.err != nil && first == nil {
			first = st.err
		}
	}
	if first == nil {
		first = waitReady(srvs)
	}
	if first != nil {
		for _, s := range srvs {
			if s != nil {
				s.stop()
			}
		}
		return nil, first
	}
	return srvs, nil
}

// waitReady waits until every node answers /readyz.
func waitReady(srvs []*benchServer) error {
	deadline := time.Now().Add(2 * time.Minute)
	for _, s := range srvs {
		for {
			err := s.api("GET", "/readyz", nil, nil)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not ready: %w", s.base, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}
