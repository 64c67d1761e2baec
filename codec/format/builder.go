package format

// Builder builds the request body of one batch in a format whose Body is BodyJSONArray:
// `[m1,m2,…]`.
//
// The zero value is an empty batch in the envelope format. A Builder reuses its buffer across
// Reset calls, so a long-lived (or pooled) Builder allocates nothing in steady state. A Builder
// is not safe for concurrent use; give each route lane its own.
type Builder struct {
	f   Format
	buf []byte // '[' and the messages so far, without the closing ']'
	n   int
}

// NewBuilder returns an empty batch in format f (nil: envelope).
func NewBuilder(f Format) *Builder {
	b := &Builder{}
	b.Reset(f)
	return b
}

// Reset empties the batch and sets its format (nil: envelope), keeping the buffer for reuse.
// Slices returned by Bytes before Reset must no longer be used.
func (b *Builder) Reset(f Format) {
	if f == nil {
		f = envelopeFormat
	}
	b.f = f
	b.buf = b.buf[:0]
	b.n = 0
}

// Format returns the batch's format.
func (b *Builder) Format() Format {
	if b.f == nil {
		return envelopeFormat
	}
	return b.f
}

// Add appends m to the batch.
func (b *Builder) Add(m *Message) {
	if b.n == 0 {
		b.buf = append(b.buf[:0], '[')
	} else {
		b.buf = append(b.buf, ',')
	}
	b.buf = b.Format().Append(b.buf, m)
	b.n++
}

// AddWithin adds m unless the body would then be longer than maxBytes; the first message of a
// batch is always added, so that an oversized message still goes out alone. It reports
// whether m was added.
func (b *Builder) AddWithin(m *Message, maxBytes int) bool {
	mark := len(b.buf)
	b.Add(m)
	if b.n > 1 && b.Size() > maxBytes {
		b.buf = b.buf[:mark]
		b.n--
		return false
	}
	return true
}

// Len returns the number of messages in the batch.
func (b *Builder) Len() int { return b.n }

// Size returns the length in bytes of the body Bytes would return now.
func (b *Builder) Size() int {
	if b.n == 0 {
		return len("[]")
	}
	return len(b.buf) + 1
}

// Bytes returns the batch body: a JSON array ("[]" when empty). The slice aliases the
// Builder's buffer: it is valid until the next Add, AddWithin or Reset.
func (b *Builder) Bytes() []byte {
	if b.n == 0 {
		b.buf = append(b.buf[:0], '[')
	}
	return append(b.buf, ']')
}
