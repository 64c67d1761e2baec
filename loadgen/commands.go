package loadgen

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
)

// CommandConfig is how a simulated device answers the relay's COMMANDs. Like firmware, it
// executes a task once: a COMMAND whose task id it has executed already (the relay sends a task
// again after a reconnect until its RESULT arrives) is answered with the same RESULT again.
type CommandConfig struct {
	// Delay is how long the device takes to execute a command before it answers its RESULT
	// (0: at once).
	Delay time.Duration
	// FailRatio is the share of commands answered with code 1 (failure), 0..1.
	FailRatio float64
	// OnResult, if set, is called (from the device's goroutines, without its lock) for every
	// RESULT written, with whether the task was a repeat.
	OnResult func(task uint64, code uint8, repeat bool)
}

// commandState is what a device remembers of commands: the code of each task it executed.
type commandState struct {
	done     map[uint64]uint8
	received int
}

// commandLocked answers a COMMAND frame's body on conn, after the configured delay; d.mu is held.
func (d *Device) commandLocked(conn net.Conn, body []byte) {
	if len(body) < 9 {
		return // not a COMMAND: a task id and one JSON object
	}
	task := binary.BigEndian.Uint64(body)
	d.cmds.received++
	if d.cmds.done == nil {
		d.cmds.done = make(map[uint64]uint8)
	}
	code, repeat := d.cmds.done[task]
	if !repeat {
		if cfg := d.cfg.Commands; cfg.FailRatio > 0 && rand.Float64() < cfg.FailRatio {
			code = 1
		}
		d.cmds.done[task] = code
	}
	data := fmt.Appendf(nil, `{"task":%d,"repeat":%t}`, task, repeat)
	answer := func() {
		_, _ = conn.Write(native.AppendResult(nil, task, code, data))
		if fn := d.cfg.Commands.OnResult; fn != nil {
			fn(task, code, repeat)
		}
	}
	if d.cfg.Commands.Delay <= 0 {
		d.mu.Unlock() // OnResult runs without the lock
		answer()
		d.mu.Lock()
		return
	}
	d.wg.Add(1) // Close waits for the answer
	time.AfterFunc(d.cfg.Commands.Delay, func() {
		defer d.wg.Done()
		answer()
	})
}

// CommandsReceived is how many COMMAND frames the device received, and how many distinct tasks
// it executed.
func (d *Device) CommandsReceived() (frames, tasks int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmds.received, len(d.cmds.done)
}
