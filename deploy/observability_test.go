package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/vhostd/vhostd/internal/daemontest"
	"github.com/vhostd/vhostd/vhostuser"
	"github.com/vhostd/vhostd/vhostuser/frontend"
)

const (
	dashboardFile = "grafana/vhostd-dashboard.json"
	rulesFile     = "prometheus/vhostd-rules.yaml"
	rulesTestFile = "prometheus/vhostd-rules.test.yaml"
	scrapeFile    = "prometheus/scrape-config.yaml"
)

// promtool finds promtool (Debian package prometheus): a test without it
// skips outside CI and fails in CI, which installs it (.ci/run).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is missing: apt-get install prometheus (CI must check the alert rules)")
		}
		t.Skip("promtool is missing (apt-get install prometheus); the rules are checked in CI")
	}
	return p
}

// TestRulesPromtool: promtool check rules passes on the alerting rules,
// and promtool test rules runs their unit tests (each alert fires on the
// series it is about, and not when things are fine).
func TestRulesPromtool(t *testing.T) {
	pt := promtool(t)
	out, err := exec.Command(pt, "check", "rules", rulesFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
	t.Logf("promtool check rules: %s", strings.TrimSpace(string(out)))
	cmd := exec.Command(pt, "test", "rules", filepath.Base(rulesTestFile))
	cmd.Dir = filepath.Dir(rulesTestFile)
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules %s: %v\n%s", rulesTestFile, err, out)
	}
	// Every alert has a unit test.
	tests, _ := os.ReadFile(rulesTestFile)
	for _, a := range alertNames(t) {
		if !strings.Contains(string(tests), "alertname: "+a+"\n") {
			t.Errorf("alert %s has no case in %s", a, rulesTestFile)
		}
	}
}

// TestScrapeConfigPromtool: promtool check config on the example
// scrape configuration. Debian's promtool is built without Kubernetes
// service discovery; it is skipped then, with a message.
func TestScrapeConfigPromtool(t *testing.T) {
	pt := promtool(t)
	out, err := exec.Command(pt, "check", "config", scrapeFile).CombinedOutput()
	if err != nil && strings.Contains(string(out), "field kubernetes_sd_configs not found") {
		t.Skipf("this promtool has no Kubernetes service discovery (Debian builds it without): %s not checked", scrapeFile)
	}
	if err != nil {
		t.Fatalf("promtool check config %s: %v\n%s", scrapeFile, err, out)
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

func alertNames(t *testing.T) []string {
	var out []string
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r.Alert)
			}
		}
	}
	return out
}

// exprs returns every PromQL expression of the dashboard (panel targets
// and template variable queries) and the rules, with where each is from.
func exprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			out[rulesFile+": "+r.Alert+r.Record] = r.Expr
			// Templates in annotations may query too.
			for k, v := range r.Annotations {
				for _, m := range regexp.MustCompile(`printf "([^"]*)"`).FindAllStringSubmatch(v, -1) {
					out[rulesFile+": "+r.Alert+" annotation "+k] = m[1]
				}
			}
		}
	}
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	n := 0
	for _, p := range dash.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("%s: panel %q target %d", dashboardFile, p.Title, i)] = tg.Expr
			n++
		}
	}
	if n < 20 {
		t.Fatalf("%s: only %d queries", dashboardFile, n)
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if json.Unmarshal(v.Query, &s) != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
			q.Query = s
		}
		// label_values(EXPR, LABEL): EXPR names a metric, LABEL does not.
		if m := regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_]\w*\s*\)$`).FindStringSubmatch(q.Query); m != nil {
			q.Query = m[1]
		}
		out[fmt.Sprintf("%s: variable %s", dashboardFile, v.Name)] = q.Query
	}
	return out
}

// promqlKeywords are identifiers that are not metric names.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true,
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "group": true,
}

// selector is one vector selector of an expression: a metric name and
// the label names its matchers use.
type selector struct {
	name   string
	labels []string
}

// metricNames returns the metric names of selectors(expr).
func metricNames(expr string) []string {
	var out []string
	for _, s := range selectors(expr) {
		out = append(out, s.name)
	}
	return out
}

// selectors extracts the metric names a PromQL expression selects:
// identifiers that are not keywords, function calls, label names (inside
// {...} or after by/without/on/ignoring/group_left/group_right), strings,
// numbers, durations or Grafana variables.
func selectors(expr string) []selector {
	var names []selector
	i := 0
	lastName := -1 // index in names of a name just read, to which {...} belongs
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' {
					j++
				}
				j++
			}
			i = j + 1
		case c == '{':
			if i == 0 || !isIdent(expr[i-1]) {
				lastName = -1
			}
			// The matchers: label names, operators and quoted values
			// (which may hold '}').
			k := i + 1
			var labels []string
			for k < len(expr) && expr[k] != '}' {
				switch {
				case expr[k] == '"' || expr[k] == '\'':
					q := expr[k]
					k++
					for k < len(expr) && expr[k] != q {
						if expr[k] == '\\' {
							k++
						}
						k++
					}
					k++
				case isIdentStart(expr[k]):
					e := k
					for e < len(expr) && isIdent(expr[e]) {
						e++
					}
					labels = append(labels, expr[k:e])
					k = e
				default:
					k++
				}
			}
			if lastName >= 0 {
				names[lastName].labels = labels
			}
			i = k + 1
		case c == '[':
			j := strings.IndexByte(expr[i:], ']')
			if j < 0 {
				return names
			}
			i += j + 1
		case c == '$':
			j := i + 1
			for j < len(expr) && (isIdent(expr[j]) || expr[j] == '{' || expr[j] == '}') {
				j++
			}
			i = j
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(expr) && (isIdent(expr[j]) || expr[j] == '.' || expr[j] == 'e' || expr[j] == '+' && (expr[j-1] == 'e')) {
				j++
			}
			i = j
		case isIdentStart(c):
			j := i
			for j < len(expr) && (isIdent(expr[j]) || expr[j] == ':') {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			isCall := k < len(expr) && expr[k] == '('
			switch {
			case promqlKeywords[strings.ToLower(word)]:
				if isCall && (word == "by" || word == "without" || word == "on" || word == "ignoring" || word == "group_left" || word == "group_right") {
					// A label list: skip to its ')'.
					if e := strings.IndexByte(expr[k:], ')'); e >= 0 {
						j = k + e + 1
					}
				}
			case isCall:
				// A function.
			default:
				names = append(names, selector{name: word})
				if j < len(expr) && expr[j] == '{' {
					lastName = len(names) - 1
					i = j
					continue
				}
			}
			lastName = -1
			i = j
		default:
			i++
		}
	}
	return names
}

func isIdentStart(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }
func isIdent(c byte) bool      { return isIdentStart(c) || c >= '0' && c <= '9' }

func TestSelectorLabels(t *testing.T) {
	got := selectors(`sum by (reason) (rate(vhostd_tx_decisions_total{instance=~"$instance",port=~"a,b}",reason!="none"}[5m])) / x{le='1'}`)
	if len(got) != 2 || strings.Join(got[0].labels, ",") != "instance,port,reason" || strings.Join(got[1].labels, ",") != "le" {
		t.Errorf("selectors = %+v", got)
	}
}

func TestMetricNamesExtractor(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (instance, port) (rate(vhostd_tx_bytes_total{instance=~"$instance",port=~"$port"}[$__rate_interval])) * 8`: "vhostd_tx_bytes_total",
		`histogram_quantile(0.99, sum by (port, le) (rate(a_bucket{le="0.001"}[5m]))) > 1e-3 and on (port) b_count > 10`:   "a_bucket b_count",
		`a / on (instance, port) group_left sum by (instance, port) (rate(b[5m])) > 0.05`:                                  "a b",
		`up{job="vhostd"} == 0`:                                           "up",
		`vhostd_guest_mtu_bytes{instance='%s',port='%s'}`:                 "vhostd_guest_mtu_bytes",
		`max by (instance, port, policy) (vhostd_gso_policy{x="}"}) == 1`: "vhostd_gso_policy",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

// scrapeGenerated are the series Prometheus itself adds to every target.
var scrapeGenerated = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

// TestMetricNamesLive: every metric the dashboard and the rules use is
// exported by a real vhostd (the daemon binary, one null-backend port with
// the Go front-end attached in QEMU's place, which asked for an MTU). A
// histogram's _bucket, _sum and _count series count as its family.
func TestMetricNamesLive(t *testing.T) {
	families := liveFamilies(t)
	used := map[string][]string{}
	labelsUsed := map[string]map[string][]string{} // metric -> label -> where
	for where, e := range exprs(t) {
		sels := selectors(e)
		if len(sels) == 0 {
			t.Errorf("%s: no metric in %q", where, e)
		}
		for _, s := range sels {
			used[s.name] = append(used[s.name], where)
			for _, l := range s.labels {
				if labelsUsed[s.name] == nil {
					labelsUsed[s.name] = map[string][]string{}
				}
				labelsUsed[s.name][l] = append(labelsUsed[s.name][l], where)
			}
		}
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if scrapeGenerated[n] {
			continue
		}
		f := families[n]
		extra := map[string]bool{}
		if f == nil {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suf); ok {
					if hf := families[base]; hf != nil && hf.GetType() == dto.MetricType_HISTOGRAM {
						f = hf
						if suf == "_bucket" {
							extra["le"] = true
						}
					}
				}
			}
		} else if f.GetType() == dto.MetricType_HISTOGRAM {
			t.Errorf("%s is a histogram: query %s_bucket, _sum or _count (used in %v)", n, n, used[n])
			continue
		}
		if f == nil {
			t.Errorf("metric %s is not in vhostd's /metrics (used in %v)", n, used[n])
			continue
		}
		// The labels its matchers name exist on it (or are the scrape's
		// target labels).
		have := map[string]bool{"instance": true, "job": true, "node": true, "pod": true, "__name__": true}
		for l := range extra {
			have[l] = true
		}
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				have[lp.GetName()] = true
			}
		}
		for l, where := range labelsUsed[n] {
			if !have[l] {
				t.Errorf("metric %s has no label %q (used in %v)", n, l, where)
			}
		}
	}
	if !t.Failed() {
		t.Logf("%d metric names used by the dashboard and the rules, all in a live /metrics of %d families, with the labels their matchers name", len(names), len(families))
	}
}

// liveFamilies starts vhostd with one null port, attaches the Go front-end
// (QEMU's order) and asks for an MTU vhostd refuses, and scrapes /metrics.
func liveFamilies(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	vhostd := daemontest.Build(t, "github.com/vhostd/vhostd/cmd/vhostd")
	dir := t.TempDir()
	sock := filepath.Join(dir, "p0.sock")
	d := daemontest.Start(t, vhostd, dir, "--port", "name=p0,socket="+sock+",null", "--mtu", "1500", "--admin-addr", "127.0.0.1:0")
	fe, err := frontend.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fe.Close() })
	if err := fe.Handshake(frontend.Options{}); err != nil {
		t.Fatalf("handshake: %v\n%s", err, d.Log())
	}
	if err := fe.SetU64(vhostuser.ReqNetSetMTU, 9000); err != nil && !errors.Is(err, frontend.ErrNack) {
		t.Fatalf("NET_SET_MTU: %v", err)
	}
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + d.AdminAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err = p.TextToMetricFamilies(strings.NewReader(string(body)))
		if err != nil {
			t.Fatalf("/metrics: %v", err)
		}
		if c := fams["vhostd_vhost_user_connected"]; c != nil && len(c.Metric) > 0 && c.Metric[0].GetGauge().GetValue() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the front-end never showed as connected\n%s", d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fams
}

// TestDashboard: the dashboard's panels do not overlap, every panel queries
// something, and the datasource is a variable (importable anywhere).
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string                   `json:"type"`
			Title   string                   `json:"title"`
			ID      int                      `json:"id"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	ids := map[int]bool{}
	type rect struct{ x, y, w, h int }
	var rects []rect
	var titles []string
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.X < 0 || g.W <= 0 || g.X+g.W > 24 || g.H <= 0 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		r := rect{g.X, g.Y, g.W, g.H}
		for i, o := range rects {
			if r.x < o.x+o.w && o.x < r.x+r.w && r.y < o.y+o.h && o.y < r.y+r.h {
				t.Errorf("panel %q overlaps panel %q", p.Title, titles[i])
			}
		}
		rects = append(rects, r)
		titles = append(titles, p.Title)
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource should be the ${datasource} variable", p.Title)
		}
	}
}
