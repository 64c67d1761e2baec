// Package deliver owns the HTTP side of delivery: one fasthttp client per
// relay, the guard that keeps routes away from private networks, single
// request attempts with timeouts and cancellation, Retry-After parsing, and
// the retry loop with exponential backoff and full jitter.
//
// What a body contains, how it is signed and which statuses count as
// delivered are decided by the caller (internal/pipeline) through Request,
// the build callback of Deliver, and Policy.
package deliver
