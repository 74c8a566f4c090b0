package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vhostd/vhostd/backend"
	"github.com/vhostd/vhostd/gso"
	"github.com/vhostd/vhostd/metrics"
	"github.com/vhostd/vhostd/metrics/internal/testrig"
)

// BenchmarkGather measures one scrape of a port's collector against the Go
// runtime collector as a same-run baseline (compare ns/op).
func BenchmarkGather(b *testing.B) {
	b.Run("baseline=go_runtime_collector", func(b *testing.B) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("vhostd_port", func(b *testing.B) {
		r := testrig.New(b, "bench", backend.NewNull(backend.NullConfig{Caps: testrig.CapsLow}), gso.PolicyAuto)
		pkts := []testrig.Packet{r.StagePacket(testrig.HdrTSO4, testrig.TSO4_30K), r.StagePacket(testrig.HdrBadGSO, testrig.TSO4_8K)}
		if err := r.Pump(100, pkts, func(i int) int { return i % 2 }); err != nil {
			b.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics.NewCollector(r.Port("null")))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkTxUnderScrape sends 8 KB TSO super-packets through a port (one
// op = one packet, posted and completed) with and without a scraper
// gathering the port's metrics every 10 ms (a thousand times the usual
// Prometheus rate), to show the datapath does not pay for being observed.
func BenchmarkTxUnderScrape(b *testing.B) {
	run := func(b *testing.B, scrape bool) {
		r := testrig.New(b, "bench", backend.NewNull(backend.NullConfig{}), gso.PolicyAuto)
		pkts := []testrig.Packet{r.StagePacket(testrig.HdrTSO4, testrig.TSO4_8K)}
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics.NewCollector(r.Port("null")))
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			if !scrape {
				return
			}
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if _, err := reg.Gather(); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
		b.ResetTimer()
		if err := r.Pump(b.N, pkts, func(int) int { return 0 }); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		close(stop)
		<-done
	}
	b.Run("baseline=no_scrape", func(b *testing.B) { run(b, false) })
	b.Run("scrape_every_10ms", func(b *testing.B) { run(b, true) })
}
