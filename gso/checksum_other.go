//go:build !amd64

package gso

const hasAVX2 = false

const vectorMin = 1 << 62

func sumAVX2(b []byte) uint64 { panic("unreachable") }
