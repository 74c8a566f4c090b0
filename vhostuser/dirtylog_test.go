package vhostuser

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func memfdLog(t *testing.T, fileSize int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("log-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(fileSize)); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestDirtyLogBits: bit p%8 of byte p/8 for page p, set for every page a
// range touches, counted once; marks past the bitmap are counted, never
// written; the bitmap may start at an unaligned offset in its file.
func TestDirtyLogBits(t *testing.T) {
	fd := memfdLog(t, 8192)
	m, err := openLog(Log{Size: 16, Offset: 4099}, fd) // unaligned start
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	l := &DirtyLog{m: m}
	l.MarkGPA(0, 1)                  // page 0
	l.MarkGPA(3*LogPageSize-1, 2)    // pages 2 and 3
	l.MarkGPA(9*LogPageSize, 1)      // page 9: byte 1 bit 1
	l.MarkGPA(9*LogPageSize+100, 10) // page 9 again: not counted twice
	l.MarkGPA(127*LogPageSize, 1)    // last page the 16 bytes hold
	want := make([]byte, 16)
	want[0] = 1<<0 | 1<<2 | 1<<3
	want[1] = 1 << 1
	want[15] = 1 << 7
	for i := range want {
		if m.bitmap[i] != want[i] {
			t.Errorf("byte %d = %#x, want %#x", i, m.bitmap[i], want[i])
		}
	}
	if n := m.pages.Load(); n != 5 {
		t.Errorf("pages counted %d, want 5", n)
	}
	// Past the end: counted, and the file bytes after the log untouched.
	l.MarkGPA(128*LogPageSize, 3*LogPageSize)
	l.MarkGPA(^uint64(0)-10, 100) // wraps: no panic
	if m.over.Load() == 0 {
		t.Error("marks beyond the log not counted")
	}
	buf := make([]byte, 8192)
	if _, err := unix.Pread(fd, buf, 0); err != nil {
		t.Fatal(err)
	}
	for i, b := range buf {
		if (i < 4099 || i >= 4099+16) && b != 0 {
			t.Fatalf("file byte %d outside the log written: %#x", i, b)
		}
	}
}

// TestOpenLogRefusesBadLogs: a log larger than its file, an offset past the
// end, a zero size and a non-file fd are clear errors.
func TestOpenLogRefusesBadLogs(t *testing.T) {
	fd := memfdLog(t, 4096)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	for _, c := range []struct {
		name string
		l    Log
		fd   int
	}{
		{"larger than the file", Log{Size: 8192}, fd},
		{"offset past the end", Log{Size: 16, Offset: 4090}, fd},
		{"zero size", Log{Size: 0}, fd},
		{"not a file", Log{Size: 16}, efd},
	} {
		if m, err := openLog(c.l, c.fd); err == nil {
			m.close()
			t.Errorf("%s: accepted", c.name)
		} else if c.name != "not a file" && !errors.Is(err, ErrPayloadValue) {
			t.Errorf("%s: %v, want ErrPayloadValue", c.name, err)
		}
	}
}
