package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// recvFdCapacity sizes the control buffer of the header recvmsg. It is larger
// than MaxFds so that a front-end sending a few too many fds is caught (and
// the fds closed) instead of having the kernel drop them silently; anything
// beyond it arrives with MSG_CTRUNC and the kernel closes the rest.
const recvFdCapacity = 32

// ErrTooManyFds marks a message that arrived with more than MaxFds fds.
var ErrTooManyFds = errors.New("vhost-user: too many file descriptors with one message")

// Message is one received message. Payload and Fds are only valid until the
// next ReadMessage on the same Conn. A handler that keeps an fd takes it with
// TakeFd; whoever reads the message closes the remaining ones with CloseFds.
type Message struct {
	Header  Header
	Payload []byte
	Fds     []int
	// TooManyFds is set when the front-end sent more than MaxFds fds. Only the
	// first MaxFds are in Fds; the others were closed on receipt.
	TooManyFds bool
}

// TakeFd hands fd i over to the caller; CloseFds will not close it.
func (m *Message) TakeFd(i int) int {
	fd := m.Fds[i]
	m.Fds[i] = -1
	return fd
}

// CloseFds closes every fd not taken.
func (m *Message) CloseFds() {
	for i, fd := range m.Fds {
		if fd >= 0 {
			unix.Close(fd)
			m.Fds[i] = -1
		}
	}
}

// Conn reads and writes vhost-user messages on a unix stream socket,
// passing fds as SCM_RIGHTS on the header (vhost-user.rst, "Communication").
// A Conn is not safe for concurrent reads or concurrent writes, but one
// reader and one writer may run at once.
type Conn struct {
	uc *net.UnixConn

	hdr     [HeaderSize]byte
	payload [MaxPayloadSize]byte
	oob     []byte
	fds     [MaxFds]int

	wbuf []byte
}

// NewConn wraps a connected unix stream socket. Close closes it.
func NewConn(uc *net.UnixConn) *Conn {
	return &Conn{
		uc:   uc,
		oob:  make([]byte, unix.CmsgSpace(recvFdCapacity*4)),
		wbuf: make([]byte, 0, HeaderSize+MaxPayloadSize),
	}
}

// UnixConn returns the underlying socket.
func (c *Conn) UnixConn() *net.UnixConn { return c.uc }

// Close closes the socket.
func (c *Conn) Close() error { return c.uc.Close() }

// ReadMessage reads one message into m. The header is read with recvmsg so
// that the fds sent with it are received; the payload is read after it.
//
// Errors: io.EOF on a clean close between messages, io.ErrUnexpectedEOF on a
// truncated header or payload, ErrHeader for an invalid header or oversized
// payload. On any error every fd received for this message is closed and the
// stream is out of step, so the caller must drop the connection.
func (c *Conn) ReadMessage(m *Message) error {
	*m = Message{Fds: c.fds[:0]}
	if err := c.readHeader(m); err != nil {
		m.CloseFds()
		return err
	}
	if err := m.Header.Decode(c.hdr[:]); err != nil {
		m.CloseFds()
		return err
	}
	m.Payload = c.payload[:m.Header.Size]
	if _, err := io.ReadFull(c.uc, m.Payload); err != nil {
		m.CloseFds()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("vhost-user: reading %d-byte %s payload: %w", m.Header.Size, m.Header.Request, err)
	}
	return nil
}

// readHeader fills c.hdr. SCM_RIGHTS data is attached to the first byte of
// the sender's sendmsg, so only the first recvmsg can carry fds; a short read
// is completed with further reads (fds arriving there are closed and counted
// as surplus).
func (c *Conn) readHeader(m *Message) error {
	got := 0
	for got < HeaderSize {
		n, oobn, flags, _, err := c.uc.ReadMsgUnix(c.hdr[got:], c.oob)
		if oobn > 0 {
			if perr := c.collectFds(m, c.oob[:oobn]); perr != nil {
				return perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			m.TooManyFds = true
		}
		got += n
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if n == 0 { // end of stream (recvmsg returned 0)
			break
		}
	}
	switch {
	case got == 0:
		return io.EOF
	case got < HeaderSize:
		return fmt.Errorf("vhost-user: header truncated after %d bytes: %w", got, io.ErrUnexpectedEOF)
	}
	return nil
}

// collectFds appends the fds of every SCM_RIGHTS message in oob to m.Fds,
// keeping at most MaxFds and closing the rest.
func (c *Conn) collectFds(m *Message, oob []byte) error {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("vhost-user: parsing control message: %w", err)
	}
	for i := range cmsgs {
		fds, err := unix.ParseUnixRights(&cmsgs[i])
		if err != nil {
			continue // not SCM_RIGHTS (credentials): nothing to close
		}
		for _, fd := range fds {
			if len(m.Fds) < MaxFds {
				m.Fds = append(m.Fds, fd)
			} else {
				unix.Close(fd)
				m.TooManyFds = true
			}
		}
	}
	return nil
}

// WriteMessage sends a header and payload in one sendmsg, with fds (if any)
// as SCM_RIGHTS. The header's Size is set from len(payload).
func (c *Conn) WriteMessage(h Header, payload []byte, fds []int) error {
	if len(payload) > MaxPayloadSize {
		return fmt.Errorf("vhost-user: %s payload of %d bytes exceeds %d", h.Request, len(payload), MaxPayloadSize)
	}
	h.Size = uint32(len(payload))
	c.wbuf = h.Encode(c.wbuf[:0])
	c.wbuf = append(c.wbuf, payload...)
	return c.WriteRaw(c.wbuf, fds)
}

// WriteRaw sends b as-is (it need not be a valid message), with fds as
// SCM_RIGHTS on the first byte. A short write is completed without fds.
func (c *Conn) WriteRaw(b []byte, fds []int) error {
	if len(fds) > 0 && len(b) == 0 {
		return errors.New("vhost-user: cannot send fds without at least one data byte")
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.uc.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("vhost-user: sendmsg: %w", err)
	}
	if n < len(b) {
		if _, err := c.uc.Write(b[n:]); err != nil {
			return fmt.Errorf("vhost-user: write: %w", err)
		}
	}
	return nil
}
