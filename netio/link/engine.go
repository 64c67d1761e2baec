package link

import (
	"context"
	"errors"

	"github.com/panjf2000/gnet/v2"
)

// stopEngine stops eng and waits until its event loops returned or ctx ended. ran delivers the
// engine's result (gnet.Run's or Rotate's, in a channel of one); stopEngine puts it back for a
// later reader. gnet's Engine.Stop polls every 500 ms until the engine is down: stopEngine
// waits for ran instead and then ends the polling Stop. Once the loops returned, leftovers ends
// what they did not (nothing else touches the sockets then). It returns the engine's error,
// ctx's, and Stop's other than its own end, joined.
func stopEngine(ctx context.Context, eng gnet.Engine, ran chan error, leftovers func()) error {
	stopped, cancel := context.WithCancel(ctx)
	defer cancel()
	stopErr := make(chan error, 1)
	go func() { stopErr <- eng.Stop(stopped) }()
	var errs []error
	select {
	case err := <-ran:
		ran <- err
		if err != nil {
			errs = append(errs, err)
		}
		leftovers()
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	cancel()
	if err := <-stopErr; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
