package config

import (
	"log/slog"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

// Config is fleetrelay's whole configuration.
//
// A Config is a plain value: build it with [Default], [Load] or [Parse], change it before handing it
// over, and treat it as read-only once shared. Reading it from many goroutines is safe; writing is not.
type Config struct {
	// Directory holding the store (journal, route queues, device state). Created if missing.
	DataDir string `yaml:"data_dir"`
	// The Go runtime's soft memory limit: as the relay's Go memory nears it, the garbage collector
	// runs more often (never taking more than about half the CPU), so the heap's headroom does not
	// double a full queue's memory. With the default, 192MiB, and delivery.max_queued_messages at
	// its default, peak RSS stays near 256MiB at full load. 0: no limit (only GOGC paces the GC).
	// The GOMEMLIMIT environment variable, when set, wins. At least 32MiB when set.
	MemoryLimit Size `yaml:"memory_limit"`
	// The garbage collector's pace (GOGC): a collection when the heap has grown by this many percent
	// over what the last one left live; the higher, the fewer collections (less CPU per frame and a
	// shorter ACK tail) for more memory, which memory_limit caps. Default 400; -1 leaves only
	// memory_limit to trigger collections. The GOGC environment variable, when set, wins.
	GCPercent int `yaml:"gc_percent"`
	// Logging.
	Log Log `yaml:"log"`
	// Device-facing listeners and connection limits.
	Devices Devices `yaml:"devices"`
	// The embedded store.
	Store Store `yaml:"store"`
	// The admin HTTP server (health, metrics, REST API).
	Admin Admin `yaml:"admin"`
	// Commands to devices (tasks, POST /api/v1/devices/{id}/commands): their time to live and
	// how long finished ones are kept.
	Commands Commands `yaml:"commands"`
	// Device links: clients reach devices through the relay (README, "Device links").
	DeviceLink DeviceLink `yaml:"devicelink"`
	// Raw TCP connectors: device connections forwarded to end servers, bytes unchanged.
	Connectors []Connector `yaml:"connectors,omitempty"`
	// Settings shared by every route's HTTP delivery.
	Delivery Delivery `yaml:"delivery"`
	// Device metadata, one entry per device identity: what routes' dynamic fields, filters and
	// formats know about a device beyond what it says itself. Devices not listed have none.
	Fleet []Device `yaml:"fleet,omitempty"`
	// Where device messages go: HTTP endpoints that receive them in batches.
	Routes []Route `yaml:"routes,omitempty"`
	// Cluster mode: several relays share their control plane through NATS JetStream.
	Cluster Cluster `yaml:"cluster"`
}

// Device is one device's metadata.
type Device struct {
	// The identity the device gives: its serial in HELLO (or, without one, its IMEI), the UDATA
	// identity, or the NDJSON identity field. Required, unique.
	ID string `yaml:"id"`
	// IMEI (15 digits) and ICCID, used when the device does not send them itself.
	IMEI  string `yaml:"imei,omitempty"`
	ICCID string `yaml:"iccid,omitempty"`
	// Free fields, e.g. per-device credentials: [CUSTOM1]..[CUSTOM3] in URLs and headers.
	Custom1 string `yaml:"custom1,omitempty"`
	Custom2 string `yaml:"custom2,omitempty"`
	Custom3 string `yaml:"custom3,omitempty"`
	// Tags and groups, for route filters and formats.
	Tags   []string `yaml:"tags,omitempty"`
	Groups []string `yaml:"groups,omitempty"`
	// The account the device belongs to.
	Account string `yaml:"account,omitempty"`
	// The device's credential, checked against HELLO's (and UDATA's) token when devices.auth is
	// token: a value, {env: NAME} or {file: PATH}, at most 255 bytes. The relay keeps only its
	// SHA-256.
	Token Secret `yaml:"token,omitempty"`
}

// Filter selects the devices a route takes messages from. Empty matches every device; otherwise a
// device matches if its IMEI is listed, or it has one of the tags, or it is in one of the groups.
type Filter struct {
	IMEIs  []string `yaml:"imeis,omitempty"`
	Tags   []string `yaml:"tags,omitempty"`
	Groups []string `yaml:"groups,omitempty"`
}

// Log configures the process log.
type Log struct {
	// Lowest level written: debug, info, warn or error.
	Level string `yaml:"level"`
	// Line format: text (logfmt-style key=value) or json.
	Format string `yaml:"format"`
	// A route's failed delivery attempts are logged as warnings, at most one per this interval
	// for the route; the line counts those held back since the previous one ("suppressed"). The
	// first success at a destination after a warning about it is logged at info. Must be > 0.
	FailureInterval Duration `yaml:"failure_interval"`
}

// SlogLevel returns Level as a [slog.Level]; an unknown level yields [slog.LevelInfo] (Validate reports it).
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// AckMode says when the relay acknowledges a device's DATA frame.
type AckMode string

// Ack modes.
const (
	// AckPersist acknowledges once the frame is durably stored (survives a crash of the relay process).
	AckPersist AckMode = "persist"
	// AckDelivery acknowledges only once every route the frame's records go to has accepted them.
	AckDelivery AckMode = "delivery"
)

// DeviceAuth says which devices the relay admits.
type DeviceAuth string

// Device auth modes.
const (
	// AuthOpen admits every device, whatever identity it gives (no token is checked).
	AuthOpen DeviceAuth = "open"
	// AuthKnown admits only identities the relay knows: the config's fleet or the registry.
	AuthKnown DeviceAuth = "known"
	// AuthToken admits only known identities that present their device's token.
	AuthToken DeviceAuth = "token"
)

// Devices configures the device-facing side.
type Devices struct {
	// Listeners for the native device protocol.
	Native NativeListeners `yaml:"native"`
	// NDJSON ingest: newline-delimited JSON objects over TCP, as simple gateways send them.
	NDJSON NDJSON `yaml:"ndjson"`
	// Listeners for Teltonika trackers (Codec 8, 8 Extended and 16; Codec 12 commands). They
	// share max_connections, the per-source cap, idle_timeout, auth and the fleet with the native
	// protocol; a Teltonika device's identity is its IMEI.
	Teltonika TeltonikaListeners `yaml:"teltonika"`
	// When a device may forget a message: "persist" (the default) acknowledges once the relay has
	// stored it; "delivery" acknowledges only once every matching route's server has accepted it.
	Ack AckMode `yaml:"ack"`
	// Which native devices are admitted: "open" (the default) admits any identity; "known" only
	// the identities of the fleet below or of the API's devices; "token" only known identities
	// whose HELLO (over UDP: each UDATA) carries the device's token. A refused connection gets
	// ERROR 401 and nothing of it is stored; a refused datagram is dropped unanswered. Failed token
	// checks are limited per source address: past the limit, that address is refused without a
	// check for a while. NDJSON gateways carry no tokens and are not checked.
	Auth DeviceAuth `yaml:"auth"`
	// Custom fields of the devices' metadata that hold secrets (credentials): any of custom1,
	// custom2, custom3. Besides these, the key_field of every route with auth.azure_iot_hub (of
	// this file or the API) is secret. A secret field is write-only through the API (like a
	// device's token: never shown, a device's view says which are set) and is rendered as empty
	// in every request body (absent from measurement's deviceFields, null in templates); a
	// route's [CUSTOM1]..[CUSTOM3] in its URL or headers and its per-device auth still use it.
	SecretFields []string `yaml:"secret_fields,omitempty"`
	// Largest frame a device may send (the frame's length field, type byte included); larger frames are
	// refused with ERROR 413 and the connection closed. 16 bytes to 1MiB.
	MaxFrame Size `yaml:"max_frame"`
	// How long a new connection has to send its HELLO frame before it is closed with ERROR 408.
	HelloTimeout Duration `yaml:"hello_timeout"`
	// Connections that send nothing for this long are closed, on the native TCP and the NDJSON
	// listener. 0 never closes idle connections.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// Most device connections held at once, native TCP and NDJSON together; further connections are
	// refused (native ones with ERROR 503). Each holds an open file: checked against the process's
	// open-file limit by [Config.CheckMachine].
	MaxConnections int `yaml:"max_connections"`
	// Most device connections (native TCP and NDJSON together) from one source address, IPv6
	// addresses counted by their /64; further ones are refused (native ones with ERROR 503) and
	// counted (fleetrelay_device_source_refused_total). Bounds how much of max_connections one
	// host can hold. Generous by default for carrier-grade NAT, where thousands of devices share
	// one address. 0: no limit.
	MaxConnectionsPerSource int `yaml:"max_connections_per_source"`
	// A native TCP connection whose device is not authenticated (its HELLO was not checked
	// against a credential: devices.auth is not token) must send its first DATA (or RESULT)
	// frame this long after connecting, or it is closed with ERROR 408 and counted
	// (fleetrelay_device_first_data_timeouts_total); PINGs do not extend it. 0: no deadline.
	FirstDataTimeout Duration `yaml:"first_data_timeout"`
	// Most identities the relay holds state for at once that neither the registry nor the fleet
	// below knows (any client can make one up, over UDP too): beyond it a new such identity is
	// refused until one is gone — its HELLO with ERROR 503, its datagrams unanswered, its NDJSON
	// lines dropped — and counted (fleetrelay_unknown_identities_refused_total). Such an
	// identity is gone once disconnected (over UDP 1 to 2.5 minutes after its last datagram);
	// the store keeps its last seq until as many other unknown identities went after it, then
	// forgets it too (once delivered): if it comes back after that, what it resends of before is
	// stored again. Identities the registry knows are never refused nor forgotten. Each one held
	// costs about 3.7KiB of memory (README "Hostile devices"). 0: no limit, nothing forgotten.
	MaxUnknownIdentities int `yaml:"max_unknown_identities"`
	// Number of network event loops per native listener. 0 starts one per CPU. At most
	// [MaxEventLoopsPerCPU] per CPU ([Config.CheckMachine]).
	EventLoops int `yaml:"event_loops"`
}

// NativeListeners are the addresses of the native device protocol listeners.
type NativeListeners struct {
	// TCP listen address (host:port). An empty string ("") disables the TCP listener. Use
	// 0.0.0.0:5000 or :5000 to accept devices from other machines.
	TCP string `yaml:"tcp"`
	// UDP listen address (host:port). An empty string ("") disables the UDP listener.
	UDP string `yaml:"udp"`
	// The native protocol over TLS: encrypted device connections.
	TLS NativeTLS `yaml:"tls"`
}

// NativeTLS configures a TLS listener of devices: devices.native.tls (the native protocol) and
// devices.teltonika.tls (Teltonika's TCP protocol), each with the same protocol, limits and
// timeouts as its plain TCP listener (hello_timeout covers the handshake too), with
// max_connections shared. TLS 1.2 is spoken with the ECDHE AES-256-GCM suites only; TLS 1.3's
// suites are chosen by Go (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) and cannot be
// configured. The files are read at start.
type NativeTLS struct {
	// Listen address (host:port). An empty string ("", the default) disables it.
	Listen string `yaml:"listen"`
	// The relay's certificate (PEM, its chain after it) and private key (PEM).
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// PEM file of the CAs that sign device certificates. When set, every device must present a
	// certificate one of them signed (the handshake fails otherwise), and the certificate names
	// the device: its subject CN or one of its DNS SANs must be the identity of its HELLO
	// (compared case-folded), else ERROR 401 — for a Teltonika tracker, the IMEI of its
	// handshake, else it is answered 00 and closed. Such a native device is authenticated, as
	// by a token (first_data_timeout does not apply); devices.auth still applies to its
	// identity.
	ClientCA string `yaml:"client_ca"`
	// Least TLS version: "1.2" (the default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// TeltonikaListeners are the addresses of the Teltonika listeners. A tracker's identity is the
// IMEI of its handshake (TCP) or of each datagram (UDP): the fleet's or the registry's device
// whose identity (serial) is that IMEI. devices.auth "known" admits an IMEI the relay knows;
// "token" admits an IMEI the relay knows only if no token is set for it, since a Teltonika
// tracker cannot present one. Each AVL record is stored as one message (README "Teltonika").
type TeltonikaListeners struct {
	// TCP listen address (host:port). An empty string ("", the default) disables it.
	TCP string `yaml:"tcp"`
	// UDP listen address (host:port). An empty string ("", the default) disables it.
	UDP string `yaml:"udp"`
	// Teltonika over TLS: the TCP protocol (IMEI handshake, AVL packets, Codec 12 commands) in
	// a TLS connection, for trackers configured for TLS. With client_ca, the IMEI of the
	// handshake must be the certificate's subject CN or one of its DNS SANs.
	TLS NativeTLS `yaml:"tls"`
}

// NDJSON configures NDJSON ingest: each line a JSON object naming its device in a top-level field,
// with nothing sent back — no handshake, no acknowledgements. The relay numbers each device's lines
// itself. Lines the relay cannot store are lost, since the sender never learns of it.
type NDJSON struct {
	// TCP listen address (host:port). An empty string ("", the default) disables NDJSON ingest.
	TCP string `yaml:"tcp"`
	// Top-level field of each object whose value, a string or a number, is the device identity. If
	// it is "imei" the identity is the device's IMEI (15 digits) and fills [IMEI]; any other field
	// fills [SERIAL]. Lines without it are dropped.
	IdentityField string `yaml:"identity_field"`
	// Longest line, its line ending not counted, 16 bytes to 1MiB. A longer line closes the
	// connection.
	MaxLine Size `yaml:"max_line"`
	// Bytes of lines read but not yet stored, over all NDJSON connections, at least max_line.
	// While it is reached the relay reads no NDJSON connection: TCP flow control then slows the
	// gateways down instead of lines piling up in memory.
	MaxInflight Size `yaml:"max_inflight"`
}

// Store configures the embedded store.
type Store struct {
	// Fsync each group commit, so acknowledged messages survive a power loss or kernel crash. Off by
	// default: stored messages then survive a crash of the relay process but not of the machine.
	Sync bool `yaml:"sync"`
	// How often to reclaim space in the store's value log. 0 disables it.
	GCInterval Duration `yaml:"gc_interval"`
	// Free space on the data directory's filesystem below which new data is refused (native
	// devices get ERROR 503, NDJSON is not read, /healthz answers 503) while delivery goes on;
	// new data is taken again once delivered messages have freed space. A size (512MiB) or a
	// percentage of the filesystem (5%), below 100%. The store never lets it fall below what it
	// needs to keep writing delivery state (about 53MiB plus its index), whatever is set here.
	MinFree FreeSpace `yaml:"min_free"`
}

// Admin configures the admin HTTP server.
type Admin struct {
	// Listen address (host:port) of the admin HTTP server: /healthz, /metrics, /debug/pprof/ and
	// the REST API under /api/v1 (README, "Admin API"). An empty string ("") disables it. Every
	// /api/v1 request needs an API key (Authorization: Bearer <key>); /healthz is open; /metrics
	// is open on a loopback address and needs a key holding *:read elsewhere (see open_metrics);
	// /debug/pprof/ needs a super key. Serve it over TLS through a reverse proxy when it leaves
	// the host.
	Listen string `yaml:"listen"`
	// The super key of the API: a value, {env: NAME} or {file: PATH} of at least 16 characters.
	// Unset, the first start makes a random key, writes it to <data_dir>/admin.key (mode 0600)
	// and logs that file's path (never the key); later starts reuse the file. Use it to make
	// the keys of accounts and services (POST /api/v1/keys), which need not be super.
	BootstrapKey Secret `yaml:"bootstrap_key,omitempty"`
	// Host names (or addresses) the admin server answers to, besides localhost, 127.0.0.0/8 and
	// [::1], which it always answers to. A request naming another host in its Host header is
	// refused (421), so a web page whose DNS name was rebound to the relay cannot reach it. List
	// the names and addresses clients use when the listener is not on loopback.
	Hosts []string `yaml:"hosts,omitempty"`
	// Serve /metrics without a key on a listener that is not on loopback (e.g. for a Prometheus
	// scraper on a private network). Off, it needs a key holding *:read there.
	OpenMetrics bool `yaml:"open_metrics"`
}

// Commands configures the commands (tasks) to devices.
type Commands struct {
	// How long a finished task (succeeded, failed or expired) is kept after it finished, for
	// GET .../commands to show; then it is deleted, from memory and from the store, and a GET of
	// it answers 404 like an unknown task. Task ids are never given twice all the same. > 0.
	Retention Duration `yaml:"retention"`
	// The ttl of a task created without one: how long it may wait for its RESULT before it
	// expires. > 0, at most max_ttl.
	DefaultTTL Duration `yaml:"default_ttl"`
	// The longest ttl a task may be given; a longer one is refused (422). > 0.
	MaxTTL Duration `yaml:"max_ttl"`
}

// Delivery holds the settings shared by every route's HTTP delivery.
type Delivery struct {
	// Allow routes to reach loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7) and link-local
	// addresses. Off by default, so a route cannot be pointed at the relay's own network: such URLs are
	// refused at load time when their host is a literal IP or localhost, and at connect time otherwise.
	AllowPrivateNetworks bool `yaml:"allow_private_networks"`
	// Time limit for one HTTP request, from connecting to reading the whole response. A route's own
	// timeout overrides it.
	Timeout Duration `yaml:"timeout"`
	// On shutdown, how long in-flight requests may run before they are abandoned (their messages stay
	// queued and are delivered after the restart).
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	// Messages each route keeps in memory, ready to send. Beyond it the route leaves new messages in
	// the store and reads them back as it catches up, so a long outage of an endpoint costs disk, not
	// memory. At least 1. It is what bounds the relay's memory: a queued message of ≈200 bytes
	// costs ≈500 bytes of heap, and the store keeps the delivery state (≈20 bytes a message) of as
	// many messages again. It also paces ingest: while a route whose endpoint answers falls behind
	// by more than a quarter of it, new frames wait for delivery (devices wait for their ACKs), so
	// at full load a route's queue stays near that quarter instead of filling while the backlog
	// grows. With the default, 65536, the relay's peak RSS with one route at full load (1,000
	// devices sending as fast as acknowledged) stays under 256MiB — Badger's memtables and mapped
	// files, the actors' mailboxes, batch buffers and Go's GC headroom included (README, "Memory").
	MaxQueuedMessages int `yaml:"max_queued_messages"`
	// Backoff between attempts of a failed batch. A route's own retry overrides it.
	Retry Retry `yaml:"retry"`
}

// Retry is an exponential backoff policy: the first retry waits InitialBackoff, each next one twice as
// long, never more than MaxBackoff. A server's Retry-After header, when present, is honoured instead.
type Retry struct {
	// Wait before the first retry. Must be > 0.
	InitialBackoff Duration `yaml:"initial_backoff"`
	// Longest wait between two attempts. At least initial_backoff.
	MaxBackoff Duration `yaml:"max_backoff"`
	// Attempts of a batch before its messages move to the route's dead-letter list (SENSORO's webhook spec
	// re-pushes three times after the first try: 4). 0 retries without limit; on a route, 0 uses
	// delivery.retry's.
	MaxAttempts int `yaml:"max_attempts"`
	// How long a message may wait for delivery, counted from its arrival (from its replay for a
	// replayed one); older ones move to the dead-letter list. Default 168h.
	Retention Duration `yaml:"retention"`
}

// Route is one destination for device messages: an HTTP endpoint that receives them in batches.
type Route struct {
	// Unique name of the route: letters, digits, '_', '.' and '-'. It names the route's queue in the
	// store, so renaming a route starts it with an empty queue.
	Name string `yaml:"name"`
	// Set to false to switch the route off: it takes no new messages while disabled. What it had
	// queued before stays in the store and is delivered once it is enabled again. Default true.
	Enabled *bool `yaml:"enabled,omitempty"`
	// Endpoint, http:// or https://. It may contain the device's dynamic fields [SERIAL], [IMEI],
	// [ICCID], [CUSTOM1], [CUSTOM2] and [CUSTOM3], replaced per device, e.g.
	// https://example.com/ingest/[SERIAL]. Write literal brackets as %5B and %5D.
	URL string `yaml:"url"`
	// HTTP method: POST (the default) or PUT.
	Method string `yaml:"method"`
	// Extra request headers. Values may contain the same dynamic fields as url.
	Headers map[string]string `yaml:"headers,omitempty"`
	// How messages are grouped into requests. Each request body is a JSON array of messages.
	Batch Batch `yaml:"batch"`
	// Time limit for one request of this route. 0 uses delivery.timeout.
	Timeout Duration `yaml:"timeout"`
	// Most requests of this route in flight at once (1 to 1024). Messages of one device are still
	// delivered in order.
	Concurrency int `yaml:"concurrency"`
	// Backoff for this route; absent (or a field left at 0) uses delivery.retry.
	Retry *Retry `yaml:"retry,omitempty"`
	// HTTP statuses that mean the endpoint has the batch. Empty (the default) means any 2xx. Any
	// other status is a failure and the batch is retried; redirects (3xx) are never followed.
	SuccessCodes []int `yaml:"success_codes,omitempty"`
	// Request body compression: none (the default), gzip or zstd, with Content-Encoding set.
	Compression string `yaml:"compression"`
	// How each message is rendered: envelope (the default), raw, sensoro, bewhere, bewhere-full,
	// measurement, template, or notification (a notification route's only format, see
	// notifications). See the README's "Formats".
	Format string `yaml:"format"`
	// Format template: the JSON template with $$field placeholders. Required there, an error
	// elsewhere.
	Template string `yaml:"template,omitempty"`
	// Format sensoro: the appId sent with every message (required) and the deviceType (optional).
	// app_id is also sign.sensoro's X-ACCESS-ID, with any format.
	AppID      string `yaml:"app_id,omitempty"`
	DeviceType string `yaml:"device_type,omitempty"`
	// Request body: array (the default), a JSON array of up to batch.max_messages messages; or
	// object, one message per request, as SENSORO webhooks receive them.
	Body string `yaml:"body"`
	// Which devices' messages the route takes (default: all). Decided when a message is stored.
	Filter Filter `yaml:"filter,omitempty"`
	// The account the route belongs to: it takes only the messages of devices of that account.
	Account string `yaml:"account,omitempty"`
	// true makes this a notification route: instead of device data it receives a notification
	// message (format notification, the HTTPS forwarding spec's shape) whenever a device is added, updated or
	// deleted through the API or an import, queued, batched, authenticated and signed like data.
	// Changes made together (one import chunk) are one message with many observations. With
	// account, only the changes of that account's devices. Its format is notification (set
	// when format is left at envelope); filter must be empty, and url and headers hold no
	// dynamic fields (a notification is no device's).
	Notifications bool `yaml:"notifications,omitempty"`
	// How the route authenticates (at most one scheme), signs its requests, and speaks TLS.
	Auth Auth `yaml:"auth,omitempty"`
	Sign Sign `yaml:"sign,omitempty"`
	TLS  TLS  `yaml:"tls,omitempty"`
}

// Batch says when a route's pending messages are sent: as soon as max_messages or max_bytes is
// reached, or linger after the first message of the batch arrived, whichever comes first.
type Batch struct {
	// Most messages in one request, 1 to 100000.
	MaxMessages int `yaml:"max_messages"`
	// Largest request body before compression. A single message larger than this is sent alone.
	MaxBytes Size `yaml:"max_bytes"`
	// Longest time a message waits for its batch to fill. 0 sends whatever is pending at once.
	Linger Duration `yaml:"linger"`
}

// IsEnabled reports whether the route delivers; a route is enabled unless enabled: false is set.
func (r *Route) IsEnabled() bool { return r.Enabled == nil || *r.Enabled }

// Default returns the built-in configuration: listeners on loopback only, data in ./data, no routes.
// Each call returns a new value.
func Default() *Config {
	return &Config{
		DataDir:     "./data",
		MemoryLimit: 192 * MiB,
		GCPercent:   400,
		Log:         Log{Level: "info", Format: "text", FailureInterval: Duration(10 * time.Second)},
		Devices: Devices{
			Native:         NativeListeners{TCP: "127.0.0.1:5000", UDP: "127.0.0.1:5000", TLS: NativeTLS{MinVersion: "1.2"}},
			NDJSON:         NDJSON{TCP: "", IdentityField: "serial", MaxLine: 64 * KiB, MaxInflight: 16 * MiB},
			Teltonika:      TeltonikaListeners{TLS: NativeTLS{MinVersion: "1.2"}},
			Ack:            AckPersist,
			Auth:           AuthOpen,
			MaxFrame:       64 * KiB,
			HelloTimeout:   Duration(10 * time.Second),
			IdleTimeout:    Duration(5 * time.Minute),
			MaxConnections: 10000,
			EventLoops:     0,

			MaxConnectionsPerSource: 5000,
			FirstDataTimeout:        Duration(2 * time.Minute),
			MaxUnknownIdentities:    50000,
		},
		Store: Store{Sync: false, GCInterval: Duration(time.Minute), MinFree: "5%"},
		Admin: Admin{Listen: "127.0.0.1:8080"},
		Commands: Commands{
			Retention:  Duration(168 * time.Hour),
			DefaultTTL: Duration(24 * time.Hour),
			MaxTTL:     Duration(720 * time.Hour),
		},
		Delivery: Delivery{
			AllowPrivateNetworks: false,
			Timeout:              Duration(10 * time.Second),
			ShutdownGrace:        Duration(5 * time.Second),
			MaxQueuedMessages:    65536,
			Retry: Retry{
				InitialBackoff: Duration(200 * time.Millisecond),
				MaxBackoff:     Duration(30 * time.Second),
				Retention:      Duration(168 * time.Hour),
			},
		},
		DeviceLink: DeviceLink{Listen: "", Ports: "40000-40999", Protocols: []string{LinkTCP, LinkUDP}, DevicePort: 0, Timeout: 0, Buffer: 256 * KiB, BusyPoll: DefaultBusyPoll},
		Cluster:    Cluster{NATS: ClusterNATS{Replicas: 3, Prefix: "fleetrelay", Partitions: 32, Lease: Duration(3 * time.Second)}},
	}
}

// DefaultRoute returns a route with every default set and no name or URL. Routes decoded from YAML
// start from it; code that builds a Config should too, then call [Config.Resolve].
func DefaultRoute() Route {
	return Route{
		Method: "POST",
		Batch: Batch{
			MaxMessages: 500,
			MaxBytes:    MiB,
			Linger:      Duration(50 * time.Millisecond),
		},
		Timeout:     0,
		Concurrency: 4,
		Compression: CompressionNone,
		Format:      "envelope",
		Body:        BodyArray,
		TLS:         TLS{MinVersion: "1.2"},
	}
}

// Request body shapes of a route.
const (
	BodyArray  = "array"
	BodyObject = "object"
)

// Request body compressions of a route.
const (
	CompressionNone = "none"
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
)

// Resolve fills the values routes inherit from delivery: a zero timeout becomes delivery.timeout, and an
// absent retry (or a retry field left at 0) takes delivery.retry. It also turns empty routes and headers
// into nil. [Load] and [Parse] call it; it is idempotent.
func (c *Config) Resolve() {
	if len(c.Routes) == 0 {
		c.Routes = nil
	}
	if len(c.Fleet) == 0 {
		c.Fleet = nil
	}
	if len(c.Connectors) == 0 {
		c.Connectors = nil
	}
	for i := range c.Fleet {
		d := &c.Fleet[i]
		d.Tags, d.Groups = nilIfEmpty(d.Tags), nilIfEmpty(d.Groups)
	}
	for i := range c.Routes {
		c.Routes[i].Resolve(&c.Delivery)
	}
}

// Resolve fills what the route inherits from d (a zero timeout, an absent retry or a retry field
// left at 0) and its own defaults ([Config.Resolve] does it for the file's routes; a route
// parsed alone with [ParseRoute] needs it before it is checked or compiled). It is idempotent.
func (r *Route) Resolve(d *Delivery) {
	r.normalize()
	if r.Timeout == 0 {
		r.Timeout = d.Timeout
	}
	if r.Retry == nil {
		rr := d.Retry
		r.Retry = &rr
		return
	}
	if r.Retry.InitialBackoff == 0 {
		r.Retry.InitialBackoff = d.Retry.InitialBackoff
	}
	if r.Retry.MaxBackoff == 0 {
		r.Retry.MaxBackoff = d.Retry.MaxBackoff
	}
	if r.Retry.MaxAttempts == 0 {
		r.Retry.MaxAttempts = d.Retry.MaxAttempts
	}
	if r.Retry.Retention == 0 {
		r.Retry.Retention = d.Retry.Retention
	}
}

// normalize turns empty headers, codes and lists into nil and fills the auth sections' defaults.
func (r *Route) normalize() {
	if len(r.Headers) == 0 {
		r.Headers = nil
	}
	if len(r.SuccessCodes) == 0 {
		r.SuccessCodes = nil
	}
	r.Filter.IMEIs, r.Filter.Tags, r.Filter.Groups = nilIfEmpty(r.Filter.IMEIs), nilIfEmpty(r.Filter.Tags), nilIfEmpty(r.Filter.Groups)
	if r.Notifications && (r.Format == "" || r.Format == format.NameEnvelope) {
		r.Format = format.NameNotification // a notification route's only format
	}
	r.resolveAuth()
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
