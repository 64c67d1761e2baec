package link

import (
	"context"
)

// carrier carries the links of one protocol: it holds the client-side sockets of the port range
// and the device-side sockets, and copies between them on gnet's event loops. The Manager chooses
// each link's port and token and hands it over with open.
type carrier interface {
	start(ctx context.Context) error
	// open starts carrying e (e.port and e.token are set): clients may now reach it.
	open(e *entry) error
	// close ends e's sockets and sets its state closed; it is idempotent.
	close(e *entry)
	stop(ctx context.Context) error
}
