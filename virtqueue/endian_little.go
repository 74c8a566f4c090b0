//go:build !(armbe || arm64be || m68k || mips || mips64 || mips64p32 || ppc || ppc64 || s390 || s390x || shbe || sparc || sparc64)

package virtqueue

// hostBigEndian reports whether native 32-bit loads see bytes in big-endian
// order. Ring fields are little-endian (virtio 1.x, §2.7), so the atomic
// word accessors in access.go swap bytes only on big-endian hosts.
const hostBigEndian = false
