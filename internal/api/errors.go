package api

import "errors"

var (
	// ErrStarted is returned by [Server.Start] on a server that was already started.
	ErrStarted = errors.New("api: server already started")
	// ErrClosed is returned by [Server.Start] on a server that was closed.
	ErrClosed = errors.New("api: server closed")
)
