package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/codec/native"
)

// Limits enforced by Validate.
const (
	MinMaxFrame      = 16 * Size(1) // smallest devices.max_frame
	MaxMaxFrame      = MiB          // largest devices.max_frame
	MinMaxLine       = 16 * Size(1) // smallest devices.ndjson.max_line
	MaxMaxLine       = MiB          // largest devices.ndjson.max_line
	MaxIdentityField = 255          // longest devices.ndjson.identity_field
	MaxBatchMessages = 100000       // largest routes[i].batch.max_messages
	MaxRouteRequests = 1024         // largest routes[i].concurrency
	MinMemoryLimit   = 32 * MiB     // smallest memory_limit other than 0
)

var (
	routeNameRE    = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)
	dynamicFieldRE = regexp.MustCompile(`\[([A-Za-z][A-Za-z0-9_]*)\]`)
	headerNameRE   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Validate checks the whole configuration and returns every problem at once as a [*ValidationError],
// or nil. Each problem reads "dotted.path: message". A route's timeout of 0 and an absent retry are
// accepted (they inherit from delivery; see [Config.Resolve]).
func (c *Config) Validate() error {
	var p problems

	if strings.TrimSpace(c.DataDir) == "" {
		p.add("data_dir", "required")
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < MinMemoryLimit {
		p.add("memory_limit", "must be 0 (no limit) or at least %s, got %s", MinMemoryLimit, sizeText(c.MemoryLimit))
	}
	if c.GCPercent < -1 || c.GCPercent == 0 {
		p.add("gc_percent", "must be -1 (collect only near memory_limit) or > 0, got %d", c.GCPercent)
	}
	if c.GCPercent == -1 && c.MemoryLimit == 0 {
		p.add("gc_percent", "-1 needs a memory_limit: without one the heap would grow without bound")
	}
	oneOf(&p, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf(&p, "log.format", c.Log.Format, "text", "json")
	positive(&p, "log.failure_interval", c.Log.FailureInterval)

	d := &c.Devices
	tcpPort := listenAddr(&p, "devices.native.tcp", d.Native.TCP)
	udpPort := listenAddr(&p, "devices.native.udp", d.Native.UDP)
	tlsPort := validateNativeTLS(&p, "devices.native.tls", &d.Native.TLS)
	if tlsPort != "" && tlsPort == tcpPort && hostsOverlap(d.Native.TLS.Listen, d.Native.TCP) {
		p.add("devices.native.tls.listen", "uses the same TCP address as devices.native.tcp (%s)", d.Native.TCP)
	}
	oneOf(&p, "devices.ack", string(d.Ack), string(AckPersist), string(AckDelivery))
	oneOf(&p, "devices.auth", string(d.Auth), string(AuthOpen), string(AuthKnown), string(AuthToken))
	for i, f := range d.SecretFields {
		switch {
		case f != "custom1" && f != "custom2" && f != "custom3":
			p.add(fmt.Sprintf("devices.secret_fields[%d]", i), "must be custom1, custom2 or custom3, got %q", f)
		case slices.Index(d.SecretFields, f) < i:
			p.add(fmt.Sprintf("devices.secret_fields[%d]", i), "%s is listed twice", f)
		}
	}
	if d.MaxFrame < MinMaxFrame || d.MaxFrame > MaxMaxFrame {
		p.add("devices.max_frame", "must be between %s and %s, got %s", MinMaxFrame, MaxMaxFrame, sizeText(d.MaxFrame))
	}
	positive(&p, "devices.hello_timeout", d.HelloTimeout)
	nonNegative(&p, "devices.idle_timeout", d.IdleTimeout)
	if d.MaxConnections <= 0 {
		p.add("devices.max_connections", "must be > 0, got %d", d.MaxConnections)
	}
	if d.MaxConnectionsPerSource < 0 {
		p.add("devices.max_connections_per_source", "must not be negative (0: no limit), got %d", d.MaxConnectionsPerSource)
	}
	nonNegative(&p, "devices.first_data_timeout", d.FirstDataTimeout)
	if d.MaxUnknownIdentities < 0 {
		p.add("devices.max_unknown_identities", "must not be negative (0: no limit), got %d", d.MaxUnknownIdentities)
	}
	if d.EventLoops < 0 {
		p.add("devices.event_loops", "must not be negative (0 starts one per CPU), got %d", d.EventLoops)
	}
	ndjsonPort := listenAddr(&p, "devices.ndjson.tcp", d.NDJSON.TCP)
	if ndjsonPort != "" && ndjsonPort == tcpPort && hostsOverlap(d.NDJSON.TCP, d.Native.TCP) {
		p.add("devices.ndjson.tcp", "uses the same TCP address as devices.native.tcp (%s)", d.Native.TCP)
	}
	if ndjsonPort != "" && ndjsonPort == tlsPort && hostsOverlap(d.NDJSON.TCP, d.Native.TLS.Listen) {
		p.add("devices.ndjson.tcp", "uses the same TCP address as devices.native.tls.listen (%s)", d.Native.TLS.Listen)
	}
	telTCP := listenAddr(&p, "devices.teltonika.tcp", d.Teltonika.TCP)
	others := []struct{ path, addr, port string }{{"devices.native.tcp", d.Native.TCP, tcpPort}, {"devices.ndjson.tcp", d.NDJSON.TCP, ndjsonPort},
		{"devices.native.tls.listen", d.Native.TLS.Listen, tlsPort}}
	for _, o := range others {
		if telTCP != "" && telTCP == o.port && hostsOverlap(d.Teltonika.TCP, o.addr) {
			p.add("devices.teltonika.tcp", "uses the same TCP address as %s (%s)", o.path, o.addr)
		}
	}
	telTLS := validateNativeTLS(&p, "devices.teltonika.tls", &d.Teltonika.TLS)
	for _, o := range append(others, struct{ path, addr, port string }{"devices.teltonika.tcp", d.Teltonika.TCP, telTCP}) {
		if telTLS != "" && telTLS == o.port && hostsOverlap(d.Teltonika.TLS.Listen, o.addr) {
			p.add("devices.teltonika.tls.listen", "uses the same TCP address as %s (%s)", o.path, o.addr)
		}
	}
	if telUDP := listenAddr(&p, "devices.teltonika.udp", d.Teltonika.UDP); telUDP != "" && telUDP == udpPort && hostsOverlap(d.Teltonika.UDP, d.Native.UDP) {
		p.add("devices.teltonika.udp", "uses the same UDP address as devices.native.udp (%s)", d.Native.UDP)
	}
	switch f := d.NDJSON.IdentityField; {
	case f == "":
		p.add("devices.ndjson.identity_field", "required")
	case len(f) > MaxIdentityField:
		p.add("devices.ndjson.identity_field", "longer than %d bytes", MaxIdentityField)
	}
	if d.NDJSON.MaxLine < MinMaxLine || d.NDJSON.MaxLine > MaxMaxLine {
		p.add("devices.ndjson.max_line", "must be between %s and %s, got %s", MinMaxLine, MaxMaxLine, sizeText(d.NDJSON.MaxLine))
	} else if d.NDJSON.MaxInflight < d.NDJSON.MaxLine {
		p.add("devices.ndjson.max_inflight", "must be at least devices.ndjson.max_line (%s), got %s", sizeText(d.NDJSON.MaxLine), sizeText(d.NDJSON.MaxInflight))
	}

	nonNegative(&p, "store.gc_interval", c.Store.GCInterval)
	if _, pct, err := ParseFreeSpace(string(c.Store.MinFree)); err != nil {
		p.add("store.min_free", "%v", err)
	} else if pct >= 100 {
		p.add("store.min_free", "a percentage must be below 100%%, got %s", c.Store.MinFree)
	}

	adminPort := listenAddr(&p, "admin.listen", c.Admin.Listen)
	if tcpPort != "" && tcpPort == adminPort && hostsOverlap(d.Native.TCP, c.Admin.Listen) {
		p.add("admin.listen", "uses the same TCP address as devices.native.tcp (%s)", d.Native.TCP)
	}
	if tlsPort != "" && tlsPort == adminPort && hostsOverlap(d.Native.TLS.Listen, c.Admin.Listen) {
		p.add("admin.listen", "uses the same TCP address as devices.native.tls.listen (%s)", d.Native.TLS.Listen)
	}
	if ndjsonPort != "" && ndjsonPort == adminPort && hostsOverlap(d.NDJSON.TCP, c.Admin.Listen) {
		p.add("admin.listen", "uses the same TCP address as devices.ndjson.tcp (%s)", d.NDJSON.TCP)
	}
	if telTLS != "" && telTLS == adminPort && hostsOverlap(d.Teltonika.TLS.Listen, c.Admin.Listen) {
		p.add("admin.listen", "uses the same TCP address as devices.teltonika.tls.listen (%s)", d.Teltonika.TLS.Listen)
	}
	for i, h := range c.Admin.Hosts {
		if h == "" || strings.ContainsAny(h, "/ ") || (strings.Contains(h, ":") && net.ParseIP(strings.Trim(h, "[]")) == nil) {
			p.add(fmt.Sprintf("admin.hosts[%d]", i), "want a host name or an address without a port, got %q", h)
		}
	}

	positive(&p, "commands.retention", c.Commands.Retention)
	positive(&p, "commands.max_ttl", c.Commands.MaxTTL)
	positive(&p, "commands.default_ttl", c.Commands.DefaultTTL)
	if c.Commands.DefaultTTL > c.Commands.MaxTTL && c.Commands.MaxTTL > 0 {
		p.add("commands.default_ttl", "must be at most commands.max_ttl (%s), got %s", c.Commands.MaxTTL, c.Commands.DefaultTTL)
	}
	c.validateCluster(&p)
	c.validateLinks(&p, []tcpListener{{"devices.native.tcp", d.Native.TCP}, {"devices.ndjson.tcp", d.NDJSON.TCP}, {"admin.listen", c.Admin.Listen},
		{"devices.teltonika.tls.listen", d.Teltonika.TLS.Listen}})

	positive(&p, "delivery.timeout", c.Delivery.Timeout)
	nonNegative(&p, "delivery.shutdown_grace", c.Delivery.ShutdownGrace)
	if c.Delivery.MaxQueuedMessages < 1 {
		p.add("delivery.max_queued_messages", "must be at least 1")
	}
	retry(&p, "delivery.retry", c.Delivery.Retry)

	names := map[string]int{}
	for i := range c.Routes {
		r := &c.Routes[i]
		path := fmt.Sprintf("routes[%d]", i)
		if first, dup := names[r.Name]; dup && r.Name != "" {
			p.add(path+".name", "duplicate route name %q (first used by routes[%d])", r.Name, first)
		} else if r.Name != "" && routeNameRE.MatchString(r.Name) {
			names[r.Name] = i
		}
		p = append(p, r.Check(path, &c.Delivery)...)
	}
	c.validateFleet(&p)
	return p.err()
}

// Check returns the problems of one route that the file alone shows ("path.field: message"),
// path being where the route is ("routes[2]"), d the delivery section it inherits from. It does
// not read secrets or files and does not check the values that the auth schemes' constructors
// check (internal/route.Compile reports those); a name used twice is the whole config's business
// (see Validate).
func (r *Route) Check(path string, d *Delivery) []string {
	var ps problems
	p := &ps
	switch {
	case r.Name == "":
		p.add(path+".name", "required")
	case !routeNameRE.MatchString(r.Name):
		p.add(path+".name", "%q may only contain letters, digits, '_', '.' and '-'", r.Name)
	}

	validateURL(p, path+".url", r.URL, d.AllowPrivateNetworks)

	if r.Method != "POST" && r.Method != "PUT" {
		p.add(path+".method", "must be POST or PUT, got %q", r.Method)
	}

	keys := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	canon := map[string]string{}
	for _, k := range keys {
		hp := path + ".headers." + k
		ck := strings.ToLower(k)
		switch {
		case !headerNameRE.MatchString(k):
			p.add(hp, "%q is not a valid header name", k)
		case ck == "content-length" || ck == "transfer-encoding" || ck == "content-encoding":
			p.add(hp, "is set by the relay and cannot be configured")
		case canon[ck] != "":
			p.add(hp, "same header as %s (header names are case-insensitive)", canon[ck])
		default:
			canon[ck] = k
		}
		v := r.Headers[k]
		if strings.ContainsAny(v, "\r\n\x00") {
			p.add(hp, "value must not contain line breaks or NUL")
		}
		if bad := unknownFields(v); len(bad) > 0 {
			p.add(hp, "%s", unknownFieldsMsg(bad))
		}
	}

	b := &r.Batch
	if b.MaxMessages < 1 || b.MaxMessages > MaxBatchMessages {
		p.add(path+".batch.max_messages", "must be between 1 and %d, got %d", MaxBatchMessages, b.MaxMessages)
	}
	if b.MaxBytes <= 0 {
		p.add(path+".batch.max_bytes", "must be > 0, got %s", sizeText(b.MaxBytes))
	}
	nonNegative(p, path+".batch.linger", b.Linger)

	if r.Timeout != d.Timeout { // an inherited timeout was checked as delivery.timeout
		nonNegative(p, path+".timeout", r.Timeout)
	}
	if r.Concurrency < 1 || r.Concurrency > MaxRouteRequests {
		p.add(path+".concurrency", "must be between 1 and %d, got %d", MaxRouteRequests, r.Concurrency)
	}
	if r.Retry != nil && *r.Retry != d.Retry { // an inherited retry was checked as delivery.retry
		retry(p, path+".retry", *r.Retry)
	}
	seen := map[int]bool{}
	for j, code := range r.SuccessCodes {
		cp := fmt.Sprintf("%s.success_codes[%d]", path, j)
		switch {
		case code < 200 || code > 599:
			p.add(cp, "must be an HTTP status from 200 to 599, got %d", code)
		case code >= 300 && code < 400:
			p.add(cp, "%d is a redirect: redirects are not followed, so it cannot mean delivered", code)
		case seen[code]:
			p.add(cp, "%d listed twice", code)
		}
		seen[code] = true
	}
	r.validateAuth(p, path)
	switch r.Compression {
	case CompressionNone, CompressionGzip, CompressionZstd:
	default:
		p.add(path+".compression", "must be none, gzip or zstd, got %q", r.Compression)
	}
	switch r.Body {
	case BodyArray, BodyObject:
	default:
		p.add(path+".body", "must be array or object, got %q", r.Body)
	}
	switch {
	case r.Notifications && r.Format != "" && r.Format != format.NameEnvelope && r.Format != format.NameNotification:
		p.add(path+".format", "a notification route's format is notification, got %q", r.Format)
	case !r.Notifications && r.Format == format.NameNotification:
		p.add(path+".format", "notification is the format of a notification route (notifications: true)")
	}
	if r.Notifications && (len(r.Filter.IMEIs) > 0 || len(r.Filter.Tags) > 0 || len(r.Filter.Groups) > 0) {
		p.add(path+".filter", "a notification route takes no device data: it has no filter")
	}
	if r.Notifications {
		// A notification is no device's: a device's dynamic field would always be empty.
		if dynamicFieldRE.MatchString(r.URL) {
			p.add(path+".url", "a notification route's messages are no device's: no dynamic fields")
		}
		for _, k := range keys {
			if dynamicFieldRE.MatchString(r.Headers[k]) {
				p.add(path+".headers."+k, "a notification route's messages are no device's: no dynamic fields")
			}
		}
	}
	for j, imei := range r.Filter.IMEIs {
		if !native.ValidIMEI(imei) {
			p.add(fmt.Sprintf("%s.filter.imeis[%d]", path, j), "%q is not an IMEI (15 digits)", imei)
		}
	}
	if _, err := r.CompileFormat(); err != nil {
		var te *format.TemplateError
		switch {
		case errors.As(err, &te):
			p.add(path+".template", "%v", err)
		case errors.Is(err, format.ErrUnknownFormat):
			p.add(path+".format", "must be one of %s, got %q", strings.Join(format.Names(), ", "), r.Format)
		default:
			p.add(path+".format", "%v", err)
		}
	}
	return ps
}

// CompileFormat returns the route's message format with its options.
func (r *Route) CompileFormat() (format.Format, error) {
	o := format.Options{AppID: r.AppID, DeviceType: r.DeviceType, Template: r.Template}
	if r.Sign.Sensoro != nil && r.Format != "sensoro" {
		o.AppID = "" // the SENSORO signature's X-ACCESS-ID, whatever the format
	}
	name := r.Format
	if r.Notifications && (name == "" || name == format.NameEnvelope) {
		name = format.NameNotification
	}
	return format.Lookup(name, o)
}

func validateURL(p *problems, path, raw string, allowPrivate bool) {
	if strings.TrimSpace(raw) == "" {
		p.add(path, "required")
		return
	}
	if bad := unknownFields(raw); len(bad) > 0 {
		p.add(path, "%s", unknownFieldsMsg(bad))
		return
	}
	u, err := url.Parse(dynamicFieldRE.ReplaceAllString(raw, "x"))
	if err != nil {
		p.add(path, "%q is not a valid URL: %v", raw, unwrapURLError(err))
		return
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		p.add(path, "%q must start with http:// or https://", raw)
		return
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		p.add(path, "%q has no host", raw)
		return
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.add(path, "%q has an invalid port %q", raw, port)
			return
		}
	}
	if u2, err := url.Parse(dynamicFieldRE.ReplaceAllString(raw, "y")); err != nil || u2.Hostname() != u.Hostname() {
		return // the host depends on the device: checked when connecting
	}
	if !allowPrivate {
		if why := privateHost(u.Hostname()); why != "" {
			p.add(path, "host %s is %s; set delivery.allow_private_networks: true to deliver to it", u.Hostname(), why)
		}
	}
}

// privateHost says why host is a loopback, private, link-local or unspecified address, or "" if it is
// none (or is a hostname other than localhost, which is checked when connecting).
func privateHost(host string) string {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return "localhost"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "a link-local address"
	case ip.IsUnspecified():
		return "an unspecified address"
	}
	return ""
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// unknownFields returns the bracketed names in s that are not dynamic fields (codec/fields).
func unknownFields(s string) []string {
	var bad []string
	for _, m := range dynamicFieldRE.FindAllStringSubmatch(s, -1) {
		if !slices.Contains(fields.Names(), m[1]) {
			bad = append(bad, m[0])
		}
	}
	return bad
}

func unknownFieldsMsg(bad []string) string {
	names := fields.Names()
	known := make([]string, len(names))
	for i, f := range names {
		known[i] = "[" + f + "]"
	}
	word := "field"
	if len(bad) > 1 {
		word = "fields"
	}
	return fmt.Sprintf("unknown dynamic %s %s; known fields are %s (write literal brackets as %%5B and %%5D)",
		word, strings.Join(bad, " "), strings.Join(known, " "))
}

// listenAddr checks a host:port listen address ("" disables the listener) and returns its port.
// validateNativeTLS checks a device TLS listener (devices.native.tls, devices.teltonika.tls:
// path) and returns its listen port as listenAddr does.
func validateNativeTLS(p *problems, path string, t *NativeTLS) string {
	if t.MinVersion != "1.2" && t.MinVersion != "1.3" {
		p.add(path+".min_version", "must be 1.2 or 1.3, got %q", t.MinVersion)
	}
	if t.Listen == "" {
		return ""
	}
	port := listenAddr(p, path+".listen", t.Listen)
	if t.Cert == "" {
		p.add(path+".cert", "required with %s.listen", path)
	}
	if t.Key == "" {
		p.add(path+".key", "required with %s.listen", path)
	}
	return port
}

func listenAddr(p *problems, path, addr string) string {
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(path, "%q is not host:port (%v)", addr, unwrapAddrError(err))
		return ""
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add(path, "%q has an invalid port %q (want 0 to 65535)", addr, port)
		return ""
	}
	if strings.ContainsAny(host, " \t/") {
		p.add(path, "%q has an invalid host %q", addr, host)
		return ""
	}
	if port == "0" {
		return "" // a port chosen by the system never conflicts
	}
	return port
}

func unwrapAddrError(err error) string {
	if ae, ok := err.(*net.AddrError); ok {
		return ae.Err
	}
	return err.Error()
}

// hostsOverlap reports whether two listen addresses with the same port would bind the same socket.
func hostsOverlap(a, b string) bool {
	ha, _, _ := net.SplitHostPort(a)
	hb, _, _ := net.SplitHostPort(b)
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

func oneOf(p *problems, path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.add(path, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
}

func positive(p *problems, path string, d Duration) {
	if d <= 0 {
		p.add(path, "must be > 0, got %s", d)
	}
}

func nonNegative(p *problems, path string, d Duration) {
	if d < 0 {
		p.add(path, "must not be negative, got %s", d)
	}
}

func retry(p *problems, path string, r Retry) {
	positive(p, path+".initial_backoff", r.InitialBackoff)
	if r.MaxBackoff < r.InitialBackoff {
		p.add(path+".max_backoff", "must be at least initial_backoff (%s), got %s", r.InitialBackoff, r.MaxBackoff)
	}
	if r.MaxAttempts < 0 {
		p.add(path+".max_attempts", "must not be negative (0: no limit), got %d", r.MaxAttempts)
	}
	positive(p, path+".retention", r.Retention)
}

func sizeText(s Size) string {
	if s < 0 {
		return strconv.FormatInt(int64(s), 10)
	}
	return s.String()
}

func (c *Config) validateFleet(p *problems) {
	seen := map[string]int{}
	for i := range c.Fleet {
		d := &c.Fleet[i]
		path := fmt.Sprintf("fleet[%d]", i)
		*p = append(*p, d.Check(path)...)
		if d.ID != "" && len(d.ID) <= MaxDeviceID {
			if first, dup := seen[d.ID]; dup {
				p.add(path+".id", "duplicate device %q (first listed as fleet[%d])", d.ID, first)
			}
			seen[d.ID] = i
		}
	}
}

// MaxDeviceID is the longest device identity, in bytes.
const MaxDeviceID = 255

// Check returns the problems of one device's metadata ("path.field: message"), path being where
// it is ("fleet[2]"); an ID listed twice is the whole config's business (see Validate).
func (d *Device) Check(path string) []string {
	var p problems
	switch {
	case d.ID == "":
		p.add(path+".id", "required")
	case len(d.ID) > MaxDeviceID:
		p.add(path+".id", "longer than %d bytes", MaxDeviceID)
	}
	if d.IMEI != "" && !native.ValidIMEI(d.IMEI) {
		p.add(path+".imei", "%q is not an IMEI (15 digits)", d.IMEI)
	}
	for _, f := range []struct{ k, v string }{{"iccid", d.ICCID}, {"custom1", d.Custom1}, {"custom2", d.Custom2}, {"custom3", d.Custom3}} {
		if strings.ContainsAny(f.v, "\r\n\x00") {
			p.add(path+"."+f.k, "must not contain line breaks or NUL")
		}
	}
	if v, literal := strings.CutPrefix(string(d.Token), secretValue); literal && len(v) > MaxDeviceToken {
		p.add(path+".token", "longer than %d bytes", MaxDeviceToken) // the others are checked when revealed
	}
	return p
}

// MaxDeviceToken is the longest device token, in bytes (it must fit UDATA's u8 length).
const MaxDeviceToken = 255
