package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultIoTHubCache is how many devices' tokens an AzureIoTHub keeps unless told otherwise.
const DefaultIoTHubCache = 10000

// AzureIoTHubOptions configures per-device Azure IoT Hub authorisation.
type AzureIoTHubOptions struct {
	// Host is the IoT hub's host name, e.g. "myhub.azure-devices.net": a device's tokens are
	// for the resource <Host>/devices/<device id>. Required.
	Host string
	// KeyField names the device metadata field holding each device's symmetric key (base64,
	// as IoT Hub shows it): "custom1", "custom2" or "custom3". Required.
	KeyField string
	// TTL is the tokens' lifetime; DefaultSASTTL if zero, at least a second.
	TTL time.Duration
	// CacheSize bounds how many devices' tokens are kept; DefaultIoTHubCache if zero.
	CacheSize int
	// Now is the clock that dates tokens; time.Now if nil.
	Now func() time.Time
}

// String describes o (it holds no secret: the keys are the devices').
func (o AzureIoTHubOptions) String() string {
	return fmt.Sprintf("azure_iot_hub{host=%s key_field=%s ttl=%s}", o.Host, o.KeyField, o.TTL)
}

// LogValue describes o for log/slog.
func (o AzureIoTHubOptions) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", o.Host), slog.String("key_field", o.KeyField), slog.Duration("ttl", o.TTL))
}

// AzureIoTHub authorises each batch as its device, the way IoT Hub's HTTPS device API
// (POST https://<hub>/devices/<id>/messages/events) takes it: "Authorization:
// SharedAccessSignature sr=…&sig=…&se=…" (see IoTHubSAS) for the resource
// <Host>/devices/<id>, signed with that device's own key, read from its metadata's KeyField.
//
// The device id is the one the request URL names, the path segment after "devices" (the
// route's [SERIAL], [IMEI] … there), so that the token is always for the device the request is
// sent as. The attempt must carry one device's messages (Request.Device.ID set). Tokens are
// cached per device until a fifth of their lifetime is left (a changed key gets a new one at
// once); at most CacheSize devices' tokens are kept, and when that is reached an eighth of
// them, arbitrary ones, are dropped. A 401 drops the device's token.
//
// What no retry can fix fails with ErrPermanent: a batch of several devices, a URL naming no
// device, a device without a key (its KeyField empty) or with a key that is not base64. The
// batch is then dead-lettered at once, with that reason, for replay once it is fixed.
//
// An AzureIoTHub is safe for concurrent use.
type AzureIoTHub struct {
	host  string
	field int // index into Device.Custom
	name  string
	ttl   time.Duration
	size  int
	now   func() time.Time
	desc  string

	mu    sync.Mutex
	cache map[string]*iotHubToken // by device id as the URL names it
}

var (
	_ Signer    = (*AzureIoTHub)(nil)
	_ Refresher = (*AzureIoTHub)(nil)
)

type iotHubToken struct {
	key    string // the key it was signed with, base64 as read
	header string
	renew  time.Time
}

// NewAzureIoTHub returns a per-device IoT Hub SAS signer for o.
func NewAzureIoTHub(o AzureIoTHubOptions) (*AzureIoTHub, error) {
	if o.TTL == 0 {
		o.TTL = DefaultSASTTL
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultIoTHubCache
	}
	var errs []error
	if o.Host == "" {
		errs = append(errs, errors.New("azure_iot_hub.host: required"))
	} else if hasCTL(o.Host) || strings.ContainsAny(o.Host, "/?#@ ") {
		errs = append(errs, fmt.Errorf("azure_iot_hub.host: must be the hub's host name (e.g. myhub.azure-devices.net), got %q", o.Host))
	}
	field := -1
	switch o.KeyField {
	case "custom1":
		field = 0
	case "custom2":
		field = 1
	case "custom3":
		field = 2
	case "":
		errs = append(errs, errors.New("azure_iot_hub.key_field: required"))
	default:
		errs = append(errs, fmt.Errorf("azure_iot_hub.key_field: must be custom1, custom2 or custom3, got %q", o.KeyField))
	}
	if o.TTL < time.Second {
		errs = append(errs, fmt.Errorf("azure_iot_hub.ttl: must be at least 1s, got %s", o.TTL))
	}
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("azure_iot_hub.cache_size: must not be negative, got %d", o.CacheSize))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &AzureIoTHub{host: o.Host, field: field, name: o.KeyField, ttl: o.TTL, size: o.CacheSize, now: o.Now,
		desc: o.String(), cache: make(map[string]*iotHubToken)}, nil
}

// Sign sets r's Authorization header to the token of the device r is for.
func (s *AzureIoTHub) Sign(_ context.Context, r *Request) error {
	if r.Device.ID == "" {
		return fmt.Errorf("%w: azure_iot_hub: the batch holds several devices' messages; the route's URL must name the device (/devices/[SERIAL]/…)", ErrPermanent)
	}
	id, err := urlDevice(r.URL)
	if err != nil {
		return fmt.Errorf("%w: azure_iot_hub: device %q: %w", ErrPermanent, r.Device.ID, err)
	}
	key := r.Device.Custom[s.field]
	if key == "" {
		return fmt.Errorf("%w: azure_iot_hub: device %q has no key (its %s is empty)", ErrPermanent, r.Device.ID, s.name)
	}
	header, err := s.token(id, key, s.now())
	if err != nil {
		return fmt.Errorf("%w: azure_iot_hub: device %q: %w", ErrPermanent, r.Device.ID, err)
	}
	r.SetHeader("Authorization", header)
	return nil
}

// Unauthorized drops the token of the device r was for (every token if r is nil): the next
// attempt signs a new one, with the device's key as it is then.
func (s *AzureIoTHub) Unauthorized(r *Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r == nil {
		clear(s.cache)
		return
	}
	if id, err := urlDevice(r.URL); err == nil {
		if t := s.cache[id]; t != nil && t.header == r.HeaderValue("Authorization") {
			delete(s.cache, id)
		}
	}
}

// String describes s.
func (s *AzureIoTHub) String() string { return s.desc }

// token returns the Authorization value for device id with key at now: the cached one, or a new
// one when there is none, it was signed with another key, or it is due for renewal.
func (s *AzureIoTHub) token(id, key string, now time.Time) (string, error) {
	s.mu.Lock()
	t := s.cache[id]
	s.mu.Unlock()
	if t != nil && t.key == key && now.Before(t.renew) {
		return t.header, nil
	}
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(k) == 0 {
		return "", fmt.Errorf("its %s is not a base64 key", s.name)
	}
	expiry := now.Add(s.ttl).Unix()
	t = &iotHubToken{key: key, header: IoTHubSAS(s.host+"/devices/"+id, k, expiry),
		renew: time.Unix(expiry, 0).Add(-s.ttl / 5)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cache[id]; !ok && len(s.cache) >= s.size {
		n := max(1, s.size/8)
		for d := range s.cache { // map order is arbitrary
			delete(s.cache, d)
			if n--; n == 0 {
				break
			}
		}
	}
	s.cache[id] = t
	return t.header, nil
}

// cached is how many devices' tokens s holds.
func (s *AzureIoTHub) cached() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cache)
}

// urlDevice returns the device id a request URL names: its path segment after "devices",
// unescaped.
func urlDevice(raw string) (string, error) {
	u, err := parseRouteURL(raw)
	if err != nil {
		return "", err
	}
	segs := strings.Split(u.EscapedPath(), "/")
	for i, seg := range segs[:len(segs)-1] {
		if seg != "devices" {
			continue
		}
		id, err := url.PathUnescape(segs[i+1])
		if err != nil || id == "" {
			break
		}
		return id, nil
	}
	return "", errors.New("the request URL names no device (no /devices/<id> in its path, or an empty id)")
}

// IoTHubSAS returns the Authorization header value of an IoT Hub token for resource (e.g.
// "myhub.azure-devices.net/devices/dev1"), signed with key (the base64-decoded device or policy
// key) and valid until expiry (Unix seconds), without a policy name (a device token):
//
//	SharedAccessSignature sr=<sr>&sig=<sig>&se=<expiry>
//
// where sr is the resource URL-encoded (as the examples of "Control access to IoT Hub with
// shared access signatures" on Microsoft Learn encode it) and sig the URL-encoded base64 of
// HMAC-SHA256(key, sr + "\n" + expiry).
func IoTHubSAS(resource string, key []byte, expiry int64) string {
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry, 10)
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(iotHubSig(key, sr, se)) + "&se=" + se
}

// iotHubSig is the base64 HMAC-SHA256 of sr + "\n" + se under key.
func iotHubSig(key []byte, sr, se string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(sr))
	mac.Write([]byte{'\n'})
	mac.Write([]byte(se))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
