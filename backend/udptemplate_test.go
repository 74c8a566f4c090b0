package backend

import (
	"testing"

	"github.com/vhostd/vhostd/virtionet/vnet"
)

func TestUDPTemplate(t *testing.T) {
	p := UDPTemplate(1514)
	if len(p) != 12+1514 {
		t.Fatalf("len %d", len(p))
	}
	ip := p[12+14 : 12+34]
	if sum := vnet.Checksum(ip, 0); sum != 0xffff {
		t.Errorf("IPv4 header checksum does not verify: %#x", sum)
	}
	if tot := int(ip[2])<<8 | int(ip[3]); tot != 1500 {
		t.Errorf("IPv4 total length %d", tot)
	}
}
