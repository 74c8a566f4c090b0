package virtionet_test

import (
	"github.com/vhostd/vhostd/gso"
)

func parsePolicy(s string) (gso.Policy, error) { return gso.ParsePolicy(s) }

type gsoPolicy = gso.Policy
