//go:build !amd64

package vnet

const hasAVX2 = false

const vectorMin = 1 << 62

func sumAVX2(b []byte) uint64 { panic("unreachable") }
