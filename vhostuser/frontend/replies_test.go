package frontend

import (
	"testing"

	"github.com/vhostd/vhostd/vhostuser"
)

// TestDispatchTableOwesSpecReplies holds the back-end's dispatch table
// against the specification's list of mandatory replies (OwedReply): a row
// that answers a request the spec says gets no reply, or stays silent where
// the front-end waits, would hang or desynchronise QEMU.
func TestDispatchTableOwesSpecReplies(t *testing.T) {
	n := 0
	for r := vhostuser.Request(0); r < 255; r++ {
		if !r.Known() {
			continue
		}
		n++
		want := OwedReply(r) != ReplyNone
		if got := vhostuser.ReplyMandatory(r); got != want {
			t.Errorf("%v: dispatch table says mandatory reply %v, vhost-user.rst says %v (%v)", r, got, want, OwedReply(r))
		}
	}
	if n < 44 {
		t.Fatalf("only %d known requests; the request list shrank?", n)
	}
}

func TestOwedReplyKnownCases(t *testing.T) {
	for _, c := range []struct {
		r    vhostuser.Request
		want Reply
	}{
		{vhostuser.ReqGetFeatures, ReplyValue},
		{vhostuser.ReqSetFeatures, ReplyNone},
		{vhostuser.ReqGetVringBase, ReplyValue},
		{vhostuser.ReqSetVringKick, ReplyNone},
		{vhostuser.ReqIOTLBMsg, ReplyStatus},
		{vhostuser.ReqSetMemTable, ReplyNone},
		{vhostuser.ReqNetSetMTU, ReplyNone},
		{vhostuser.ReqCheckDeviceState, ReplyStatus},
	} {
		if got := OwedReply(c.r); got != c.want {
			t.Errorf("OwedReply(%v) = %v, want %v", c.r, got, c.want)
		}
	}
}
