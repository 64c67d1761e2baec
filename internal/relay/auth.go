package relay

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/auth"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

// routeAuth builds the signer chain of a route from its auth and sign sections, reading its
// secrets: a body rewrite first (SENSORO safe mode), then the auth scheme (which may choose the
// URL: S3, Azure Blob), then the signatures over the bytes exactly as sent. nil when the route
// has neither. tokens is the HTTP client for OAuth2 token requests.
func routeAuth(rc *config.Route, path string, tokens *http.Client) (auth.Chain, error) {
	secrets := map[string]string{}
	for p, s := range rc.Secrets(path) {
		v, err := s.Reveal()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		secrets[p] = v
	}
	secret := func(field string) string { return secrets[path+"."+field] }
	var chain auth.Chain
	add := func(field string, s auth.Signer, err error) error {
		if err != nil {
			return fmt.Errorf("%s.%s: %w", path, field, err)
		}
		chain = append(chain, s)
		return nil
	}
	var err error
	if s := rc.Sign.Sensoro; s != nil && s.SafeMode {
		sm, e := auth.NewSensoroSafeMode(auth.SensoroSafeModeOptions{AppKey: []byte(secret("sign.sensoro.app_key"))})
		err = add("sign.sensoro", sm, e)
	}
	a := &rc.Auth
	switch {
	case err != nil:
	case a.Basic != nil:
		s, e := auth.NewBasic(auth.BasicOptions{Username: a.Basic.Username, Password: secret("auth.basic.password")})
		err = add("auth.basic", s, e)
	case a.OAuth2 != nil:
		o := a.OAuth2
		s, e := auth.NewOAuth2(auth.OAuth2Options{TokenURL: o.TokenURL, ClientID: o.ClientID,
			ClientSecret: secret("auth.oauth2.client_secret"), Scopes: o.Scopes, AuthStyle: o.AuthStyle, HTTPClient: tokens})
		err = add("auth.oauth2", s, e)
	case a.AWSSigV4 != nil:
		o := a.AWSSigV4
		s, e := auth.NewAWSSigV4(auth.AWSSigV4Options{Region: o.Region, Service: o.Service, AccessKeyID: o.AccessKeyID,
			SecretAccessKey: secret("auth.aws_sigv4.secret_access_key"), SessionToken: secret("auth.aws_sigv4.session_token"), S3: o.S3})
		err = add("auth.aws_sigv4", s, e)
	case a.AzureBlob != nil:
		s, e := auth.NewAzureBlob(auth.AzureBlobOptions{SAS: secret("auth.azure_blob.sas"), Account: a.AzureBlob.Account,
			AccountKey: secret("auth.azure_blob.account_key"), TTL: time.Duration(a.AzureBlob.TTL)})
		err = add("auth.azure_blob", s, e)
	case a.AzureEventHubs != nil:
		o := a.AzureEventHubs
		s, e := auth.NewAzureEventHubs(auth.AzureEventHubsOptions{KeyName: o.KeyName, Key: secret("auth.azure_event_hubs.key"),
			TTL: time.Duration(o.TTL)})
		err = add("auth.azure_event_hubs", s, e)
	}
	if h := rc.Sign.HMAC; h != nil && err == nil {
		s, e := auth.NewHMAC(auth.HMACOptions{Key: []byte(secret("sign.hmac.key")), Hash: h.Algorithm, Encoding: h.Encoding, Header: h.Header})
		err = add("sign.hmac", s, e)
	}
	if s := rc.Sign.Sensoro; s != nil && err == nil {
		sg, e := auth.NewSensoro(auth.SensoroOptions{AppID: rc.AppID, AppSecret: []byte(secret("sign.sensoro.app_secret"))})
		err = add("sign.sensoro", sg, e)
	}
	if w := rc.Sign.Webhooks; w != nil && err == nil {
		keys := make([]string, len(w.Secrets))
		for i := range w.Secrets {
			keys[i] = secret(fmt.Sprintf("sign.webhooks.secrets[%d]", i))
		}
		s, e := auth.NewWebhook(auth.WebhookOptions{Secrets: keys})
		err = add("sign.webhooks", s, e)
	}
	if err != nil {
		return nil, err
	}
	return chain, nil
}

// clients holds the relay's delivery clients: one per distinct TLS setting of the routes.
type clients struct {
	base   deliver.Options
	byTLS  map[config.TLS]*deliver.Client
	tokens map[config.TLS]*http.Client
}

// forTLS returns the delivery client and the token-request client for a route's TLS settings,
// creating them on first use, and whether a warning about them is due.
func (c *clients) forTLS(t config.TLS) (*deliver.Client, *http.Client, string, error) {
	if cl := c.byTLS[t]; cl != nil {
		return cl, c.tokens[t], "", nil
	}
	cfg, err := deliver.NewTLSConfig(deliver.TLSOptions{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		MinVersion: t.MinVersion, InsecureSkipVerify: t.InsecureSkipVerify})
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

func (c *clients) close() {
	for t, cl := range c.byTLS {
		cl.Close()
		c.tokens[t].CloseIdleConnections()
	}
}

// CheckRoutes builds what the relay would build for each enabled route's TLS, auth and sign
// sections, reading every secret and certificate file, without starting anything: the checks
// that config validation cannot make because they depend on the machine.
func CheckRoutes(cfg *config.Config) error {
	cfg.Resolve()
	var errs []error
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		if !rc.IsEnabled() {
			continue
		}
		path := fmt.Sprintf("routes[%d]", i)
		t := rc.TLS
		if _, err := deliver.NewTLSConfig(deliver.TLSOptions{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
			MinVersion: t.MinVersion, InsecureSkipVerify: t.InsecureSkipVerify}); err != nil {
			errs = append(errs, fmt.Errorf("%s.tls: %w", path, err))
		}
		if _, err := routeAuth(rc, path, http.DefaultClient); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
