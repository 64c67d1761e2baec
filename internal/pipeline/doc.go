// Package pipeline owns the delivery of one route's batches: render (the route's format, one
// JSON array or one object), compress, authenticate and sign, send through the route's delivery
// client with its retry policy, and the outcome — including the new token after a 401, the
// per-route request metrics (outcome by the route's success codes, retries, latency) and the
// rate-limited log of failed attempts.
//
// A [Pipeline] implements [actors.Deliverer]: the route actor batches and schedules lanes, and
// calls it once per batch. It sits above actors (it implements the actors' interface over the
// actors' Batch) and beside the leaves it composes (codec/format, internal/deliver,
// internal/auth), which know nothing of it.
package pipeline
