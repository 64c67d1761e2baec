package store

import "errors"

var (
	// ErrClosed is returned (or passed to a done callback) after Close.
	ErrClosed = errors.New("store closed")
	// ErrNotStarted is passed to Append's done callback before Start: a
	// recovered store takes no new data until its hooks are installed.
	ErrNotStarted = errors.New("store not started")
	// ErrStarted is returned by a second call of Start.
	ErrStarted = errors.New("store already started")
	// ErrCorrupt reports an encoded segment or checkpoint that cannot be decoded.
	ErrCorrupt = errors.New("corrupt store data")
	// ErrVersion reports data written in an unknown format version.
	ErrVersion = errors.New("unsupported store format version")
	// ErrTooManyRoutes is returned by RouteID when all 65535 route IDs are taken.
	ErrTooManyRoutes = errors.New("too many routes")
	// ErrNoDir is returned by Open when Options.Dir is empty.
	ErrNoDir = errors.New("store directory not set")
	// ErrDiskFull refuses new data while free space on the data directory's
	// filesystem is below Options.MinFree, and opening a store without the
	// free space opening needs (see disk.go).
	ErrDiskFull = errors.New("not enough free disk space")
	// ErrUnavailable refuses a frame a journal reached over the network (cluster mode) could not
	// store for now: the servers are unreachable, answer that they cannot store, or do not answer
	// in time. The writer tells the device to try again later, as for ErrDiskFull.
	ErrUnavailable = errors.New("journal unavailable")
	// ErrGap refuses a frame whose predecessor was not stored (see Frame.PrevSeq).
	ErrGap = errors.New("predecessor frame not stored")
	// ErrDamaged reports a store directory whose files are missing or damaged
	// (see DamageError): Open refuses it rather than start without its data.
	ErrDamaged = errors.New("store directory damaged")
	// ErrInUse reports a store directory another process (a running relay) holds.
	ErrInUse = errors.New("store directory in use")
)
