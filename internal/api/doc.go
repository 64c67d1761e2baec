// Package api owns fleetrelay's admin HTTP server on fasthttp: the health check (/healthz), Prometheus
// metrics (/metrics) and the routing that the REST API's endpoints are added to with [Server.Handle].
//
// The server has no authentication; it is meant for loopback or a private network.
package api
