package route

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/auth"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

// routeAuth builds the signer chain of a route from its auth and sign sections, reading its
// secrets: a body rewrite first (SENSORO safe mode), then the auth scheme (which may choose the
// URL: S3, Azure Blob), then the signatures over the bytes exactly as sent. nil when the route
// has neither. tokens is the HTTP client for OAuth2 token requests.
//
// Every problem is reported, each as its own error "routes[i].dotted.path: message" joined with
// [errors.Join]: first every secret that cannot be read (then nothing is built), else every
// scheme that refuses its settings. A section for which skip (given "auth.basic", "sign.hmac")
// reports true is not built: its problems were reported already. No message shows a secret's
// value.
func routeAuth(rc *config.Route, path string, tokens *http.Client, skip func(section string) bool) (auth.Chain, error) {
	secrets := map[string]string{}
	var errs []error
	all := rc.Secrets(path)
	for _, p := range slices.Sorted(maps.Keys(all)) {
		v, err := all[p].Reveal()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		secrets[p] = v
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	secret := func(field string) string { return secrets[path+"."+field] }
	var chain auth.Chain
	add := func(field string, s auth.Signer, err error) {
		if skip(field) {
			return
		}
		if err != nil {
			errs = append(errs, schemeErrors(path, field, err)...)
			return
		}
		chain = append(chain, s)
	}
	if s := rc.Sign.Sensoro; s != nil && s.SafeMode {
		sm, e := auth.NewSensoroSafeMode(auth.SensoroSafeModeOptions{AppKey: []byte(secret("sign.sensoro.app_key"))})
		add("sign.sensoro", sm, e)
	}
	a := &rc.Auth
	switch {
	case a.Basic != nil:
		s, e := auth.NewBasic(auth.BasicOptions{Username: a.Basic.Username, Password: secret("auth.basic.password")})
		add("auth.basic", s, e)
	case a.OAuth2 != nil:
		o := a.OAuth2
		s, e := auth.NewOAuth2(auth.OAuth2Options{TokenURL: o.TokenURL, ClientID: o.ClientID,
			ClientSecret: secret("auth.oauth2.client_secret"), Scopes: o.Scopes, AuthStyle: o.AuthStyle, HTTPClient: tokens})
		add("auth.oauth2", s, e)
	case a.AWSSigV4 != nil:
		o := a.AWSSigV4
		s, e := auth.NewAWSSigV4(auth.AWSSigV4Options{Region: o.Region, Service: o.Service, AccessKeyID: o.AccessKeyID,
			SecretAccessKey: secret("auth.aws_sigv4.secret_access_key"), SessionToken: secret("auth.aws_sigv4.session_token"), S3: o.S3})
		add("auth.aws_sigv4", s, e)
	case a.AzureBlob != nil:
		s, e := auth.NewAzureBlob(auth.AzureBlobOptions{SAS: secret("auth.azure_blob.sas"), Account: a.AzureBlob.Account,
			AccountKey: secret("auth.azure_blob.account_key"), TTL: time.Duration(a.AzureBlob.TTL)})
		add("auth.azure_blob", s, e)
	case a.AzureEventHubs != nil:
		o := a.AzureEventHubs
		s, e := auth.NewAzureEventHubs(auth.AzureEventHubsOptions{KeyName: o.KeyName, Key: secret("auth.azure_event_hubs.key"),
			TTL: time.Duration(o.TTL)})
		add("auth.azure_event_hubs", s, e)
	case a.AzureIoTHub != nil:
		o := a.AzureIoTHub
		s, e := auth.NewAzureIoTHub(auth.AzureIoTHubOptions{Host: o.Host, KeyField: o.KeyField, TTL: time.Duration(o.TTL)})
		add("auth.azure_iot_hub", s, e)
	}
	if h := rc.Sign.HMAC; h != nil {
		s, e := auth.NewHMAC(auth.HMACOptions{Key: []byte(secret("sign.hmac.key")), Hash: h.Algorithm, Encoding: h.Encoding, Header: h.Header})
		add("sign.hmac", s, e)
	}
	if s := rc.Sign.Sensoro; s != nil {
		sg, e := auth.NewSensoro(auth.SensoroOptions{AppID: rc.AppID, AppSecret: []byte(secret("sign.sensoro.app_secret"))})
		add("sign.sensoro", sg, e)
	}
	if w := rc.Sign.Webhooks; w != nil {
		keys := make([]string, len(w.Secrets))
		for i := range w.Secrets {
			keys[i] = secret(fmt.Sprintf("sign.webhooks.secrets[%d]", i))
		}
		s, e := auth.NewWebhook(auth.WebhookOptions{Secrets: keys})
		add("sign.webhooks", s, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return chain, nil
}

// schemeErrors places the errors of a scheme's constructor, written "basic.password: ...", under
// the route's path: "routes[0].auth.basic.password: ...". field is the scheme's section
// ("auth.basic"); an error not named after the scheme goes under the section itself.
func schemeErrors(path, field string, err error) []error {
	scheme := field[strings.IndexByte(field, '.')+1:]
	var out []error
	for _, e := range flatten(err) {
		msg := e.Error()
		name := msg[:strings.IndexAny(msg+":", ".:")]
		if name == scheme || name+"s" == scheme { // "webhook.secrets[1]" under sign.webhooks
			out = append(out, &placedError{msg: path + "." + field + msg[len(name):], err: e})
		} else {
			out = append(out, &placedError{msg: path + "." + field + ": " + msg, err: e})
		}
	}
	return out
}

// placedError is an error shown under another path; errors.Is and As still see it.
type placedError struct {
	msg string
	err error
}

func (e *placedError) Error() string { return e.msg }
func (e *placedError) Unwrap() error { return e.err }

// flatten lists the errors joined in err (recursively), or err itself.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// Clients holds the delivery clients of the routes: one per distinct TLS setting, and its client
// for OAuth2 token requests. Safe for concurrent use; Close it once, after its routes stopped.
type Clients struct {
	mu     sync.Mutex
	base   deliver.Options
	byTLS  map[config.TLS]*deliver.Client
	tokens map[config.TLS]*http.Client
}

// NewClients returns an empty set of clients made with base (its TLS field aside).
func NewClients(base deliver.Options) *Clients {
	return &Clients{base: base, byTLS: map[config.TLS]*deliver.Client{}, tokens: map[config.TLS]*http.Client{}}
}

// forTLS returns the delivery client and the token-request client for a route's TLS settings,
// creating them on first use, and whether a warning about them is due.
func (c *Clients) forTLS(t config.TLS) (*deliver.Client, *http.Client, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.byTLS[t]; cl != nil {
		return cl, c.tokens[t], "", nil
	}
	cfg, err := tlsConfig(t)
	if err != nil {
		return nil, nil, "", err
	}
	warn, _ := deliver.TLSWarning(cfg)
	o := c.base
	o.TLS = cfg
	cl, tok := deliver.NewClient(o), deliver.NewHTTPClient(o)
	c.byTLS[t], c.tokens[t] = cl, tok
	return cl, tok, warn, nil
}

// tlsConfig builds the TLS settings t ask for, reading their files.
func tlsConfig(t config.TLS) (*tls.Config, error) {
	return deliver.NewTLSConfig(deliver.TLSOptions{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		MinVersion: t.MinVersion, InsecureSkipVerify: t.InsecureSkipVerify})
}

// Close closes every client; the routes that use them must have stopped.
func (c *Clients) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, cl := range c.byTLS {
		cl.Close()
		c.tokens[t].CloseIdleConnections()
	}
}
