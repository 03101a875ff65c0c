package node_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/shardchat/shard/internal/testcluster"
	"github.com/shardchat/shard/internal/wait"
	"github.com/shardchat/shard/node"
)

// TestDashboardAndAlertsNameOnlyExposedMetrics reads every query of
// deploy/grafana/shard.json and every rule of deploy/prometheus/alerts.yml,
// and checks each metric and label they name against what two running nodes
// (each with an embedded store) expose on /metrics after a message crossed
// between them: a renamed metric must not leave an empty panel or an alert
// that can never fire.
func TestDashboardAndAlertsNameOnlyExposedMetrics(t *testing.T) {
	queries := dashboardQueries(t, "../deploy/grafana/shard.json")
	queries = append(queries, alertQueries(t, "../deploy/prometheus/alerts.yml")...)

	c := testcluster.Start(t, 2, func(_ int, cfg *node.Config) { cfg.Data = t.TempDir() })
	// bob on node 0 writes to a user owned by node 1, so that node 0 stores
	// the message, looks its recipient up and forwards it: every kind of
	// traffic the dashboard shows happens once.
	to := userOwnedBy(t, c, "node-1")
	bob := c.Dial(0, "bob")
	recipient := c.Dial(1, to)
	sendOK(t, bob, to, "hi", "delivered")
	recvMsg(t, recipient, to)
	recipient.Close()
	wait.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if c.Counter(1, "shard_connections_closed_total") == 0 {
			return fmt.Errorf("node 1 has not counted %s's connection closed", to)
		}
		return nil
	})
	exposed := map[string]map[string]bool{}
	for i := range c.Nodes {
		scrape(t, c.HTTP(i)+"/metrics", exposed)
	}

	named := map[string]bool{}
	var missing []string
	for _, q := range queries {
		refs := promqlRefs(q.expr)
		for metric, labels := range refs.metrics {
			named[metric] = true
			if prometheusOwn[metric] {
				continue
			}
			have, ok := exposed[metric]
			if !ok {
				missing = append(missing, fmt.Sprintf("%s: %s is not exposed by a running node", q.where, metric))
				continue
			}
			for _, l := range labels {
				if !targetLabels[l] && !have[l] {
					missing = append(missing, fmt.Sprintf("%s: %s has no label %q", q.where, metric, l))
				}
			}
		}
		for _, l := range refs.grouping {
			if targetLabels[l] || slices.ContainsFunc(refs.names(), func(m string) bool { return exposed[m][l] }) {
				continue
			}
			missing = append(missing, fmt.Sprintf("%s: groups by %q, which none of %v has", q.where, l, refs.names()))
		}
	}
	slices.Sort(missing)
	for _, m := range slices.Compact(missing) {
		t.Error(m)
	}
	// What issue 16 asks the dashboard and the alerts to show.
	for _, m := range []string{"shard_connections", "shard_chat_messages_total", "shard_deliveries_total",
		"shard_peer_messages_sent_total", "shard_answers_total", "shard_connections_closed_total",
		"shard_ring_changes_total", "shard_store_append_seconds_bucket", "shard_store_errors_total",
		"shard_link_queued_frames", "shard_directory_keys", "shard_members", "go_goroutines",
		"go_memstats_heap_inuse_bytes", "up"} {
		if !named[m] {
			t.Errorf("neither the dashboard nor the alerts use %s", m)
		}
	}
}

// userOwnedBy returns a user id whose directory the node named owner keeps.
func userOwnedBy(t *testing.T, c *testcluster.Cluster, owner string) string {
	t.Helper()
	rg := c.Nodes[0].Router().Ring()
	for i := range 1000 { // with 2 members, one in 2 ids is owner's
		if id := fmt.Sprintf("carol%d", i); rg.Owner(id) == owner {
			return id
		}
	}
	t.Fatalf("no id of 1000 is owned by %s", owner)
	return ""
}

// prometheusOwn are series Prometheus makes itself for each target.
var prometheusOwn = map[string]bool{"up": true}

// targetLabels are added by Prometheus to every series of a target.
var targetLabels = map[string]bool{"job": true, "instance": true}

type query struct{ where, expr string }

// dashboardQueries returns every PromQL expression of the dashboard: its
// panels' targets and its variables' label_values queries. It also checks
// that every panel asks the data source variable, not a fixed one.
func dashboardQueries(t *testing.T, path string) []query {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type datasource struct{ UID string }
	var dash struct {
		Templating struct {
			List []struct {
				Name, Type string
				Query      json.RawMessage
			}
		}
		Panels []struct {
			Title      string
			Type       string
			Datasource *datasource
			Targets    []struct {
				Expr       string
				Datasource *datasource
			}
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []query
	hasVar := false
	for _, v := range dash.Templating.List {
		switch v.Type {
		case "datasource":
			hasVar = hasVar || v.Name == "datasource"
		case "query":
			var q struct{ Query string }
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatalf("%s: variable %s: %v", path, v.Name, err)
			}
			m := labelValues.FindStringSubmatch(q.Query)
			if m == nil {
				t.Fatalf("%s: variable %s: want label_values(series, label), got %q", path, v.Name, q.Query)
			}
			// label_values(s, l) asks for the values of l on s: the same
			// as grouping s by l.
			out = append(out, query{path + " variable " + v.Name, "group by (" + m[2] + ") (" + m[1] + ")"})
		}
	}
	if !hasVar {
		t.Errorf("%s has no datasource variable named datasource", path)
	}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		where := fmt.Sprintf("%s panel %q", path, p.Title)
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: its datasource is not ${datasource}", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s has no query", where)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: a query's datasource is not ${datasource}", where)
			}
			out = append(out, query{where, tg.Expr})
		}
	}
	return out
}

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// alertQueries returns the expression of every rule in a Prometheus rules
// file, and checks that each alert says what is wrong.
func alertQueries(t *testing.T, path string) []query {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
				Annotations         map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []query
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			if r.Alert != "" && (r.Annotations["summary"] == "" || r.Annotations["description"] == "") {
				t.Errorf("%s: alert %s needs a summary and a description", path, name)
			}
			out = append(out, query{path + " rule " + name, r.Expr})
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no rules", path)
	}
	return out
}

// scrape adds to exposed each series name that url's text exposition has,
// with the label names it carries.
func scrape(t *testing.T, url string, exposed map[string]map[string]bool) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		name, labels, hasLabels := strings.Cut(name, "{")
		if exposed[name] == nil {
			exposed[name] = map[string]bool{}
		}
		if hasLabels {
			labels, _, _ = strings.Cut(stringLit.ReplaceAllString(labels+rest, `""`), "}")
			for _, m := range matcherLabel.FindAllStringSubmatch(labels, -1) {
				exposed[name][m[1]] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
}

// refs are what one PromQL expression names: each metric with the labels
// its selector matches on, and the labels it groups or joins by.
type refs struct {
	metrics  map[string][]string
	grouping []string
}

func (r refs) names() []string {
	var out []string
	for m := range r.metrics {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

var (
	stringLit    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	rangeLit     = regexp.MustCompile(`\[[^\]]*\]`)
	groupClause  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	selector     = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}`)
	matcherLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	identifier   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	labelName    = regexp.MustCompile(`[a-zA-Z_][a-zA-Z0-9_]*`)
	keywords     = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}
)

// promqlRefs finds the metrics and labels an expression names. It is not a
// PromQL parser, but it reads the language's plain forms: selectors with
// matchers, functions, aggregations with by/without, and vector matching.
func promqlRefs(expr string) refs {
	r := refs{metrics: map[string][]string{}}
	// Strings and ranges hold values and durations, never names; a
	// grouping clause holds only label names.
	s := stringLit.ReplaceAllString(expr, `""`)
	s = rangeLit.ReplaceAllString(s, "")
	for _, m := range groupClause.FindAllStringSubmatch(s, -1) {
		r.grouping = append(r.grouping, labelName.FindAllString(m[1], -1)...)
	}
	s = groupClause.ReplaceAllString(s, "")
	for _, m := range selector.FindAllStringSubmatch(s, -1) {
		for _, l := range matcherLabel.FindAllStringSubmatch(m[2], -1) {
			r.metrics[m[1]] = append(r.metrics[m[1]], l[1])
		}
	}
	s = selector.ReplaceAllString(s, "$1")
	for _, loc := range identifier.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		next := strings.TrimLeft(s[loc[1]:], " \t\n")
		after := loc[0] > 0 && strings.ContainsAny(s[loc[0]-1:loc[0]], "0123456789.")
		if keywords[name] || after || strings.HasPrefix(next, "(") {
			continue // a keyword, a number's exponent, or a function
		}
		if _, ok := r.metrics[name]; !ok {
			r.metrics[name] = nil
		}
	}
	delete(r.metrics, "") // a selector without a name ({__name__=~...}) is not read
	return r
}
