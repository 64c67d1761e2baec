package api

import "errors"

var (
	// ErrStarted is returned by [Server.Start] on a server that was already started.
	ErrStarted = errors.New("api: server already started")
	// ErrClosed is returned by [Server.Start] on a server that was closed.
	ErrClosed = errors.New("api: server closed")
	// ErrNotConnected is returned by [RemoteLinks.OpenRemote] when no node holds the device's
	// connection any more (the API answers 404, as for a device never connected).
	ErrNotConnected = errors.New("api: the device is connected to no relay node")
	// ErrNodeLinksOff is returned by [RemoteLinks.OpenRemote] when the node holding the device's
	// connection opens no device links (503).
	ErrNodeLinksOff = errors.New("api: the node holding the device opens no device links")
)
