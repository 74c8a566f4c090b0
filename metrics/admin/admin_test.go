package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/backend/backendtest"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/admin"
	"github.com/vhostd/vhostd/metrics/internal/testrig"
	"github.com/vhostd/vhostd/virtionet"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve starts the admin API for the given ports on an httptest server.
func serve(t *testing.T, ports ...metrics.Port) (*httptest.Server, *admin.Server) {
	t.Helper()
	s, err := admin.New(admin.Config{Ports: ports, Logger: quietLog(), CaptureDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, s
}

// call sends a request and returns the status and body.
func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestStatusReportsNegotiationBackendRingsAndCounters(t *testing.T) {
	r := testrig.New(t, "vm0", backend.NewNull(backend.NullConfig{Caps: testrig.CapsLow}), gso.PolicyAuto)
	if err := r.Pump(40, []testrig.Packet{r.StagePacket(testrig.HdrTSO4, testrig.TSO4_30K)}, func(int) int { return 0 }); err != nil {
		t.Fatal(err)
	}
	ts, _ := serve(t, r.Port("null"))
	code, body := call(t, "GET", ts.URL+"/status", "")
	if code != 200 {
		t.Fatalf("GET /status: %d %s", code, body)
	}
	var st metrics.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Ports) != 1 {
		t.Fatalf("%d ports", len(st.Ports))
	}
	ps := st.Ports[0]
	if ps.Name != "vm0" || ps.Policy != "auto" || ps.HdrLen != 12 || ps.Connected == nil || !*ps.Connected {
		t.Errorf("port header wrong: %+v", ps)
	}
	for _, f := range []string{"HOST_TSO4", "VERSION_1", "MRG_RXBUF", "PROTOCOL_FEATURES"} {
		if !slices.Contains(ps.Negotiated.Names, f) {
			t.Errorf("negotiated features %v lack %s", ps.Negotiated.Names, f)
		}
	}
	if !slices.Contains(ps.DeviceStatus, "DRIVER_OK") {
		t.Errorf("device status %v lacks DRIVER_OK", ps.DeviceStatus)
	}
	qp := ps.QueuePairs[0]
	if qp.Backend.GSOMaxSize != 16384 || !slices.Equal(qp.Backend.Offloads, []string{"csum", "tso4", "tso6", "uso"}) {
		t.Errorf("backend %+v", qp.Backend)
	}
	if len(qp.Rings) != 2 || qp.Rings[1].Kind != "tx" || !qp.Rings[1].Started || qp.Rings[1].Size != 256 {
		t.Errorf("rings %+v", qp.Rings)
	}
	if qp.Counters.Get(virtionet.CtrTxPosted) != 40 || qp.Counters.Labelled(virtionet.CtrTxPackets)["resegmented"] != 40 || qp.Counters.Labelled(virtionet.CtrTxDecisions)["gso_max_size"] != 40 {
		t.Errorf("counters %+v", qp.Counters)
	}
	if len(ps.Diagnosis) == 0 || ps.Diagnosis[0].Severity != "warning" || !strings.Contains(ps.Diagnosis[0].Message, "gso_max_size 16384") {
		t.Errorf("diagnosis %+v", ps.Diagnosis)
	}

	code, body = call(t, "GET", ts.URL+"/status?port=nope", "")
	if code != 404 || !strings.Contains(body, `no port \"nope\": this vhostd serves vm0`) {
		t.Errorf("unknown port: %d %s", code, body)
	}
}

func TestPolicyEndpoint(t *testing.T) {
	r := testrig.New(t, "p0", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	ts, _ := serve(t, r.Port("null"))
	url := ts.URL + "/ports/p0/policy"
	cases := []struct {
		name, query, body string
		code              int
		want              string // in the body
		policy            gso.Policy
	}{
		{"query", "?policy=software", "", 200, `"previous": "auto"`, gso.PolicySoftware},
		{"plain body", "", "defer\n", 200, `"policy": "defer"`, gso.PolicyDefer},
		{"json body", "", `{"policy": "auto"}`, 200, `"previous": "defer"`, gso.PolicyAuto},
		{"unknown", "?policy=fast", "", 400, `unknown GSO policy \"fast\": use auto, defer or software`, gso.PolicyAuto},
		{"empty", "", "", 400, "no policy given: send auto, defer or software", gso.PolicyAuto},
		{"bad json", "", `{"policy": `, 400, "body is not valid JSON", gso.PolicyAuto},
		{"huge", "", strings.Repeat("a", 1000), 400, "longer than 256 bytes", gso.PolicyAuto},
	}
	for _, c := range cases {
		code, body := call(t, "PUT", url+c.query, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s; want %d with %q", c.name, code, body, c.code, c.want)
		}
		if got := r.Dev.Policy(); got != c.policy {
			t.Errorf("%s: device policy %v, want %v", c.name, got, c.policy)
		}
	}
	if code, body := call(t, "GET", url, ""); code != 200 || !strings.Contains(body, `"policy": "auto"`) {
		t.Errorf("GET policy: %d %s", code, body)
	}
	if code, _ := call(t, "POST", url, "auto"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST policy: %d, want 405", code)
	}
	if code, body := call(t, "PUT", ts.URL+"/ports/other/policy?policy=auto", ""); code != 404 || !strings.Contains(body, "this vhostd serves p0") {
		t.Errorf("unknown port: %d %s", code, body)
	}
}

// TestPolicySwitchOverHTTPMidTraffic switches the policy through the API
// while the guest transmits and scrapes /metrics meanwhile: the path
// counters move and every packet is accounted for.
func TestPolicySwitchOverHTTPMidTraffic(t *testing.T) {
	null := backend.NewNull(backend.NullConfig{})
	r := testrig.New(t, "live", null, gso.PolicyAuto)
	ts, _ := serve(t, r.Port("null"))
	pkts := []testrig.Packet{r.StagePacket(testrig.HdrTSO4, testrig.TSO4_8K)}
	st := r.Dev.QueuePairs()[0].Stats()
	stop := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := r.PumpUntil(stop, pkts, func(int) int { return 0 })
		done <- result{n, err}
	}()
	waitFor(t, func() bool { return st.Load(virtionet.CtrTxPackets.At(int(0))) >= 500 })
	if code, body := call(t, "GET", ts.URL+"/metrics", ""); code != 200 || !strings.Contains(body, `vhostd_tx_packets_total{path="passthrough",port="live",queue="0"}`) {
		t.Fatalf("scrape during traffic: %d", code)
	}
	if code, body := call(t, "PUT", ts.URL+"/ports/live/policy?policy=software", ""); code != 200 {
		t.Fatalf("switch: %d %s", code, body)
	}
	waitFor(t, func() bool { return st.Load(virtionet.CtrTxPackets.At(int(2))) >= 500 }) // segmented
	close(stop)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	n := uint64(res.n)
	waitFor(t, func() bool { return st.TxWritten()+st.TxDropTotal() == n })
	c := metrics.SnapshotPort(r.Port("null")).QueuePairs[0].Counters
	pass, seg := c.Labelled(virtionet.CtrTxPackets)["passthrough"], c.Labelled(virtionet.CtrTxPackets)["segmented"]
	if pass+seg != n || c.Get(virtionet.CtrTxPosted) != n || c.TxDropped() != 0 {
		t.Errorf("posted %d: passthrough %d + segmented %d, dropped %d", c.Get(virtionet.CtrTxPosted), pass, seg, c.TxDropped())
	}
	if w, _ := null.Written(); w != pass+6*seg {
		t.Errorf("backend got %d packets, want %d passed whole + %d segments", w, pass, 6*seg)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func TestMetricsPprofAndIndex(t *testing.T) {
	r := testrig.New(t, "m", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	ts, _ := serve(t, r.Port("null"))
	code, body := call(t, "GET", ts.URL+"/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{"vhostd_tx_posted_packets_total", "vhostd_port_info", "process_cpu_seconds_total", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems { // the Go and process collectors included
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if code, body := call(t, "GET", ts.URL+"/debug/pprof/", ""); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d", code)
	}
	if code, body := call(t, "GET", ts.URL+"/", ""); code != 200 || !strings.Contains(body, "PUT    /ports/NAME/policy") {
		t.Errorf("index: %d %s", code, body)
	}
}

func TestDuplicatePortNamesRefused(t *testing.T) {
	r := testrig.New(t, "same", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	_, err := admin.New(admin.Config{Ports: []metrics.Port{r.Port("null"), r.Port("null")}, Logger: quietLog()})
	if err == nil || !strings.Contains(err.Error(), `two ports are named "same"`) {
		t.Errorf("err = %v", err)
	}
}

func TestClient(t *testing.T) {
	r := testrig.New(t, "c0", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	ts, _ := serve(t, r.Port("null"))
	cl := admin.NewClient(ts.URL)
	ctx := context.Background()
	st, err := cl.Status(ctx, "")
	if err != nil || len(st.Ports) != 1 || st.Ports[0].Name != "c0" {
		t.Fatalf("Status: %+v %v", st, err)
	}
	res, err := cl.SetPolicy(ctx, "c0", "defer")
	if err != nil || res.Policy != "defer" || res.Previous != "auto" {
		t.Fatalf("SetPolicy: %+v %v", res, err)
	}
	if _, err := cl.SetPolicy(ctx, "c0", "bogus"); err == nil || !strings.Contains(err.Error(), "use auto, defer or software") {
		t.Errorf("bad policy error: %v", err)
	}
	if _, err := cl.Status(ctx, "zz"); err == nil || !strings.Contains(err.Error(), `no port "zz"`) {
		t.Errorf("unknown port error: %v", err)
	}

	// Nothing listening: the error says what to check.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = admin.NewClient(addr).Status(ctx, "")
	if err == nil || !strings.Contains(err.Error(), "is vhostd running, and with --admin-addr "+addr) {
		t.Errorf("refused error: %v", err)
	}
}

func TestListenInUseSaysWhatToDo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = admin.Listen(ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "give this one its own --admin-addr") {
		t.Errorf("err = %v", err)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	r := testrig.New(t, "s", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	s, err := admin.New(admin.Config{Ports: []metrics.Port{r.Port("null")}, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := admin.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.ServeReadOnly(ctx, ln) }()
	if _, err := admin.NewClient(ln.Addr().String()).Status(ctx, ""); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// --- capture ---

// readPcap returns the packets of a pcap file.
func readPcap(t *testing.T, path string) ([]gopacket.CaptureInfo, [][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if rd.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type %v", rd.LinkType())
	}
	var cis []gopacket.CaptureInfo
	var data [][]byte
	for {
		d, ci, err := rd.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		cis = append(cis, ci)
		data = append(data, d)
	}
	return cis, data
}

// readTSV returns the decision lines (header excluded), split in fields.
func readTSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	sc := bufio.NewScanner(f)
	first := true
	for sc.Scan() {
		if first {
			first = false
			if !strings.HasPrefix(sc.Text(), "# index\ttime\tdir\tqueue\tpath\tdecision\treason\tdropped\tgso_type\tgso_size\tcsum_start\tcsum_offset\torig_len") {
				t.Errorf("TSV header %q", sc.Text())
			}
			continue
		}
		rows = append(rows, strings.Split(sc.Text(), "\t"))
	}
	return rows
}

func TestCaptureTxWritesPcapAndDecisions(t *testing.T) {
	r := testrig.New(t, "cap", backend.NewNull(backend.NullConfig{Caps: testrig.CapsLow}), gso.PolicyAuto)
	ts, srv := serve(t, r.Port("null"))
	pkts := []testrig.Packet{
		r.StagePacket(testrig.HdrTSO4, testrig.TSO4_8K),    // passthrough
		r.StagePacket(testrig.HdrTSO4, testrig.TSO4_30K),   // resegmented (gso_max_size)
		r.StagePacket(testrig.HdrBadGSO, testrig.TSO4_8K),  // dropped: hdr_invalid
		r.StagePacket(testrig.HdrPlain, testrig.UDPSmall),  // plain
		r.StagePacket(testrig.HdrTSO4ECN, testrig.TSO4_8K), // segmented (no_tso_ecn)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := r.PumpUntil(stop, pkts, func(i int) int { return i % len(pkts) })
		done <- err
	}()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	file := filepath.Join(srv.CaptureDir(), "tx.pcap")
	res, err := admin.NewClient(ts.URL).Capture(context.Background(), "cap",
		admin.CaptureRequest{Dir: "tx", Count: 200, File: "tx.pcap", Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete || res.Packets != 200 || res.File != file || res.DecisionsFile != file+".decisions.tsv" || res.Ended != "count reached" {
		t.Fatalf("result %+v", res)
	}
	t.Logf("captured %d, skipped %d", res.Packets, res.Skipped)
	cis, data := readPcap(t, file)
	rows := readTSV(t, res.DecisionsFile)
	if len(cis) != 200 || len(rows) != 200 {
		t.Fatalf("%d pcap packets, %d TSV rows; want 200", len(cis), len(rows))
	}
	seen := map[string]int{}
	for i, row := range rows {
		if len(row) != 14 {
			t.Fatalf("row %d has %d fields: %q", i, len(row), row)
		}
		if row[0] != strconv.Itoa(i) || row[2] != "tx" || row[3] != "0" {
			t.Errorf("row %d: %q", i, row)
		}
		if ol, _ := strconv.Atoi(row[12]); ol != cis[i].Length || ol != len(data[i]) {
			t.Errorf("row %d orig_len %s, pcap length %d, data %d", i, row[12], cis[i].Length, len(data[i]))
		}
		if _, err := time.Parse(time.RFC3339Nano, row[1]); err != nil {
			t.Errorf("row %d time %q: %v", i, row[1], err)
		}
		pkt := gopacket.NewPacket(data[i], layers.LayerTypeEthernet, gopacket.Default)
		if pkt.Layer(layers.LayerTypeIPv4) == nil {
			t.Errorf("packet %d does not decode as Ethernet/IPv4: %v", i, pkt.ErrorLayer())
		}
		key := strings.Join(row[4:9], " ") // path decision reason dropped gso_type
		seen[key]++
	}
	for _, want := range []string{
		"passthrough pass_whole none - tcpv4",
		"resegmented resegment gso_max_size - tcpv4",
		"- - - hdr_invalid tcpv4",
		"plain pass_whole none - none",
		"segmented segment no_tso_ecn - tcpv4|ecn",
	} {
		if seen[want] == 0 {
			t.Errorf("no TSV row with %q; saw %v", want, seen)
		}
	}
}

func TestCaptureRxAndPcapng(t *testing.T) {
	pipe := backendtest.NewPipe(backend.Capabilities{})
	r := testrig.New(t, "rx", pipe, gso.PolicyAuto)
	ts, srv := serve(t, r.Port("pipe"))
	if err := r.PostRx(32, 2048); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(srv.CaptureDir(), "rx.pcapng")
	type out struct {
		res admin.CaptureResult
		err error
	}
	resc := make(chan out, 1)
	go func() {
		res, err := admin.NewClient(ts.URL).Capture(context.Background(), "rx",
			admin.CaptureRequest{Dir: "both", Count: 5, File: "rx.pcapng", Format: "pcapng", Timeout: 20 * time.Second})
		resc <- out{res, err}
	}()
	// Inject only once the capture is attached.
	waitFor(t, func() bool {
		code, body := call(t, "GET", ts.URL+"/ports/rx/capture", "")
		return code == 200 && strings.Contains(body, `"state": "running"`)
	})
	frame := testrig.UDPPacket(100, false)
	for i := 0; i < 5; i++ {
		if err := pipe.Inject(append(testrig.HdrPlain, frame...)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.WaitRx(5); err != nil {
		t.Fatal(err)
	}
	o := <-resc
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.res.Packets != 5 || o.res.Format != "pcapng" || o.res.Dir != "both" {
		t.Fatalf("result %+v", o.res)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		d, _, opts, err := rd.ReadPacketDataWithOptions()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if string(d) != string(frame) {
			t.Errorf("packet %d differs from the injected frame", n)
		}
		if len(opts.Comments) != 1 || !strings.HasPrefix(opts.Comments[0], "vhostd rx queue 0 virtio_net_hdr: gso_type=none") {
			t.Errorf("packet %d comments %q", n, opts.Comments)
		}
	}
	if n != 5 {
		t.Errorf("%d packets in the pcapng file", n)
	}
	for _, row := range readTSV(t, file+".decisions.tsv") {
		if row[2] != "rx" || row[4] != "-" || row[7] != "-" {
			t.Errorf("rx row %q", row)
		}
	}
	// GET after the run returns the last result.
	if code, body := call(t, "GET", ts.URL+"/ports/rx/capture", ""); code != 200 || !strings.Contains(body, `"complete": true`) {
		t.Errorf("GET capture after the run: %d %s", code, body)
	}
}

func TestCaptureConflictStopAndErrors(t *testing.T) {
	r := testrig.New(t, "cc", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	ts, srv := serve(t, r.Port("null"))
	base := ts.URL + "/ports/cc/capture"
	dir := srv.CaptureDir()

	if code, body := call(t, "GET", base, ""); code != 404 || !strings.Contains(body, "no capture has run on port cc yet") {
		t.Errorf("GET before any capture: %d %s", code, body)
	}
	// A capture that waits for traffic that never comes.
	first := filepath.Join(dir, "long.pcap")
	type out struct {
		code int
		body string
	}
	resc := make(chan out, 1)
	go func() {
		code, body := call(t, "PUT", base+"?dir=tx&count=1000&timeout=30s&file=long.pcap", "")
		resc <- out{code, body}
	}()
	waitFor(t, func() bool {
		code, body := call(t, "GET", base, "")
		return code == 200 && strings.Contains(body, `"state": "running"`)
	})
	code, body := call(t, "PUT", base+"?dir=tx&count=5&file=second.pcap", "")
	if code != http.StatusConflict || !strings.Contains(body, "a capture is already running on port cc") {
		t.Errorf("second capture: %d %s", code, body)
	}
	if code, body := call(t, "DELETE", base, ""); code != 200 || !strings.Contains(body, `"stopping": true`) {
		t.Errorf("DELETE: %d %s", code, body)
	}
	o := <-resc
	var res admin.CaptureResult
	if err := json.Unmarshal([]byte(o.body), &res); o.code != 200 || err != nil {
		t.Fatalf("first capture: %d %s", o.code, o.body)
	}
	if res.Complete || res.Ended != "stopped" || res.Packets != 0 {
		t.Errorf("stopped capture result %+v", res)
	}
	if cis, _ := readPcap(t, first); len(cis) != 0 {
		t.Errorf("%d packets in an empty capture", len(cis))
	}
	if code, _ := call(t, "DELETE", base, ""); code != 404 {
		t.Errorf("DELETE with nothing running: %d", code)
	}

	bad := []struct{ query, want string }{
		{"?dir=up&count=1", `dir=\"up\": use tx (guest to backend), rx (backend to guest) or both`},
		{"?dir=tx", "count is missing"},
		{"?dir=tx&count=0", "give a number of packets from 1 to"},
		{"?dir=tx&count=5&snaplen=10", "snaplen="},
		{"?dir=tx&count=5&format=json", "use pcap or pcapng"},
		{"?dir=tx&count=5&timeout=forever", "give a duration such as 30s"},
		{"?dir=tx&count=5&file=/nonexistent-dir/x.pcap", "give a plain file name such as vm0.pcap"},
	}
	for _, b := range bad {
		code, body := call(t, "PUT", base+b.query, "")
		if code != 400 || !strings.Contains(body, b.want) {
			t.Errorf("PUT %s: %d %s; want 400 with %q", b.query, code, body, b.want)
		}
	}
	if code, body := call(t, "PUT", base+"?dir=tx&count=5&file=long.pcap", ""); code != http.StatusConflict || !strings.Contains(body, "already exists: choose another file= or remove it") {
		t.Errorf("PUT over an existing capture: %d %s", code, body)
	}
}

func TestCaptureDefaultFileAndTimeout(t *testing.T) {
	r := testrig.New(t, "d", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
	_, s := serve(t, r.Port("null"))
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	res, err := admin.NewClient(ts.URL).Capture(context.Background(), "d", admin.CaptureRequest{Count: 3, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ended != "timeout" || res.Complete || !strings.Contains(filepath.Base(res.File), "vhostd-d-") || !strings.HasSuffix(res.File, ".pcap") {
		t.Errorf("result %+v", res)
	}
	if _, err := os.Stat(res.DecisionsFile); err != nil {
		t.Error(err)
	}
}
