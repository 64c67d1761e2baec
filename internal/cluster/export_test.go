package cluster

import "github.com/nats-io/nats.go/jetstream"

// JetStreamOf exposes a Conn's JetStream client to the tests, which read and change what the
// journal wrote.
func JetStreamOf(c *Conn) jetstream.JetStream { return c.js }
