package loadgen

import (
	"bytes"
	"errors"
	"net"
	"sync"
)

// ErrNewline is returned by NDJSONClient.Send for a line that contains '\n'.
var ErrNewline = errors.New("ndjson line contains a newline")

// NDJSONClient is a simple gateway sending newline-delimited JSON over one TCP connection: no
// handshake, nothing read back. It is safe for concurrent use; the lines of one Send go out in
// one write, so lines of concurrent calls never interleave.
type NDJSONClient struct {
	conn net.Conn

	mu  sync.Mutex
	buf []byte
}

// DialNDJSON connects to the relay's NDJSON listener at addr.
func DialNDJSON(addr string) (*NDJSONClient, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &NDJSONClient{conn: c}, nil
}

// Send writes each line followed by '\n', all in one write. A line containing '\n' is refused
// with ErrNewline and nothing is written.
func (c *NDJSONClient) Send(lines ...[]byte) error {
	for _, l := range lines {
		if bytes.IndexByte(l, '\n') >= 0 {
			return ErrNewline
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = c.buf[:0]
	for _, l := range lines {
		c.buf = append(append(c.buf, l...), '\n')
	}
	_, err := c.conn.Write(c.buf)
	return err
}

// SendRaw writes b as it is (for partial lines, or bytes that are not NDJSON at all).
func (c *NDJSONClient) SendRaw(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

// Close closes the connection. Lines already written may still be in flight to the relay.
func (c *NDJSONClient) Close() { _ = c.conn.Close() }
