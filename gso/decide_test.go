package gso

import (
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

func TestDecide(t *testing.T) {
	all := vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadTSO6 | vnet.OffloadTSOECN | vnet.OffloadUSO | vnet.OffloadUFO
	tcp4 := pktSpec{payloadLen: 60000, mss: 1448, gsoType: vnet.GSOTCPv4}
	tcp6 := pktSpec{ipv6: true, payloadLen: 60000, mss: 1448, gsoType: vnet.GSOTCPv6}
	tcp6ext := pktSpec{ipv6: true, payloadLen: 6000, mss: 1448, gsoType: vnet.GSOTCPv6, v6Ext: []v6ext{{ProtoHopByHop, 8}}}
	uso6ext := pktSpec{udp: true, ipv6: true, payloadLen: 6000, mss: 1400, gsoType: vnet.GSOUDPL4, v6Ext: []v6ext{{ProtoDestOpts, 8}}}
	ecn := pktSpec{payloadLen: 6000, mss: 1448, gsoType: vnet.GSOTCPv4 | vnet.GSOECN}
	uso := pktSpec{udp: true, payloadLen: 6000, mss: 1400, gsoType: vnet.GSOUDPL4}
	ufo := pktSpec{udp: true, payloadLen: 6000, mss: 1480, gsoType: vnet.GSOUDP}
	ufo6ext := pktSpec{udp: true, ipv6: true, payloadLen: 6000, mss: 1400, gsoType: vnet.GSOUDP, v6Ext: []v6ext{{ProtoHopByHop, 8}}}
	qinq := pktSpec{vlanTPIDs: []uint16{EtherTypeQinQ, EtherTypeVLAN}, payloadLen: 6000, mss: 1448, gsoType: vnet.GSOTCPv4}
	plainCsum := pktSpec{payloadLen: 1000}
	plainNoCsum := pktSpec{payloadLen: 1000, noCsum: true}
	small := pktSpec{payloadLen: 1000, mss: 1448, gsoType: vnet.GSOTCPv4}
	gsoNoCsum := pktSpec{payloadLen: 6000, mss: 1448, gsoType: vnet.GSOTCPv4, noCsum: true}
	bigMSS := pktSpec{payloadLen: 60000, mss: 8960, gsoType: vnet.GSOTCPv4}

	cases := []struct {
		name string
		spec pktSpec
		f    vnet.Offloads
		l    Limits
		p    Policy
		dec  Decision
		r    Reason
	}{
		{"tso4 whole", tcp4, all, Limits{GSOMaxSize: 65536, GSOMaxSegs: 65535}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"no tso4", tcp4, all &^ vnet.OffloadTSO4, Limits{}, PolicyAuto, DecisionSegment, ReasonNoTSO4},
		{"no tso6", tcp6, all &^ vnet.OffloadTSO6, Limits{}, PolicyAuto, DecisionSegment, ReasonNoTSO6},
		{"no csum", tcp4, all &^ vnet.OffloadCSUM, Limits{}, PolicyAuto, DecisionSegment, ReasonNoCsum},
		{"no csum wins over no tso", tcp4, vnet.OffloadTSO6, Limits{}, PolicyAuto, DecisionSegment, ReasonNoCsum},
		{"gso_max_size resegment", tcp4, all, Limits{GSOMaxSize: 16384}, PolicyAuto, DecisionResegment, ReasonGSOMaxSize},
		{"gso_max_size is >=", pktSpec{payloadLen: 16384 - 54, mss: 1448, gsoType: vnet.GSOTCPv4}, all, Limits{GSOMaxSize: 16384}, PolicyAuto, DecisionResegment, ReasonGSOMaxSize},
		{"just under gso_max_size", pktSpec{payloadLen: 16383 - 54, mss: 1448, gsoType: vnet.GSOTCPv4}, all, Limits{GSOMaxSize: 16384}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"gso_ipv4_max_size", tcp4, all, Limits{GSOMaxSize: 65536 * 2, GSOIPv4MaxSize: 16384}, PolicyAuto, DecisionResegment, ReasonGSOMaxSize},
		{"gso_ipv4_max_size not for v6", tcp6, all, Limits{GSOMaxSize: 65536 * 2, GSOIPv4MaxSize: 16384}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"gso_max_segs resegment", tcp4, all, Limits{GSOMaxSegs: 8}, PolicyAuto, DecisionResegment, ReasonGSOMaxSegs},
		{"gso_max_segs before size", tcp4, all, Limits{GSOMaxSegs: 8, GSOMaxSize: 16384}, PolicyAuto, DecisionResegment, ReasonGSOMaxSegs},
		{"gso_max_segs 1 segments", tcp4, all, Limits{GSOMaxSegs: 1}, PolicyAuto, DecisionSegment, ReasonGSOMaxSegs},
		{"size fits one mss only", bigMSS, all, Limits{GSOMaxSize: 16384}, PolicyAuto, DecisionSegment, ReasonGSOMaxSize},
		{"limit and no tso: feature reported", tcp4, all &^ vnet.OffloadTSO4, Limits{GSOMaxSize: 16384}, PolicyAuto, DecisionSegment, ReasonNoTSO4},
		{"ecn needs tso_ecn", ecn, all &^ vnet.OffloadTSOECN, Limits{}, PolicyAuto, DecisionSegment, ReasonNoTSOECN},
		{"ecn with tso_ecn", ecn, all, Limits{}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"uso", uso, all, Limits{}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"no uso", uso, all &^ vnet.OffloadUSO, Limits{}, PolicyAuto, DecisionSegment, ReasonNoUSO},
		{"uso resegment", uso, all, Limits{GSOMaxSegs: 2}, PolicyAuto, DecisionResegment, ReasonGSOMaxSegs},
		{"ufo", ufo, all, Limits{}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"no ufo", ufo, all &^ vnet.OffloadUFO, Limits{}, PolicyAuto, DecisionSegment, ReasonNoUFO},
		{"ufo over limit is not resegmented", ufo, all, Limits{GSOMaxSize: 4000}, PolicyAuto, DecisionSegment, ReasonGSOMaxSize},
		{"ufo6 exthdr drop", ufo6ext, all &^ vnet.OffloadUFO, Limits{}, PolicyAuto, DecisionDrop, ReasonUFOIPv6ExtHdr},
		{"ufo6 exthdr whole", ufo6ext, all, Limits{}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"v6 exthdr hw csum", tcp6ext, all, Limits{}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"v6 exthdr ipv6_csum", tcp6ext, all | vnet.OffloadCSUMProtoSpecific, Limits{}, PolicyAuto, DecisionSegment, ReasonIPv6ExtHdr},
		{"uso v6 exthdr ipv6_csum", uso6ext, all | vnet.OffloadCSUMProtoSpecific, Limits{}, PolicyAuto, DecisionSegment, ReasonIPv6ExtHdr},
		{"qinq", qinq, all, Limits{}, PolicyAuto, DecisionSegment, ReasonVLANMulti},
		{"qinq ipv4_csum", qinq, all | vnet.OffloadCSUMProtoSpecific, Limits{}, PolicyAuto, DecisionSegment, ReasonVLANMulti},
		{"gso without needs_csum", gsoNoCsum, all, Limits{}, PolicyAuto, DecisionSegment, ReasonGSONoNeedsCsum},
		{"mss over mtu", tcp4, all &^ vnet.OffloadTSO4, Limits{MTU: 1400}, PolicyAuto, DecisionDrop, ReasonMSSExceedsMTU},
		{"mss at mtu", tcp4, all &^ vnet.OffloadTSO4, Limits{MTU: 1488}, PolicyAuto, DecisionSegment, ReasonNoTSO4},
		{"mtu does not matter whole", tcp4, all, Limits{MTU: 1400}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"defer", tcp4, 0, Limits{GSOMaxSize: 1000}, PolicyDefer, DecisionPassWhole, ReasonPolicy},
		{"software", tcp4, all, Limits{}, PolicySoftware, DecisionSegment, ReasonPolicy},
		{"plain csum", plainCsum, all, Limits{}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"plain csum no backend csum", plainCsum, 0, Limits{}, PolicyAuto, DecisionCompleteCsum, ReasonNoCsum},
		{"plain csum no backend csum software", plainCsum, 0, Limits{}, PolicySoftware, DecisionCompleteCsum, ReasonNoCsum},
		{"plain csum no backend csum defer", plainCsum, 0, Limits{}, PolicyDefer, DecisionPassWhole, ReasonPolicy},
		{"plain no csum", plainNoCsum, 0, Limits{}, PolicyAuto, DecisionPassWhole, ReasonNone},
		{"small gso", small, all, Limits{}, PolicyAuto, DecisionPassPlain, ReasonSmallGSO},
		{"small gso no csum", small, 0, Limits{}, PolicyAuto, DecisionCompleteCsum, ReasonNoCsum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frame, h := c.spec.build()
			m, r := Parse(frame, h)
			if r != ReasonNone {
				t.Fatalf("parse: %v", r)
			}
			d, dr := Decide(m, c.f, c.l, c.p)
			if d != c.dec || dr != c.r {
				t.Fatalf("got %v/%v, want %v/%v", d, dr, c.dec, c.r)
			}
		})
	}
}

func TestNamesAreSnakeCaseAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for r := Reason(0); r < NumReasons; r++ {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Fatalf("reason %d: bad or duplicate name %q", r, s)
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				t.Fatalf("reason %q is not snake_case", s)
			}
		}
		seen[s] = true
		if r.Malformed() != (len(s) > 10 && s[:10] == "malformed_") {
			t.Fatalf("reason %q: Malformed() = %v", s, r.Malformed())
		}
	}
	for d := Decision(0); d < NumDecisions; d++ {
		if d.String() == "unknown" {
			t.Fatalf("decision %d has no name", d)
		}
	}
	for _, p := range []Policy{PolicyAuto, PolicyDefer, PolicySoftware} {
		q, err := ParsePolicy(p.String())
		if err != nil || q != p {
			t.Fatalf("policy %v round trip: %v %v", p, q, err)
		}
	}
	if _, err := ParsePolicy("fast"); err == nil {
		t.Fatal("ParsePolicy accepted an unknown policy")
	}
	if got := (vnet.OffloadCSUM | vnet.OffloadTSO4 | vnet.OffloadUSO).String(); got != "csum|tso4|uso" {
		t.Fatalf("features string %q", got)
	}
}
