package config

// ExampleYAML is the reference configuration: every key, its default and what it does. Outside routes,
// every value shown is the default. It parses and validates (a test checks both, and that it names every
// key the types define).
const ExampleYAML = `# fleetrelay configuration.
#
# Every key is optional; a key left out, or written without a value, keeps the default shown here.
# Unknown keys are errors. Sizes are integers of bytes or take a unit: B, KB, MB, GB (powers of 1000),
# KiB, MiB, GiB (powers of 1024), e.g. 64KiB. Durations take a unit: ms, s, m, h, e.g. 50ms, 10s, 168h;
# a plain 0 is allowed.

# Directory holding the store (journal, route queues, device state). Created if missing.
data_dir: ./data

# The Go runtime's soft memory limit: near it the garbage collector runs more often, so the heap's
# headroom does not double a full queue's memory. The default keeps peak RSS near 256MiB at full
# load with delivery.max_queued_messages at its default. 0: no limit. GOMEMLIMIT, when set, wins.
memory_limit: 192MiB
# The garbage collector's pace (GOGC): a collection once the heap grew by this many percent over
# what the last one left live. Higher: less CPU per frame and a shorter ACK tail for more memory,
# which memory_limit caps. -1: collect only near memory_limit. GOGC, when set, wins.
gc_percent: 400

log:
  level: info             # lowest level written: debug, info, warn or error
  format: text            # text (key=value) or json
  # A route's failed delivery attempts are warnings (route, destination without its query or
  # user information, status, error), at most one per failure_interval for the route, counting
  # those held back ("suppressed"); the first success after them is logged at info.
  failure_interval: 10s

# The device-facing side.
devices:
  # Listeners for the native device protocol (host:port). "" disables one. The defaults accept
  # devices from this machine only: use 0.0.0.0:5000 or :5000 to accept them from the network.
  native:
    tcp: 127.0.0.1:5000
    udp: 127.0.0.1:5000
    # The native protocol over TLS, for encrypted device connections: the same protocol, limits
    # and timeouts as tcp (hello_timeout covers the handshake), sharing max_connections. TLS 1.2
    # with the ECDHE AES-256-GCM suites only; TLS 1.3's suites are Go's and not configurable
    # (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305). Files are read at start.
    tls:
      listen: ""          # host:port; "" disables it
      cert:               # the relay's certificate (PEM, chain after it); required with listen
      key:                # its private key (PEM); required with listen
      # CAs (PEM) that sign device certificates. When set, a device must present one (else the
      # handshake fails) and it names the device: its subject CN or a DNS SAN must be its
      # HELLO's identity (case-folded), else ERROR 401. Such a device is authenticated, as by
      # a token (no first_data_timeout); devices.auth still applies to its identity.
      client_ca:
      min_version: "1.2"  # or "1.3"
  # NDJSON ingest, the protocol of simple gateways: one JSON object per line over TCP, nothing
  # sent back. The relay numbers each device's lines itself; lines it cannot store are lost, as
  # the sender never learns of it. Invalid lines are dropped and counted. Shares idle_timeout and
  # max_connections with the native TCP listener.
  ndjson:
    tcp: ""               # listen address (host:port); "" disables it
    # Top-level field naming the device: a string or a number. "imei" (15 digits) fills [IMEI],
    # any other field [SERIAL].
    identity_field: serial
    # Longest line (line ending not counted), 16B to 1MiB; a longer one closes the connection.
    max_line: 64KiB
    # Lines read but not yet stored, over all NDJSON connections (at least max_line). While it is
    # reached no NDJSON connection is read, and TCP flow control slows the gateways down.
    max_inflight: 16MiB
  # Teltonika trackers (Codec 8, 8 Extended, 16; commands as Codec 12). Identity: the IMEI.
  # Share max_connections, max_connections_per_source, idle_timeout, auth and the fleet with the
  # native listeners; under auth "token" only IMEIs without a token are admitted (a tracker
  # cannot present one). Each AVL record is stored as one message.
  teltonika:
    tcp: ""               # listen address (host:port); "" disables it
    udp: ""               # listen address (host:port); "" disables it
    # Teltonika over TLS (the TCP protocol in TLS), with the settings of native.tls above. With
    # client_ca, the IMEI of the handshake must be the certificate's subject CN or a DNS SAN,
    # else it is answered 00 and closed.
    tls:
      listen: ""          # host:port; "" disables it
      cert:               # the relay's certificate (PEM, chain after it); required with listen
      key:                # its private key (PEM); required with listen
      client_ca:          # CAs (PEM) that sign device certificates; a certificate is then required
      min_version: "1.2"  # or "1.3"
  # When a device may forget a message:
  #   persist   once the relay has stored it (survives a crash of the relay process)
  #   delivery  once every route the message goes to has accepted it
  ack: persist
  # Which native devices are admitted:
  #   open   any identity (no token is checked)
  #   known  only the identities of the fleet below or of the API's devices
  #   token  only known identities whose HELLO (over UDP: each UDATA) carries the device's token
  # A refused connection gets ERROR 401 and nothing of it is stored; a refused datagram is dropped
  # unanswered. Failed token checks are limited per source address: past the limit the address
  # is refused without a check for a while. NDJSON gateways carry no tokens and are not checked.
  auth: open
  # Custom fields of the devices' metadata that hold secrets: any of custom1, custom2, custom3.
  # The key_field of every route with auth.azure_iot_hub (this file's or the API's) is secret
  # too. A secret field is write-only through the API (never shown; a device's view lists the
  # ones set in secret_fields_set) and rendered as empty in every request body (absent from
  # measurement's deviceFields, null in templates), while [CUSTOM1]..[CUSTOM3] in a route's URL
  # or headers and its per-device auth still use it: those carry credentials by design.
  secret_fields:
  # Largest frame a device may send (length field, type byte included), 16B to 1MiB. Larger frames
  # are refused with ERROR 413 and the connection is closed.
  max_frame: 64KiB
  # Time a new connection has to send HELLO before it is closed with ERROR 408.
  hello_timeout: 10s
  # Connections (native TCP and NDJSON) that send nothing for this long are closed. 0 never
  # closes them.
  idle_timeout: 5m
  # Most device connections held at once, native TCP and NDJSON together; further ones are
  # refused (native ones with ERROR 503). Each holds an open file: at start (and in -check-config)
  # a value at or above the process's open-file limit (ulimit -n) is an error, and one that
  # leaves the relay fewer than about 256 files plus 2 per event loop and each route's
  # concurrency + 1 for its own use (store, listeners, delivery connections) is a warning.
  max_connections: 10000
  # Most connections (native TCP and NDJSON) from one source address (IPv6: one /64); further
  # ones are refused (native ones with ERROR 503). Generous for carrier-grade NAT, where
  # thousands of devices share one address. 0: no limit.
  max_connections_per_source: 5000
  # A native TCP connection whose device is not authenticated (its HELLO not checked against a
  # credential: auth is not token) must send its first DATA (or RESULT) this long after
  # connecting, or it is closed with ERROR 408; PINGs do not extend it. 0: no deadline.
  first_data_timeout: 2m
  # Most identities neither the registry nor the fleet knows that the relay holds state for at
  # once (any client can make one up, over UDP too), about 3.7KiB of memory each. Beyond it a
  # new one is refused until one is gone (disconnected; over UDP 1 to 2.5 minutes after its last
  # datagram): HELLO with ERROR 503, datagrams unanswered, NDJSON lines dropped. The store keeps
  # a gone one's last seq until as many others went after it, then forgets it: what it resends
  # of before after that is stored again. Known identities are never refused nor forgotten.
  # 0: no limit, nothing forgotten.
  max_unknown_identities: 50000
  # Network event loops per native listener; 0 starts one per CPU. At most 4 per CPU.
  event_loops: 0

# The embedded store.
store:
  # Fsync each group commit, so acknowledged messages survive a power loss or kernel crash. Off:
  # they survive a crash of the relay process, not of the machine.
  sync: false
  # How often to reclaim space in the store's value log; 0 leaves only the runs that follow
  # the deletion of delivered messages.
  gc_interval: 1m
  # Free space on the data directory's filesystem below which new data is refused: native
  # devices get ERROR 503, NDJSON connections are not read, /healthz answers 503. Delivery goes
  # on, and new data is taken again once delivered messages have freed space. A size (512MiB)
  # or a percentage of the filesystem (5%). Never below what the store itself needs once it
  # refuses new data (about 53MiB plus its index; see the README's "Disk space").
  min_free: 5%

# The admin HTTP server: /healthz, /metrics, /debug/pprof/ and the REST API (/api/v1, README
# "Admin API"). "" disables it. API requests need a key (Authorization: Bearer <key>).
admin:
  listen: 127.0.0.1:8080
  # The super key: a value, {env: NAME} or {file: PATH}, at least 16 characters. Unset, the
  # first start makes one in <data_dir>/admin.key (mode 0600) and logs the file's path.
  bootstrap_key:
  # Host names or addresses the server answers to besides localhost, 127.0.0.0/8 and [::1];
  # other Host headers are refused (421: DNS rebinding).
  hosts:
  # Serve /metrics without a key on a listener that is not on loopback (on loopback it is
  # always open; elsewhere it needs a key holding *:read).
  open_metrics: false

# Commands to devices (POST /api/v1/devices/{id}/commands, README "Admin API").
commands:
  # How long a finished task (succeeded, failed or expired) is kept after it finished; then it
  # is deleted, from memory and from the store, and GET of it answers 404. Ids are never reused.
  retention: 168h
  # The ttl of a task created without one: how long it may wait for its RESULT before it
  # expires. At most max_ttl.
  default_ttl: 24h
  # The longest ttl a task may be given; a longer one is refused.
  max_ttl: 720h

# Device links: a client reaches a device through the relay over TCP or UDP, on a port that
# POST /api/v1/devicelink/{device} opens for it (README, "Device links").
devicelink:
  # The IP address (no port) clients connect to, apart from the devices' listeners so that the
  # two can be separate interfaces. "" disables device links (the API answers 503).
  listen: ""
  # Cluster mode: the IP address (no port) other relay nodes dial to reach this node's links,
  # when a link created through another node reaches a device connected here. "": listen,
  # which must then be an address the other nodes reach (not 0.0.0.0 or ::).
  advertise: ""
  # The ports links take on listen, one per link ("first-last", or one port). When every one
  # holds a link, new ones are refused (503). Each port may hold open files, counted with
  # max_connections against the open-file limit: 3 for TCP (its listener, a link's two
  # sockets), 2 for UDP (its socket, a link's device socket); 5 with both.
  ports: 40000-40999
  # The protocols links may use: tcp, udp or both. Only theirs are bound on every port from the
  # start; a link of another protocol is refused (422). [tcp] saves a UDP socket per port.
  protocols: [tcp, udp]
  # The device's port a link reaches when the request names none; 0: every request must.
  device_port: 0
  # A UDP link is closed after this long without a datagram either way when the request gives
  # no timeout; 0: never.
  timeout: 0
  # Bytes a link holds for each direction, waiting for the slower side; once full, the other
  # side is not read until it drains. 4KiB to 64MiB.
  buffer: 256KiB
  # After a TCP link's event loop carried bytes, it keeps polling its sockets this long instead
  # of sleeping (like Linux's busy_poll), so the next bytes need not wait for its thread to wake
  # up. It yields to any other thread, and costs nothing while links are idle (README, "Device
  # links: throughput, latency, memory"). 0: off; at most 1ms.
  busy_poll: 100us

# Raw TCP connectors: each connection devices make to listen is paired with a new connection to
# upstream, and bytes flow both ways unchanged (the end server's own answers reach the device).
# None by default.
connectors:
  - name: tracker-gateway   # unique: letters, digits, '_', '.', '-'
    listen: 0.0.0.0:5100    # where devices connect (host:port)
    upstream: ingest.example.com:7000
    # Past this, connecting upstream has failed: the device's connection is closed and counted.
    connect_timeout: 5s
    # A pair that carries nothing either way for this long is closed; 0: never.
    idle_timeout: 0
    # "v2" sends upstream an HAProxy PROXY protocol v2 header first, so the end server sees the
    # device's address; "" sends the device's bytes as they are.
    proxy_protocol: v2
    # Most device connections at once (at least 1): one beyond is closed at accept, before
    # upstream is dialled, and counted. Each holds 2 open files, counted against the
    # process's open-file limit at start.
    max_connections: 1000
    # Most bytes a connection holds per direction for the slower side (4KiB to 64MiB).
    buffer: 256KiB

# Cluster mode (README "Cluster mode"): relays of one prefix share, through NATS JetStream, the
# devices' journal (a frame is acknowledged once JetStream has replicated it), their lastSeq,
# the routes' queues (partitions, each delivered by one relay at a time and taken over by
# another when it dies), commands and the control plane (accounts, keys, routes, devices).
cluster:
  nats:
    # NATS server URL(s), comma-separated (nats://host:4222,...). "": one node, the embedded
    # store alone (the default; the keys below then do nothing). fleetrelay -nats-embedded
    # ADDR runs a NATS server inside the relay and sets this to it.
    url: ""
    # NATS credentials file (JWT and NKey seed); "": none.
    creds: ""
    # TLS to the NATS servers: CA certificates trusted besides the system's, and a client
    # certificate and key for mutual TLS (both or neither).
    tls:
      ca_file: ""
      cert_file: ""
      key_file: ""
    # Replicas of each stream and bucket, 1 to 5; 3 keeps everything acknowledged through the
    # loss of one NATS node. File storage always.
    replicas: 3
    # Names the streams and buckets (<prefix>_journal, <prefix>_registry, ...): relays of one
    # prefix share them. Letters, digits, - and _.
    prefix: fleetrelay
    # Partitions of the journal, 1 to 1024: a device's messages stay in one, in order, and each
    # is delivered by one relay at a time. Fixed when the journal is created; more partitions
    # spread delivery over more relays.
    partitions: 32
    # How long a partition stays with a relay that stopped renewing it (died, or lost NATS)
    # before another relay takes it over (1s to 1m).
    lease: 3s
    # This relay's name among the relays of its prefix; "": the host name and a random suffix.
    # Letters, digits, - and _.
    node: ""

# Settings shared by every route.
delivery:
  # Allow routes to reach loopback, private and link-local addresses. Off, such URLs are refused at
  # load time when their host is a literal IP or localhost, and at connect time otherwise.
  allow_private_networks: false
  # Time limit for one HTTP request, connect to last response byte. A route's timeout overrides it.
  timeout: 10s
  # On shutdown, how long in-flight requests may run before they are abandoned; their messages stay
  # queued and are delivered after the restart.
  shutdown_grace: 5s
  # Messages each route keeps in memory, ready to send. Beyond it new messages stay in the store and
  # are read back as the route catches up: a long endpoint outage costs disk, not memory. The
  # store also keeps the delivery state of this many messages in memory beyond what routes hold.
  # It bounds the relay's memory (≈500 B of heap a queued message) and paces ingest: while a
  # route that delivers falls behind by a quarter of it, new frames wait for delivery. The
  # default keeps peak RSS under 256MiB at full load with one route (README, "Memory").
  max_queued_messages: 65536
  # Backoff between attempts of a failed batch: initial_backoff, doubling up to max_backoff. A
  # server's Retry-After header is honoured instead when present. A route's retry overrides it.
  retry:
    initial_backoff: 200ms
    max_backoff: 30s
    # Attempts of a batch before its messages move to the route's dead-letter list (see
    # "fleetrelay dlq"); 0 retries without limit.
    max_attempts: 0
    # Messages older than this (from arrival, or from their replay) move to the dead-letter list.
    retention: 168h

# Where device messages go: HTTP endpoints that receive them in batches (a JSON array per request).
# There are none by default.
routes:
  - # Unique name: letters, digits, '_', '.', '-'. It names the route's queue in the store, so
    # renaming a route starts it with an empty queue.
    name: webhook
    # false switches the route off: it takes no new messages; what it had queued is kept and
    # delivered once it is enabled again.
    enabled: true
    # http:// or https:// endpoint. It may contain the device's dynamic fields [SERIAL], [IMEI],
    # [ICCID], [CUSTOM1], [CUSTOM2], [CUSTOM3]. Write literal brackets as %5B and %5D.
    url: https://hooks.example.com/fleet/[SERIAL]
    # POST or PUT.
    method: POST
    # Extra request headers; values may contain the same dynamic fields.
    headers:
      X-Api-Key: change-me
      X-Device-IMEI: "[IMEI]"
    # A batch is sent when it holds max_messages or max_bytes (body size before compression), or
    # linger after its first message arrived, whichever comes first. A single message larger than
    # max_bytes is sent alone. linger 0 sends whatever is pending at once.
    batch:
      max_messages: 500     # 1 to 100000
      max_bytes: 1MiB
      linger: 50ms
    # Time limit for one request of this route; 0 uses delivery.timeout.
    timeout: 0
    # Most requests of this route in flight at once, 1 to 1024. Messages of one device are still
    # delivered in order.
    concurrency: 4
    # HTTP statuses that mean delivered; empty means any 2xx. Anything else is retried; redirects
    # (3xx) are never followed and cannot be listed. E.g. [200, 201, 202, 400, 500].
    success_codes: []
    # Request body compression: none, gzip or zstd (Content-Encoding is set).
    compression: none
    # How each message is rendered: envelope (the relay's own), raw (the record as sent),
    # sensoro, bewhere, bewhere-full, measurement, template, or notification (a notification
    # route's, see device-changes). See the README's "Formats".
    format: envelope
    # array: a JSON array of up to batch.max_messages messages per request; object: one message
    # per request, the body that message alone.
    body: array
    # How the route authenticates: at most one of basic, oauth2, aws_sigv4, azure_blob,
    # azure_event_hubs, azure_iot_hub (see the other routes). Headers carry static and
    # per-device credentials (e.g. Authorization: "[CUSTOM1]"). A secret is a value,
    # {env: NAME} or {file: PATH}; it is read at start and never logged.
    auth:
      basic:
        username: fleet
        password: {env: WEBHOOK_PASSWORD}
    # Signatures over the body exactly as sent (after compression): any of hmac, sensoro,
    # webhooks.
    sign:
      # BeWhere's "hash-key": an HMAC of the body, hex or base64, in a header.
      hmac:
        header: hash-key
        key: {file: /etc/fleetrelay/bewhere-api-key}
        algorithm: sha512   # or sha256
        encoding: hex       # or base64
    # HTTPS: the system's roots are trusted; TLS 1.2 at least.
    tls:
      ca_file: /etc/fleetrelay/ca.pem        # more CAs to trust (PEM)
      cert_file: /etc/fleetrelay/client.pem  # client certificate for mutual TLS, with key_file
      key_file: /etc/fleetrelay/client.key
      min_version: "1.2"                     # or "1.3"
      insecure_skip_verify: false            # true accepts any certificate (logged at start)

  - name: sensoro
    enabled: false
    url: https://developer.example.com/sensoro/webhook
    format: sensoro
    app_id: "123456"      # format sensoro: the appId of every push (required)
    device_type: node     # format sensoro: deviceType
    body: object          # SENSORO pushes one object per request
    sign:
      # X-ACCESS-ID (app_id), X-ACCESS-NONCE and X-ACCESS-SIGNATURE; safe mode encrypts each
      # message into {"encryptData": ...} with app_key first (see the README).
      sensoro:
        app_secret: {env: SENSORO_APP_SECRET}
        safe_mode: true
        app_key: {env: SENSORO_APP_KEY}

  - name: custom
    enabled: false
    url: https://api.example.com/push/[IMEI]
    format: template
    # format template: "$$name" is a built-in field (device metadata or a BeWhere name such as
    # $$timestamp_seconds), "$$data.a.b" a field of the record. A placeholder that is a whole
    # string becomes the typed value (numbers stay numbers); a missing field becomes null.
    template: '{"imei": "$$imei", "speed": "$$data.speed", "at": "$$timestamp_seconds"}'
    auth:
      # OAuth2 client credentials: the token is cached, renewed before it expires and after a 401.
      oauth2:
        token_url: https://auth.example.com/oauth2/token
        client_id: fleetrelay
        client_secret: {env: OAUTH_CLIENT_SECRET}
        scopes: [ingest]
        auth_style: header  # header: HTTP Basic (RFC 6749 2.3.1); body: in the form
    sign:
      # Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature); several secrets
      # sign with each, for rotation.
      webhooks:
        secrets: [{env: WEBHOOK_SECRET}]

  - name: device-changes
    enabled: false
    url: https://hooks.example.com/fleet/devices
    # A notification route: no device data, but a notification message whenever a device is
    # added, updated or deleted through the API or an import (one message per change, or per
    # import chunk with an observation per device): {"hashId", "environmentHashId" (the
    # account), "observations": [{"hashId", "object": "device", "action": "add|update|delete",
    # "device": {"identifier"}, "createdAt", "updatedAt", "deletedAt"}], "generatedAt",
    # "attempt"}. Queued, batched, authenticated and signed like data; format notification; no
    # filter and no dynamic fields. With account: only the changes of that account's devices.
    notifications: true
    account: acme
    sign:
      webhooks:
        secrets: [{env: WEBHOOK_SECRET}]

  - name: archive
    enabled: false
    url: https://archive.example.com/fleet/[IMEI]
    method: PUT
    batch:
      max_messages: 5000
      max_bytes: 4MiB
      linger: 1s
    timeout: 30s
    concurrency: 2
    compression: zstd
    # This route's own backoff; a key left out uses delivery.retry's.
    retry:
      initial_backoff: 1s
      max_backoff: 5m
      # SENSORO's webhook spec: three re-pushes after the first try.
      max_attempts: 4
      retention: 24h
    # Which devices' messages the route takes, decided when a message is stored. Empty (the
    # default) takes every device; otherwise a device is taken if its IMEI is listed, or it has
    # one of the tags, or it is in one of the groups (see fleet).
    filter:
      imeis: ["356938035643809"]
      tags: [cold-chain]
      groups: [trucks]
    # The account the route belongs to: it takes only the messages of devices of that account
    # (fleet[].account). Empty (the default): every account's.
    account: acme
    auth:
      # AWS Signature V4; with s3, each batch is an object <url>/YYYY/MM/DD/<timestamp> (PUT).
      aws_sigv4:
        region: eu-west-1
        service: s3           # default execute-api, or s3 with s3: true
        access_key_id: AKIAEXAMPLE
        secret_access_key: {env: AWS_SECRET_ACCESS_KEY}
        session_token: {env: AWS_SESSION_TOKEN}
        s3: true

  - name: blob
    enabled: false
    url: https://acme.blob.core.windows.net/fleet
    method: PUT
    auth:
      # Each batch is a block blob <url>/YYYY/MM/DD/<timestamp>.json, with a SAS generated from
      # the storage account's key (or given: see blob-sas).
      azure_blob:
        account: acme
        account_key: {env: AZURE_STORAGE_KEY}
        ttl: 1h               # lifetime of the generated SAS

  - name: blob-sas
    enabled: false
    url: https://acme.blob.core.windows.net/fleet
    method: PUT
    auth:
      azure_blob:
        sas: {env: AZURE_BLOB_SAS}

  - name: events
    enabled: false
    url: https://acme.servicebus.windows.net/fleet/messages
    auth:
      # SharedAccessSignature tokens from a key name and key, renewed before they expire.
      azure_event_hubs:
        key_name: RootManageSharedAccessKey
        key: {env: EVENT_HUBS_KEY}
        ttl: 1h

  - name: iothub
    enabled: false
    # The URL names the device, so each batch is one device's messages.
    url: https://acme.azure-devices.net/devices/[SERIAL]/messages/events?api-version=2021-04-12
    auth:
      # Each device's requests carry its own SAS token, signed with its key (base64, as IoT Hub
      # shows it) from its metadata's key_field. A device without a key is not retried: its
      # messages go to the dead-letter list at once.
      azure_iot_hub:
        host: acme.azure-devices.net
        key_field: custom1
        ttl: 1h               # token lifetime, renewed when a fifth is left

# Device metadata, one entry per device identity (the serial it gives in HELLO, or its IMEI
# without one; the UDATA or NDJSON identity). Routes use it for [IMEI], [ICCID], [CUSTOM1]..
# [CUSTOM3] in URLs and headers (e.g. per-device credentials), for filters and in formats.
# Devices not listed have no metadata. None by default.
fleet:
  - id: SN-0001
    imei: "356938035643809"   # used when the device does not send its own
    iccid: "8944501234567890123"
    custom1: device-key-abc   # free fields: [CUSTOM1]..[CUSTOM3]
    custom2: ""
    custom3: ""
    tags: [cold-chain, eu]
    groups: [trucks]
    account: acme
    # The device's credential for devices.auth: token: a value, {env: NAME} or {file: PATH}, at
    # most 255 bytes. The relay keeps only its SHA-256; the API never shows it.
    token: {env: SN_0001_TOKEN}
`

// Example returns [ExampleYAML] parsed. It panics if ExampleYAML is invalid, which a test rules out.
func Example() *Config {
	c, err := Parse([]byte(ExampleYAML))
	if err != nil {
		panic("config: ExampleYAML: " + err.Error())
	}
	return c
}
