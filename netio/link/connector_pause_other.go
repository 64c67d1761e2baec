//go:build !linux

package link

import (
	"errors"

	"github.com/panjf2000/gnet/v2"
)

// connSetReading cannot pause a connection outside Linux (see connector_pause.go): the
// connector closes a pair whose peer cannot keep up rather than buffer without bound.
func connSetReading(_ gnet.Conn, _ *int, reading bool) error {
	if reading {
		return nil
	}
	return errors.New("pausing a connection needs epoll (Linux)")
}
