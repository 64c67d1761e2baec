package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/fleetrelay/fleetrelay/codec/fields"
)

// Auth is how a route proves who sends: at most one scheme. Headers (see Route.Headers) carry
// static and per-device credentials, e.g. Authorization: [CUSTOM1].
type Auth struct {
	// HTTP Basic authentication (RFC 7617).
	Basic *BasicAuth `yaml:"basic,omitempty"`
	// OAuth2 client credentials (RFC 6749 §4.4): a token from token_url, sent as a Bearer token,
	// refreshed before it expires and once after a 401.
	OAuth2 *OAuth2 `yaml:"oauth2,omitempty"`
	// AWS Signature Version 4.
	AWSSigV4 *AWSSigV4 `yaml:"aws_sigv4,omitempty"`
	// Azure Blob Storage: each batch is PUT as a block blob named
	// <url>/{YYYY}/{MM}/{DD}/{timestamp}.json, authorised by a SAS.
	AzureBlob *AzureBlob `yaml:"azure_blob,omitempty"`
	// Azure Event Hubs: a SharedAccessSignature Authorization header from a key name and key.
	AzureEventHubs *AzureEventHubs `yaml:"azure_event_hubs,omitempty"`
	// Azure IoT Hub, per device: each request carries a SharedAccessSignature token of the
	// device it is for, signed with that device's own key from its metadata.
	AzureIoTHub *AzureIoTHub `yaml:"azure_iot_hub,omitempty"`
}

// BasicAuth is a user name and password.
type BasicAuth struct {
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
}

// OAuth2 is a client-credentials grant.
type OAuth2 struct {
	TokenURL     string   `yaml:"token_url"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret Secret   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes,omitempty"`
	// header (the default): id and secret in HTTP Basic, form-encoded first (RFC 6749 §2.3.1);
	// body: both in the token request's form.
	AuthStyle string `yaml:"auth_style"`
}

// AWSSigV4 signs requests with AWS Signature Version 4.
type AWSSigV4 struct {
	Region          string `yaml:"region"`
	Service         string `yaml:"service"` // default execute-api; s3 in S3 mode
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey Secret `yaml:"secret_access_key"`
	SessionToken    Secret `yaml:"session_token,omitempty"`
	// S3 mode: each batch is PUT as an object named <url>/{YYYY}/{MM}/{DD}/{timestamp}.
	S3 bool `yaml:"s3"`
}

// AzureBlob authorises Blob Storage writes with a SAS: given, or generated from the account key.
type AzureBlob struct {
	SAS        Secret `yaml:"sas,omitempty"`
	Account    string `yaml:"account,omitempty"`
	AccountKey Secret `yaml:"account_key,omitempty"`
	// Lifetime of a generated SAS (renewed when a fifth of it is left); default 1h.
	TTL Duration `yaml:"ttl,omitempty"`
}

// AzureEventHubs generates SharedAccessSignature tokens, renewed before they expire.
type AzureEventHubs struct {
	KeyName string   `yaml:"key_name"`
	Key     Secret   `yaml:"key"`
	TTL     Duration `yaml:"ttl"` // token lifetime, default 1h
}

// AzureIoTHub authorises each device's messages as that device, the way IoT Hub's HTTPS device
// API takes them: the route's URL names the device, as
// https://<host>/devices/[SERIAL]/messages/events?api-version=2021-04-12 (or [IMEI], or a
// custom field holding the IoT Hub device id), so that each batch holds one device's messages,
// and its method is POST. Each request carries "Authorization: SharedAccessSignature
// sr=<host>/devices/<id>&sig=…&se=…" for the device the URL names, signed with the key in the
// device's key_field; tokens are cached per device and renewed when a fifth of their lifetime
// is left. A device without a key (or with one that is not base64) is not retried: its
// messages go to the dead-letter list at once with the reason, for replay once the key is set.
type AzureIoTHub struct {
	// The IoT hub's host name, e.g. myhub.azure-devices.net: the tokens' resource is
	// <host>/devices/<device id>.
	Host string `yaml:"host"`
	// The device metadata field holding each device's symmetric key (base64, as IoT Hub shows
	// it): custom1, custom2 or custom3.
	KeyField string `yaml:"key_field"`
	// Token lifetime, at least 1s; default 1h.
	TTL Duration `yaml:"ttl,omitempty"`
}

// Sign adds signatures over the exact bytes sent (after compression): any of these.
type Sign struct {
	// An HMAC of the body in a header (BeWhere's "hash-key": HMAC-SHA-512, hex).
	HMAC *HMACSign `yaml:"hmac,omitempty"`
	// SENSORO's X-ACCESS-ID, X-ACCESS-NONCE and X-ACCESS-SIGNATURE headers (AppID is the route's
	// app_id), and optionally its safe mode.
	Sensoro *SensoroSign `yaml:"sensoro,omitempty"`
	// Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature.
	Webhooks *WebhooksSign `yaml:"webhooks,omitempty"`
}

// HMACSign is a keyed hash of the body.
type HMACSign struct {
	Header    string `yaml:"header"`    // default hash-key
	Key       Secret `yaml:"key"`       // the shared secret (BeWhere's push spec: the API key)
	Algorithm string `yaml:"algorithm"` // sha512 (default) or sha256
	Encoding  string `yaml:"encoding"`  // hex (default) or base64
}

// SensoroSign is a SENSORO application's credentials.
type SensoroSign struct {
	AppSecret Secret `yaml:"app_secret"`
	// Safe mode: the body is encrypted with app_key into {"encryptData": ...} (AES-256-GCM, see
	// the README), then signed.
	SafeMode bool   `yaml:"safe_mode"`
	AppKey   Secret `yaml:"app_key,omitempty"`
}

// WebhooksSign holds the signing secrets (whsec_…); with several, each request carries a
// signature by each, so a receiver can rotate.
type WebhooksSign struct {
	Secrets []Secret `yaml:"secrets"`
}

// TLS configures HTTPS to a route's endpoint. The system's roots are trusted, and TLS 1.2 is
// the least version spoken.
type TLS struct {
	// PEM file of CA certificates trusted in addition to the system's.
	CAFile string `yaml:"ca_file,omitempty"`
	// Client certificate and key (PEM) for mutual TLS.
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
	// Least TLS version: "1.2" (the default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// Accept any certificate. Only for tests: the relay logs a warning at start.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Auth styles of OAuth2.
const (
	AuthStyleHeader = "header"
	AuthStyleBody   = "body"
)

func (r *Route) resolveAuth() {
	if o := r.Auth.OAuth2; o != nil && o.AuthStyle == "" {
		o.AuthStyle = AuthStyleHeader
	}
	if a := r.Auth.AWSSigV4; a != nil && a.Service == "" {
		a.Service = "execute-api"
		if a.S3 {
			a.Service = "s3"
		}
	}
	if b := r.Auth.AzureBlob; b != nil && b.TTL == 0 && b.AccountKey.IsSet() {
		b.TTL = Duration(3600e9)
	}
	if e := r.Auth.AzureEventHubs; e != nil && e.TTL == 0 {
		e.TTL = Duration(3600e9)
	}
	if h := r.Auth.AzureIoTHub; h != nil && h.TTL == 0 {
		h.TTL = Duration(3600e9)
	}
	if h := r.Sign.HMAC; h != nil {
		if h.Header == "" {
			h.Header = "hash-key"
		}
		if h.Algorithm == "" {
			h.Algorithm = "sha512"
		}
		if h.Encoding == "" {
			h.Encoding = "hex"
		}
	}
	if r.TLS.MinVersion == "" {
		r.TLS.MinVersion = "1.2"
	}
}

// validateAuth checks what the file shows of the auth, sign and tls sections: one scheme at most,
// the fields only the config knows (a method the scheme needs, the app_id SENSORO signs with), and
// the names of the config's own choices. The values a scheme takes (required keys, their form,
// TTLs) are checked once, by its constructor in internal/auth, when internal/route compiles the
// route (with the secrets read).
func (r *Route) validateAuth(p *problems, path string) {
	a := &r.Auth
	n := 0
	for _, set := range []bool{a.Basic != nil, a.OAuth2 != nil, a.AWSSigV4 != nil, a.AzureBlob != nil, a.AzureEventHubs != nil, a.AzureIoTHub != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		p.add(path+".auth", "set at most one of basic, oauth2, aws_sigv4, azure_blob, azure_event_hubs, azure_iot_hub")
	}
	need := func(field string, ok bool) {
		if !ok {
			p.add(path+"."+field, "required")
		}
	}
	if b := a.Basic; b != nil {
		need("auth.basic.username", b.Username != "")
		need("auth.basic.password", b.Password.IsSet())
	}
	if o := a.OAuth2; o != nil {
		if u, err := url.Parse(o.TokenURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			p.add(path+".auth.oauth2.token_url", "must be an http:// or https:// URL, got %q", o.TokenURL)
		}
		if o.AuthStyle != AuthStyleHeader && o.AuthStyle != AuthStyleBody {
			p.add(path+".auth.oauth2.auth_style", "must be header or body, got %q", o.AuthStyle)
		}
	}
	if s := a.AWSSigV4; s != nil {
		if s.S3 && r.Method != "PUT" {
			p.add(path+".method", "must be PUT with auth.aws_sigv4.s3 (objects are PUT), got %s", r.Method)
		}
	}
	if b := a.AzureBlob; b != nil {
		if !b.SAS.IsSet() && (b.Account == "" || !b.AccountKey.IsSet()) {
			p.add(path+".auth.azure_blob", "set sas, or account and account_key")
		}
		if r.Method != "PUT" {
			p.add(path+".method", "must be PUT with auth.azure_blob (blobs are PUT), got %s", r.Method)
		}
		if b.SAS.IsSet() && !b.AccountKey.IsSet() && b.TTL != 0 {
			p.add(path+".auth.azure_blob.ttl", "applies to a generated SAS only (account_key), not a given sas")
		}
	}
	if a.AzureIoTHub != nil {
		if r.Method != "POST" {
			p.add(path+".method", "must be POST with auth.azure_iot_hub (device messages are POSTed), got %s", r.Method)
		}
		if !strings.HasPrefix(r.URL, "https://") {
			p.add(path+".url", "must be https:// with auth.azure_iot_hub (IoT Hub speaks HTTPS only, and the token is the device's credential)")
		}
		if !urlNamesDevice(r.URL) {
			p.add(path+".url", "must name the device with auth.azure_iot_hub, so that a batch holds one device's messages: "+
				"/devices/[SERIAL]/ (or [IMEI], [ICCID], [CUSTOM1]..[CUSTOM3]) in its path, e.g. "+
				"https://<host>/devices/[SERIAL]/messages/events?api-version=2021-04-12")
		}
	}
	if h := r.Sign.HMAC; h != nil {
		need("sign.hmac.key", h.Key.IsSet())
		if h.Algorithm != "sha512" && h.Algorithm != "sha256" {
			p.add(path+".sign.hmac.algorithm", "must be sha512 or sha256, got %q", h.Algorithm)
		}
		if h.Encoding != "hex" && h.Encoding != "base64" {
			p.add(path+".sign.hmac.encoding", "must be hex or base64, got %q", h.Encoding)
		}
		if !validHeaderName(h.Header) {
			p.add(path+".sign.hmac.header", "must be an HTTP header name, got %q", h.Header)
		}
	}
	if s := r.Sign.Sensoro; s != nil {
		need("app_id", r.AppID != "")
		if s.SafeMode {
			need("sign.sensoro.app_key", s.AppKey.IsSet())
		}
		if r.Compression != CompressionNone {
			// SENSORO's receivers verify the signature over the JSON body they parsed (and the
			// safe-mode wrapper cannot carry a Content-Encoding at all).
			p.add(path+".compression", "must be none with sign.sensoro: SENSORO receivers verify the signature over the uncompressed JSON, got %s", r.Compression)
		}
	}
	if w := r.Sign.Webhooks; w != nil {
		need("sign.webhooks.secrets", len(w.Secrets) > 0)
	}
	t := &r.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.add(path+".tls", "set cert_file and key_file together")
	}
	if t.MinVersion != "1.2" && t.MinVersion != "1.3" {
		p.add(path+".tls.min_version", "must be 1.2 or 1.3, got %q", t.MinVersion)
	}
}

// urlNamesDevice reports whether the path of the route URL template u has a segment "devices"
// followed by a segment that is one dynamic field alone ("[SERIAL]"): the device's lane, and
// so each batch, is then one device's (per value of the field).
func urlNamesDevice(u string) bool {
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return false
	}
	rest, _, _ = strings.Cut(rest, "#")
	rest, _, _ = strings.Cut(rest, "?")
	segs := strings.Split(rest, "/")
	for i := 1; i+1 < len(segs); i++ { // segs[0] is the host
		if segs[i] == "devices" {
			name, ok := strings.CutPrefix(segs[i+1], "[")
			name, ok2 := strings.CutSuffix(name, "]")
			return ok && ok2 && slices.Contains(fields.Names(), name)
		}
	}
	return false
}

// validHeaderName reports whether s is an HTTP field name (an RFC 9110 token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// Secrets returns every secret of the route with its config path, for checking at start that
// each can be read.
func (r *Route) Secrets(path string) map[string]Secret {
	out := map[string]Secret{}
	for p, s := range r.SecretFields(path) {
		out[p] = *s
	}
	return out
}

// SecretFields returns a pointer to every set secret of the route, by its config path: what a
// caller may read or replace in place (the API keeps a stored secret that a write sends back
// redacted).
func (r *Route) SecretFields(path string) map[string]*Secret {
	out := map[string]*Secret{}
	add := func(p string, s *Secret) {
		if s.IsSet() {
			out[path+"."+p] = s
		}
	}
	if b := r.Auth.Basic; b != nil {
		add("auth.basic.password", &b.Password)
	}
	if o := r.Auth.OAuth2; o != nil {
		add("auth.oauth2.client_secret", &o.ClientSecret)
	}
	if s := r.Auth.AWSSigV4; s != nil {
		add("auth.aws_sigv4.secret_access_key", &s.SecretAccessKey)
		add("auth.aws_sigv4.session_token", &s.SessionToken)
	}
	if b := r.Auth.AzureBlob; b != nil {
		add("auth.azure_blob.sas", &b.SAS)
		add("auth.azure_blob.account_key", &b.AccountKey)
	}
	if e := r.Auth.AzureEventHubs; e != nil {
		add("auth.azure_event_hubs.key", &e.Key)
	}
	if h := r.Sign.HMAC; h != nil {
		add("sign.hmac.key", &h.Key)
	}
	if s := r.Sign.Sensoro; s != nil {
		add("sign.sensoro.app_secret", &s.AppSecret)
		add("sign.sensoro.app_key", &s.AppKey)
	}
	if w := r.Sign.Webhooks; w != nil {
		for i := range w.Secrets {
			add(fmt.Sprintf("sign.webhooks.secrets[%d]", i), &w.Secrets[i])
		}
	}
	return out
}

// IsHostSource reports whether s is read from the relay host ({env:} or {file:}) rather than
// given as a value.
func (s Secret) IsHostSource() bool {
	v := string(s)
	return strings.HasPrefix(v, secretEnv) || strings.HasPrefix(v, secretFile)
}
