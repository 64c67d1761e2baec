// Package route owns turning one configured route into a running one. [Compile] checks a
// config.Route and builds every part of it — URL and header templates, message format,
// compressor, retry policy with the route's success codes, the signer chain (reading its
// secrets), the delivery client for its TLS settings, and the delivery pipeline — or reports
// every problem at once, each with its dotted path. The relay's start, fleetrelay -check-config
// and, later, routes created and changed at runtime all go through it.
//
// It sits above actors and internal/pipeline (it builds their types) and below the composition
// root; config stays free of auth, deliver and the actors.
package route
