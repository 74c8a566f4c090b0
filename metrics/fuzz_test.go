package metrics_test

import (
	"encoding/json"
	"io"
	"testing"

	"github.com/vhostd/vhostd/metrics"
)

// FuzzStatusJSON feeds arbitrary GET /status answers to what the CLI does
// with them: diagnosis, interval subtraction and both text renderings. The
// JSON comes over the network from whatever answers at --admin-addr, so no
// shape of it may panic (histograms with mismatched bounds, maps with odd
// keys, counters going backwards).
func FuzzStatusJSON(f *testing.F) {
	f.Add([]byte(`{"ports":[{"name":"vm0","policy":"auto","queue_pairs":[{"index":0,"backend":{"offloads":["csum"],"gso_max_size":16384},"counters":{"tx_posted":10,"tx_gso_packets":10,"tx_packets":{"resegmented":10},"tx_bytes":{"resegmented":600000},"tx_decisions":{"gso_max_size":10},"tx_completion_latency_seconds":{"bounds":[0.001,0.002],"counts":[50,60,0],"count":110,"sum":0.2}}}]}]}`))
	f.Add([]byte(`{"ports":[{"name":"x","queue_pairs":[{"counters":{"tx_completion_latency_seconds":{"bounds":[],"counts":[1,2,3],"count":200}}}]}]}`))
	f.Add([]byte(`{"ports":[{"name":"x","connected":false,"queue_pairs":[{"counters":{"tx_drops":{"hdr_invalid":3},"rx_drops":{"rx_buffer_too_small":1},"tx_broken":true}}]}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st metrics.Status
		if json.Unmarshal(data, &st) != nil {
			return
		}
		for i := range st.Ports {
			p := st.Ports[i]
			_ = metrics.Diagnose(p)
			iv := p.Since(&st.Ports[0])
			_ = iv.Diagnosis
			for _, qp := range p.QueuePairs {
				_ = metrics.StatLines(&qp.Counters, true)
				_, _ = qp.Counters.TxLatency.Quantile(0.99)
			}
		}
		_ = metrics.WriteStatus(io.Discard, st)
		_ = metrics.WriteStats(io.Discard, st, true)
	})
}
