// Command migtool is the live-migration e2e's helper (no socat or python
// needed on the CI machine):
//
//	migtool SOCKET '{"execute":"query-status"}'   # one QMP command, prints the reply
//	migtool SOCKET wait-migration                 # polls query-migrate until completed or failed
//	migtool memdiff SRC DST PATTERN-HEX           # compares two RAM dumps page by page
//
// memdiff prints "pages=N packet_pages=M": N pages differ, and in M of them
// the source holds PATTERN (an Ethernet header: guest MAC then sender MAC)
// right after a virtio_net_hdr, where the destination does not: a frame
// vhostd delivered that reached the destination stale.
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) == 5 && os.Args[1] == "memdiff" {
		os.Exit(memdiff(os.Args[2], os.Args[3], os.Args[4]))
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: qmp SOCKET JSON-COMMAND | wait-migration")
		os.Exit(2)
	}
	c, err := dial(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "qmp:", err)
		os.Exit(1)
	}
	defer c.conn.Close()
	if os.Args[2] == "wait-migration" {
		os.Exit(c.waitMigration())
	}
	reply, err := c.run(json.RawMessage(os.Args[2]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "qmp:", err)
		os.Exit(1)
	}
	fmt.Println(string(reply))
}

type client struct {
	conn net.Conn
	r    *bufio.Reader
}

func dial(path string) (*client, error) {
	var conn net.Conn
	var err error
	for i := 0; i < 100; i++ {
		if conn, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, r: bufio.NewReader(conn)}
	if _, err := c.r.ReadBytes('\n'); err != nil { // greeting
		return nil, err
	}
	if _, err := c.run(json.RawMessage(`{"execute":"qmp_capabilities"}`)); err != nil {
		return nil, err
	}
	return c, nil
}

// run sends cmd and returns the first reply that is not an event.
func (c *client) run(cmd json.RawMessage) (json.RawMessage, error) {
	if _, err := c.conn.Write(append(cmd, '\n')); err != nil {
		return nil, err
	}
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("bad reply %q: %w", line, err)
		}
		if _, ev := m["event"]; ev {
			continue
		}
		if e, ok := m["error"]; ok {
			return nil, fmt.Errorf("QMP error: %s", e)
		}
		return m["return"], nil
	}
}

func (c *client) waitMigration() int {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		r, err := c.run(json.RawMessage(`{"execute":"query-migrate"}`))
		if err != nil {
			fmt.Fprintln(os.Stderr, "qmp:", err)
			return 1
		}
		var st struct {
			Status string `json:"status"`
		}
		json.Unmarshal(r, &st)
		switch st.Status {
		case "completed":
			fmt.Println(string(r))
			return 0
		case "failed", "cancelled":
			fmt.Println(string(r))
			return 1
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "qmp: migration did not finish in 5 minutes")
	return 1
}

func memdiff(srcPath, dstPath, patHex string) int {
	pat, err := hex.DecodeString(patHex)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memdiff: bad pattern:", err)
		return 2
	}
	src, err1 := os.ReadFile(srcPath)
	dst, err2 := os.ReadFile(dstPath)
	if err1 != nil || err2 != nil || len(src) != len(dst) {
		fmt.Fprintln(os.Stderr, "memdiff: cannot compare", err1, err2, len(src), len(dst))
		return 2
	}
	const page = 4096
	pages, pkt := 0, 0
	for off := 0; off+page <= len(src); off += page {
		a, b := src[off:off+page], dst[off:off+page]
		if bytes.Equal(a, b) {
			continue
		}
		pages++
		// A received frame the destination lacks: the pattern at an
		// offset where the destination has other bytes. (A page the guest
		// reused after the frame was consumed differs elsewhere only.)
		for i := 12; len(pat) > 0 && i+len(pat) <= page; {
			j := bytes.Index(a[i:], pat)
			if j < 0 {
				break
			}
			o := i + j
			// vhostd writes a frame after its 12-byte virtio_net_hdr,
			// whose num_buffers (the last u16, little endian) is 1..256;
			// the guest kernel's own copies of a frame's headers (into
			// an skb head) have no such header before them.
			nb := int(a[o-2]) | int(a[o-1])<<8
			// Stale: the destination has other bytes in the header and
			// the first 64 bytes of the frame (an older frame in a
			// recycled buffer has the same MACs but another IP id and
			// TCP sequence number).
			end := min(o+64, page)
			if nb >= 1 && nb <= 256 && !bytes.Equal(b[o-12:end], a[o-12:end]) {
				pkt++
				fmt.Fprintf(os.Stderr, "memdiff: page %#x: a received frame at offset %d is missing on the destination\n", off, o)
				break
			}
			i = o + 1
		}
	}
	fmt.Printf("pages=%d packet_pages=%d\n", pages, pkt)
	return 0
}
