package format

// Kind says what a Message carries.
type Kind uint8

const (
	// KindData is a record a device sent (the zero value).
	KindData Kind = iota
	// KindResult is the outcome of a command (task) sent to a device: TaskID, ResultCode, and
	// the result data in Message.Data.
	KindResult
	// KindNotification is a notification message of the relay's own (a device added, updated or
	// deleted): Data is the message's JSON object without generatedAt and attempt, and
	// ReceivedAt when the relay generated it. Only the notification format renders it.
	KindNotification
)

// String returns "data", "result" or "notification".
func (k Kind) String() string {
	switch k {
	case KindResult:
		return "result"
	case KindNotification:
		return "notification"
	}
	return "data"
}

// Message is one message as a route renders it: the device's identity and metadata, its
// place in the device's stream, the delivery attempt, and the record.
//
// A Message is plain data; formats only read it, and keep no reference to it or to Data after
// Append returns.
type Message struct {
	// Device is the relay's identity of the device (its serial, or its IMEI if it has no
	// serial); it starts the message id "<device>-<seq>-<index>". Empty: Serial, else IMEI.
	Device string
	Serial string
	IMEI   string
	ICCID  string
	// Custom1..Custom3 are the device's user-set custom fields (the HTTP connector spec).
	Custom1, Custom2, Custom3 string
	// Secret names the custom fields that are secrets (a device's credential, such as its IoT
	// Hub key): every format renders them as if they were empty, while they stay here for what
	// addresses and signs the request ([CUSTOM1] in a URL or header, per-device auth).
	Secret  Secrets
	Tags    []string // the device's tags (BeWhere route filters)
	Groups  []string // the device's groups
	Account string   // the account that owns the device

	Seq        uint64 // the device's sequence number of the frame
	Index      int    // the record's place in its frame (0-based)
	ReceivedAt int64  // Unix milliseconds when the relay received the frame
	Attempt    int    // delivery attempt, 0-based (the HTTPS forwarding spec)

	Kind       Kind
	TaskID     string // KindResult: the task (command) id
	ResultCode int    // KindResult: 0 success, otherwise failure (SENSORO's webhook spec)

	// Data is the record exactly as the device sent it (KindData), or the command's result data
	// (KindResult): one JSON object. The relay validates records when it receives them; the
	// formats that copy Data verbatim (envelope, raw, sensoro) do not check it again, while the
	// formats that read fields from it (bewhere, measurement, templates) treat a Data that is
	// not one valid JSON object as an empty record. An empty Data is rendered as null.
	Data []byte
}

// Secrets is a set of custom fields, one bit each (SecretCustom1..SecretCustom3).
type Secrets uint8

// The custom fields of a Secrets set.
const (
	SecretCustom1 Secrets = 1 << iota
	SecretCustom2
	SecretCustom3
)

// SecretFields are the names of the fields a Secrets set can hold, SecretCustom1's first.
var SecretFields = [3]string{"custom1", "custom2", "custom3"}

// SecretOf returns the set of the one custom field name names ("custom1", "custom2" or
// "custom3"), or 0 for any other name.
func SecretOf(name string) Secrets {
	for i, f := range SecretFields {
		if f == name {
			return 1 << i
		}
	}
	return 0
}

// Names returns the names of the fields in s, in order (nil if none).
func (s Secrets) Names() []string {
	var names []string
	for i, f := range SecretFields {
		if s&(1<<i) != 0 {
			names = append(names, f)
		}
	}
	return names
}

// custom returns custom field i (0..2) as the formats render it: "" when it is secret.
func (m *Message) custom(i int) string {
	if m.Secret&(1<<i) != 0 {
		return ""
	}
	switch i {
	case 0:
		return m.Custom1
	case 1:
		return m.Custom2
	}
	return m.Custom3
}

// device returns the identity used in message ids.
func (m *Message) device() string {
	switch {
	case m.Device != "":
		return m.Device
	case m.Serial != "":
		return m.Serial
	}
	return m.IMEI
}
