// Package fields owns the dynamic fields that route URLs and header values
// may contain: [SERIAL], [IMEI], [ICCID], [CUSTOM1], [CUSTOM2] and [CUSTOM3].
//
// A template is compiled once when a route is configured (Compile for header
// values, CompileURL for URLs) and then appended per destination with the
// device's values, without allocating. A bracketed upper-case name that is not
// a known field is a configuration error; any other text, brackets included
// (an IPv6 host such as [::1], a query such as a[]=1), is kept as written.
package fields
