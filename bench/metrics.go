package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shardchat/shard/protocol"
)

// httpClient talks to the nodes' HTTP API; loopback answers in
// milliseconds, so 5 s means the node is stuck.
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}

// node is one node that bench reads counters from.
type node struct {
	Name string `json:"name"`
	HTTP string `json:"http"` // base URL, http://host:port
	PID  int    `json:"pid,omitempty"`
}

// sample is one reading of a node's counters (docs/protocol.md §9) and process
// figures.
type sample struct {
	At          time.Time
	Connections float64
	Chat        float64
	ChatByKind  map[string]float64
	Peer        float64
	PeerByKind  map[string]float64
	// RepliesByKind are the answers this node sent to other nodes'
	// requests: one per request, a batch included.
	RepliesByKind map[string]float64
	Deliveries    float64
	CPU           float64 // seconds
	RSS           float64 // bytes
	Anon          float64 // bytes of RSS that are anonymous: 0 when not known (a node bench did not start)
	// The Go runtime's view, to tell what the RSS is made of.
	HeapInuse, StackInuse, Goroutines float64
	// What the soak watches for leaks besides RSS and goroutines.
	OpenFDs, HeapAlloc float64
	// When bench started the process: its read- and write-like system calls
	// (syscr, syscw) and its threads' wake-ups (procSched): counts per
	// message that, unlike CPU time, hardly depend on what else the
	// machine does.
	ReadCalls, WriteCalls, Wakeups float64
}

// ioCounts are a process's I/O through system calls (/proc/pid/io): bytes
// read and written (rchar, wchar; sockets and files alike), and the system
// calls that did it (syscr: read, recvfrom, readv...; syscw: write, sendto,
// writev...).
type ioCounts struct {
	Read, Written         int64
	ReadCalls, WriteCalls int64
}

func getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

func fetchCluster(ctx context.Context, base string) (protocol.ClusterInfo, error) {
	var v protocol.ClusterInfo
	err := getJSON(ctx, strings.TrimRight(base, "/")+"/api/cluster", &v)
	return v, err
}

// httpBase turns a WebSocket URL (ws://host:port/ws) into the base URL of
// the same server's HTTP API.
func httpBase(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", fmt.Errorf("--url %q: %w", wsURL, err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("--url %q: want ws://host:port/ws", wsURL)
	}
	return u.Scheme + "://" + u.Host, nil
}

// discoverNodes finds the nodes to read counters from: the given base URLs,
// or every alive member listed by /api/cluster of the first target.
func discoverNodes(ctx context.Context, metricsURLs, targets []string) ([]node, error) {
	var bases []string
	if len(metricsURLs) > 0 {
		for _, m := range metricsURLs {
			bases = append(bases, strings.TrimRight(m, "/"))
		}
	} else {
		base, err := httpBase(targets[0])
		if err != nil {
			return nil, err
		}
		v, err := fetchCluster(ctx, base)
		if err != nil {
			return nil, fmt.Errorf("find the nodes through %s/api/cluster (or give --metrics-url): %w", base, err)
		}
		for _, m := range v.Members {
			if m.State == "alive" {
				bases = append(bases, "http://"+m.HTTP)
			}
		}
	}
	var nodes []node
	for _, b := range bases {
		v, err := fetchCluster(ctx, b)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, node{Name: v.Self, HTTP: b})
	}
	return nodes, nil
}

// scrape reads n's /metrics; when bench started n, RSS and CPU come from
// /proc instead, which is exact and does not depend on the process
// collector.
func scrape(ctx context.Context, n node) (sample, error) {
	s := sample{At: time.Now(), ChatByKind: map[string]float64{}, PeerByKind: map[string]float64{}, RepliesByKind: map[string]float64{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.HTTP+"/metrics", nil)
	if err != nil {
		return s, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := httpClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("scrape %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("scrape %s: %s", n.Name, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return s, fmt.Errorf("scrape %s: %w", n.Name, err)
	}
	s.Connections = sum(fams["shard_connections"], "", nil)
	s.Chat = sum(fams["shard_chat_messages_total"], "kind", s.ChatByKind)
	s.Peer = sum(fams["shard_peer_messages_sent_total"], "kind", s.PeerByKind)
	sum(fams["shard_peer_replies_sent_total"], "kind", s.RepliesByKind)
	s.Deliveries = sum(fams["shard_deliveries_total"], "", nil)
	s.CPU = sum(fams["process_cpu_seconds_total"], "", nil)
	s.RSS = sum(fams["process_resident_memory_bytes"], "", nil)
	s.HeapInuse = sum(fams["go_memstats_heap_inuse_bytes"], "", nil)
	s.StackInuse = sum(fams["go_memstats_stack_inuse_bytes"], "", nil)
	s.Goroutines = sum(fams["go_goroutines"], "", nil)
	s.OpenFDs = sum(fams["process_open_fds"], "", nil)
	s.HeapAlloc = sum(fams["go_memstats_heap_alloc_bytes"], "", nil)
	if n.PID > 0 {
		if rss, anon, err := procMemory(n.PID); err == nil {
			s.RSS, s.Anon = float64(rss), float64(anon)
		}
		if cpu, err := procCPU(n.PID); err == nil {
			s.CPU = cpu.Seconds()
		}
		if io, err := procIO(n.PID); err == nil {
			s.ReadCalls, s.WriteCalls = float64(io.ReadCalls), float64(io.WriteCalls)
		}
		_, _, wakeups := procSched(n.PID)
		s.Wakeups = float64(wakeups)
	}
	return s, nil
}

// sum adds up the values of a family's series; byLabel, when set, gets the
// values by that label.
func sum(f *dto.MetricFamily, label string, byLabel map[string]float64) float64 {
	if f == nil {
		return 0
	}
	var total float64
	for _, m := range f.GetMetric() {
		var v float64
		switch {
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Untyped != nil:
			v = m.GetUntyped().GetValue()
		}
		total += v
		if byLabel != nil {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					byLabel[lp.GetValue()] += v
				}
			}
		}
	}
	return total
}

// scrapeAll reads every node, in parallel so that the readings are close in
// time.
func scrapeAll(ctx context.Context, nodes []node) ([]sample, error) {
	out := make([]sample, len(nodes))
	errs := make([]error, len(nodes))
	done := make(chan struct{})
	for i, n := range nodes {
		go func() {
			out[i], errs[i] = scrape(ctx, n)
			done <- struct{}{}
		}()
	}
	for range nodes {
		<-done
	}
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
