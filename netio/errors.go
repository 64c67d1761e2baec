package netio

import "errors"

// ErrBusy, wrapped in the error of Dispatcher.Open, refuses the device with ERROR 503 (the relay
// cannot take it now) instead of ERROR 401.
var ErrBusy = errors.New("relay busy")
