package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// AzureStorageVersion is the Azure Storage service version that AzureBlob sends as x-ms-version
// and signs generated SAS tokens with (sv). Its service SAS string-to-sign is the one documented
// for versions 2020-12-06 and later ("Create a service SAS", Microsoft Learn).
const AzureStorageVersion = "2022-11-02"

// DefaultSASTTL is the lifetime of generated SAS tokens unless told otherwise. They are renewed
// when less than a fifth of it remains.
const DefaultSASTTL = time.Hour

// AzureBlobOptions configures Azure Blob Storage writes: set SAS, or Account and AccountKey.
type AzureBlobOptions struct {
	// SAS is a shared access signature token granting create and write on the container (the
	// query string of a SAS URL, with or without its leading '?'). It is appended to the query
	// of every request as given. Never printed.
	SAS string
	// Account is the storage account name; with AccountKey, service SAS tokens for the
	// container named in the URL are generated and renewed.
	Account string
	// AccountKey is the storage account's key, base64 as shown by Azure. Never printed.
	AccountKey string
	// TTL is the lifetime of generated tokens; DefaultSASTTL if zero, at least a minute.
	TTL time.Duration
	// Now is the clock that dates generated tokens; time.Now if nil.
	Now func() time.Time
}

// String describes o with its SAS and account key redacted.
func (o AzureBlobOptions) String() string {
	return fmt.Sprintf("azure_blob{sas=%s account=%s account_key=%s ttl=%s}",
		redactedIfSet(o.SAS), o.Account, redactedIfSet(o.AccountKey), o.TTL)
}

// GoString is String, so that %#v does not print the secrets either.
func (o AzureBlobOptions) GoString() string { return o.String() }

// LogValue describes o for log/slog with its SAS and account key redacted.
func (o AzureBlobOptions) LogValue() slog.Value {
	return slog.GroupValue(slog.String("sas", redactedIfSet(o.SAS)), slog.String("account", o.Account),
		slog.String("account_key", redactedIfSet(o.AccountKey)), slog.Duration("ttl", o.TTL))
}

// AzureBlob stores every batch as a block blob (the HTTPS forwarding spec): it sets the method to PUT, appends
// ObjectName(r.Batch)+".json" to the URL's path and the SAS token to its query, and sets
// x-ms-blob-type: BlockBlob and x-ms-version. The URL is the container's (or a folder in it),
// e.g. https://account.blob.core.windows.net/container/prefix, and must be the route's URL on
// every attempt, not the URL of an earlier one: every attempt of a batch then PUTs the same
// blob, and a retry overwrites it rather than adding a duplicate.
//
// A generated token is a service SAS for the container (sr=c, sp=cw: create and write blobs),
// without start time (valid at once, whatever the clock skew), for the container named by the
// URL's first path segment — the second with a path-style URL (Azurite:
// http://127.0.0.1:10000/account/container) — and is renewed when less than a fifth of its
// lifetime remains.
//
// An AzureBlob is safe for concurrent use.
type AzureBlob struct {
	sas     string // given token without '?'; "" when generated
	account string
	key     []byte
	ttl     time.Duration
	now     func() time.Time
	tok     atomic.Pointer[blobSAS]
	desc    string
}

var _ Signer = (*AzureBlob)(nil)

type blobSAS struct {
	container string
	query     string
	renew     time.Time
}

// NewAzureBlob returns an Azure Blob Storage signer for o.
func NewAzureBlob(o AzureBlobOptions) (*AzureBlob, error) {
	if o.TTL == 0 {
		o.TTL = DefaultSASTTL
	}
	var errs []error
	var key []byte
	o.SAS = strings.TrimPrefix(o.SAS, "?")
	switch {
	case o.SAS != "" && (o.Account != "" || o.AccountKey != ""):
		errs = append(errs, errors.New("azure_blob: set sas, or account and account_key, not both"))
	case o.SAS != "":
		// The token is confidential: say what is wrong, not what it is.
		if q, err := url.ParseQuery(o.SAS); err != nil {
			errs = append(errs, errors.New("azure_blob.sas: not a URL query string"))
		} else if q.Get("sig") == "" {
			errs = append(errs, errors.New("azure_blob.sas: no sig parameter"))
		}
		if !sasChars(o.SAS) {
			errs = append(errs, errors.New("azure_blob.sas: has characters other than printable ASCII, or space or '#'"))
		}
	case o.Account == "" && o.AccountKey == "":
		errs = append(errs, errors.New("azure_blob: set sas, or account and account_key"))
	default:
		if !storageAccountName(o.Account) {
			errs = append(errs, fmt.Errorf("azure_blob.account: %q is not a storage account name (3-24 lower-case letters and digits)", o.Account))
		}
		var err error
		if key, err = base64.StdEncoding.DecodeString(o.AccountKey); err != nil || len(key) == 0 {
			errs = append(errs, errors.New("azure_blob.account_key: not a base64 key"))
		}
	}
	if o.TTL < time.Minute {
		errs = append(errs, fmt.Errorf("azure_blob.ttl: must be at least 1m, got %s", o.TTL))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &AzureBlob{sas: o.SAS, account: o.Account, key: key, ttl: o.TTL, now: o.Now, desc: o.String()}, nil
}

// Sign sets r's method, URL and headers as described on AzureBlob.
func (s *AzureBlob) Sign(_ context.Context, r *Request) error {
	u, err := parseRouteURL(r.URL)
	if err != nil {
		return fmt.Errorf("azure_blob: %w", err)
	}
	if err := checkBatch(r.Batch); err != nil {
		return err
	}
	sas := s.sas
	if sas == "" {
		container := s.container(u)
		if container == "" {
			return errors.New("azure_blob: request URL names no container")
		}
		sas = s.token(container, s.now())
	}
	setRawPath(u, AppendObjectName(appendSlash(appendPath(nil, rawPath(u), true)), r.Batch, ".json"))
	if u.RawQuery == "" {
		u.RawQuery = sas
	} else {
		u.RawQuery += "&" + sas
	}
	r.Method = http.MethodPut
	r.URL = u.String()
	r.SetHeader("x-ms-blob-type", "BlockBlob")
	r.SetHeader("x-ms-version", AzureStorageVersion)
	return nil
}

// String describes s without its secrets.
func (s *AzureBlob) String() string { return s.desc }

// container returns the container named by u: its first path segment, or its second when u is
// path-style (the first is the account and the host does not start with it).
func (s *AzureBlob) container(u *url.URL) string {
	first, rest, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if first == s.account && !strings.HasPrefix(u.Host, s.account+".") {
		first, _, _ = strings.Cut(rest, "/")
	}
	return first
}

// token returns a SAS query for container valid at now, generating one when the cached one is
// for another container or due for renewal.
func (s *AzureBlob) token(container string, now time.Time) string {
	if t := s.tok.Load(); t != nil && t.container == container && now.Before(t.renew) {
		return t.query
	}
	expiry := now.Add(s.ttl).UTC().Truncate(time.Second)
	t := &blobSAS{
		container: container,
		query:     blobContainerSAS(s.account, s.key, container, "cw", expiry),
		renew:     expiry.Add(-s.ttl / 5),
	}
	s.tok.Store(t)
	return t.query
}

// blobContainerSAS returns the query string of a service SAS for a Blob Storage container
// (sr=c), version AzureStorageVersion, with permissions perms (in the documented order, e.g.
// "cw"), expiring at expiry, without start time, IP range, protocol or stored policy.
//
// The string-to-sign is that of versions 2020-12-06 and later, sixteen fields joined by '\n':
// signedPermissions, signedStart, signedExpiry, canonicalizedResource ("/blob/account/container"),
// signedIdentifier, signedIP, signedProtocol, signedVersion, signedResource, signedSnapshotTime,
// signedEncryptionScope, rscc, rscd, rsce, rscl, rsct; sig is base64(HMAC-SHA256(key, it)).
func blobContainerSAS(account string, key []byte, container, perms string, expiry time.Time) string {
	se := expiry.UTC().Format("2006-01-02T15:04:05Z")
	stringToSign := strings.Join([]string{
		perms,                                // signedPermissions
		"",                                   // signedStart
		se,                                   // signedExpiry
		"/blob/" + account + "/" + container, // canonicalizedResource
		"",                                   // signedIdentifier
		"",                                   // signedIP
		"",                                   // signedProtocol
		AzureStorageVersion,                  // signedVersion
		"c",                                  // signedResource
		"",                                   // signedSnapshotTime
		"",                                   // signedEncryptionScope
		"", "", "", "", "",                   // rscc, rscd, rsce, rscl, rsct
	}, "\n")
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(stringToSign))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return "sv=" + AzureStorageVersion + "&sr=c&sp=" + perms + "&se=" + url.QueryEscape(se) + "&sig=" + url.QueryEscape(sig)
}

// sasChars reports whether a given SAS can be appended to a URL's query as it is: printable
// ASCII without space or '#'.
func sasChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// storageAccountName reports whether s is a valid storage account name: 3 to 24 lower-case
// letters and digits.
func storageAccountName(s string) bool {
	if len(s) < 3 || len(s) > 24 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// AzureEventHubsOptions configures Event Hubs (and Service Bus) SAS authorisation.
type AzureEventHubsOptions struct {
	// KeyName is the shared access policy's name, e.g. "RootManageSharedAccessKey". Required.
	KeyName string
	// Key is the policy's key, used as given (its text, not base64-decoded). Required. Never
	// printed.
	Key string
	// Resource is the URI the tokens are for (sr), e.g.
	// "https://namespace.servicebus.windows.net/hub"; a token is valid for that URI and every
	// URI under it. Default: each request's URL without its query.
	Resource string
	// TTL is the tokens' lifetime; DefaultSASTTL if zero, at least a minute.
	TTL time.Duration
	// Now is the clock that dates tokens; time.Now if nil.
	Now func() time.Time
}

// String describes o with its key redacted.
func (o AzureEventHubsOptions) String() string {
	return fmt.Sprintf("azure_event_hubs{key_name=%s key=%s resource=%s ttl=%s}", o.KeyName, redacted, o.Resource, o.TTL)
}

// GoString is String, so that %#v does not print the key either.
func (o AzureEventHubsOptions) GoString() string { return o.String() }

// LogValue describes o for log/slog with its key redacted.
func (o AzureEventHubsOptions) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_name", o.KeyName), slog.String("key", redacted),
		slog.String("resource", o.Resource), slog.Duration("ttl", o.TTL))
}

// AzureEventHubs sets "Authorization: SharedAccessSignature sr=…&sig=…&se=…&skn=…" (see
// EventHubsSAS) on every attempt and its method to POST (the HTTPS forwarding spec). The token is cached and
// renewed when less than a fifth of its lifetime remains, when its resource changes (the default
// resource follows the URL), and after a 401 (Unauthorized).
//
// An AzureEventHubs is safe for concurrent use.
type AzureEventHubs struct {
	keyName  string
	key      string
	resource string
	ttl      time.Duration
	now      func() time.Time
	tok      atomic.Pointer[ehToken]
	desc     string
}

var (
	_ Signer    = (*AzureEventHubs)(nil)
	_ Refresher = (*AzureEventHubs)(nil)
)

type ehToken struct {
	resource string
	header   string
	renew    time.Time
}

// NewAzureEventHubs returns an Event Hubs SAS signer for o.
func NewAzureEventHubs(o AzureEventHubsOptions) (*AzureEventHubs, error) {
	if o.TTL == 0 {
		o.TTL = DefaultSASTTL
	}
	var errs []error
	if o.KeyName == "" {
		errs = append(errs, errors.New("azure_event_hubs.key_name: required"))
	} else if hasCTL(o.KeyName) {
		errs = append(errs, errors.New("azure_event_hubs.key_name: must not contain control characters"))
	}
	if o.Key == "" {
		errs = append(errs, errors.New("azure_event_hubs.key: required"))
	}
	if hasCTL(o.Resource) {
		errs = append(errs, errors.New("azure_event_hubs.resource: must not contain control characters"))
	}
	if o.TTL < time.Minute {
		errs = append(errs, fmt.Errorf("azure_event_hubs.ttl: must be at least 1m, got %s", o.TTL))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &AzureEventHubs{keyName: o.KeyName, key: o.Key, resource: o.Resource, ttl: o.TTL, now: o.Now, desc: o.String()}, nil
}

// Sign sets r's Authorization header and method.
func (s *AzureEventHubs) Sign(_ context.Context, r *Request) error {
	u, err := parseRouteURL(r.URL)
	if err != nil {
		return fmt.Errorf("azure_event_hubs: %w", err)
	}
	resource := s.resource
	if resource == "" {
		resource = u.Scheme + "://" + u.Host + u.EscapedPath()
	}
	now := s.now()
	t := s.tok.Load()
	if t == nil || t.resource != resource || !now.Before(t.renew) {
		expiry := now.Add(s.ttl).Unix()
		t = &ehToken{
			resource: resource,
			header:   EventHubsSAS(resource, s.keyName, s.key, expiry),
			renew:    time.Unix(expiry, 0).Add(-s.ttl / 5),
		}
		s.tok.Store(t)
	}
	r.Method = http.MethodPost
	r.SetHeader("Authorization", t.header)
	return nil
}

// Unauthorized drops the cached token: the next attempt gets a new one.
func (s *AzureEventHubs) Unauthorized(*Request) { s.tok.Store(nil) }

// String describes s without its key.
func (s *AzureEventHubs) String() string { return s.desc }

// EventHubsSAS returns the Authorization header value for an Event Hubs or Service Bus
// resource, signed with the shared access policy keyName's key and valid until expiry (Unix
// seconds):
//
//	SharedAccessSignature sr=<sr>&sig=<sig>&se=<expiry>&skn=<keyName>
//
// where sr is the resource URL-encoded and lower-cased (as Azure's SDKs do: names are
// case-insensitive) and sig the URL-encoded base64 of HMAC-SHA256(key, sr + "\n" + expiry).
func EventHubsSAS(resource, keyName, key string, expiry int64) string {
	sr := strings.ToLower(url.QueryEscape(resource))
	se := strconv.FormatInt(expiry, 10)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se + "&skn=" + url.QueryEscape(keyName)
}
