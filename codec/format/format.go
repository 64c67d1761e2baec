package format

import (
	"fmt"
	"strings"
)

// Format renders messages into a route's request body.
//
// Every built-in Format is immutable once built and safe for concurrent use; Append allocates
// nothing once dst has room (see the package benchmarks).
type Format interface {
	// Name is the name Lookup knows the format by.
	Name() string
	// Append appends m rendered as one element of the batch body to dst.
	Append(dst []byte, m *Message) []byte
	// SizeHint estimates len(Append(nil, m)) cheaply, without rendering: for queue accounting
	// and batching decisions. For envelope it is an upper bound; for the other formats an
	// estimate that may be low. Use Builder.AddWithin where a byte limit must hold exactly.
	SizeHint(m *Message) int
	// Body says how rendered messages are put together into a request body.
	Body() Body
}

// Body is the shape of a batch's request body.
type Body uint8

const (
	// BodyJSONArray is a JSON array of the rendered messages, `[m1,m2,…]` (the HTTPS forwarding spec: "The body
	// is a JSON array that can include one or more messages"). All built-in formats use it.
	BodyJSONArray Body = iota
)

// Options are the per-route settings a format may take. Lookup rejects options set for a
// format that does not use them, so that a misplaced option is a configuration error.
type Options struct {
	// AppID is the SENSORO application id sent as "appId" (format sensoro, required).
	AppID string
	// DeviceType is sent as "deviceType" in SENSORO sensor-data pushes (format sensoro,
	// optional, e.g. "node").
	DeviceType string
	// Template is the custom JSON template with $$field placeholders (format template,
	// required).
	Template string
}

// Format names known to Lookup.
const (
	NameEnvelope    = "envelope"
	NameRaw         = "raw"
	NameSENSORO     = "sensoro"
	NameBeWhere     = "bewhere"
	NameBeWhereFull = "bewhere-full"
	NameMeasurement = "measurement"
	NameTemplate    = "template"
)

var names = []string{NameEnvelope, NameRaw, NameSENSORO, NameBeWhere, NameBeWhereFull, NameMeasurement, NameTemplate,
	NameNotification}

// Names returns the names of the built-in formats, the default (envelope) first.
func Names() []string { return append([]string(nil), names...) }

// The fixed formats, built once.
var (
	envelopeFormat    Format = defaultEnvelope{}
	rawFormat         Format = raw{}
	measurementFormat Format = measurement{}
	beWhereFormat            = mustBuiltin(NameBeWhere, BeWhereTemplate)
	beWhereFullFormat        = mustBuiltin(NameBeWhereFull, BeWhereFullTemplate)
)

func mustBuiltin(name, src string) *Template {
	t, err := Compile([]byte(src))
	if err != nil {
		panic(fmt.Sprintf("format %s: %v", name, err))
	}
	t.name = name
	return t
}

// Lookup returns the format called name (case-sensitive; "" is the default, envelope) set up
// with opts. Errors wrap ErrUnknownFormat, ErrOption, or (format template) the template's
// *TemplateError.
func Lookup(name string, opts Options) (Format, error) {
	if name == "" {
		name = NameEnvelope
	}
	var unused []string
	if opts.AppID != "" && name != NameSENSORO {
		unused = append(unused, "app_id")
	}
	if opts.DeviceType != "" && name != NameSENSORO {
		unused = append(unused, "device_type")
	}
	if opts.Template != "" && name != NameTemplate {
		unused = append(unused, "template")
	}
	known := false
	for _, n := range names {
		known = known || n == name
	}
	if !known {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownFormat, name, strings.Join(names, ", "))
	}
	if len(unused) > 0 {
		return nil, fmt.Errorf("%w: %s not used by format %s", ErrOption, strings.Join(unused, ", "), name)
	}
	switch name {
	case NameEnvelope:
		return envelopeFormat, nil
	case NameRaw:
		return rawFormat, nil
	case NameSENSORO:
		return NewSENSORO(opts.AppID, opts.DeviceType)
	case NameBeWhere:
		return beWhereFormat, nil
	case NameBeWhereFull:
		return beWhereFullFormat, nil
	case NameMeasurement:
		return measurementFormat, nil
	case NameNotification:
		return notificationFormat, nil
	}
	// NameTemplate
	if opts.Template == "" {
		return nil, fmt.Errorf("%w: format template needs a template", ErrOption)
	}
	t, err := Compile([]byte(opts.Template))
	if err != nil {
		return nil, fmt.Errorf("format template: %w", err)
	}
	return t, nil
}
