package batch

// Builder builds a batch body: a JSON array of envelopes, `[e1,e2,…]`.
//
// The zero value is an empty batch ready for use. A Builder reuses its buffer
// across Reset calls, so a long-lived Builder allocates nothing in steady
// state. A Builder is not safe for concurrent use; give each route lane its
// own.
type Builder struct {
	buf []byte // '[' and the envelopes so far, without the closing ']'
	n   int
}

// Reset empties the batch, keeping the buffer for reuse. Slices returned by
// Bytes before Reset must no longer be used.
func (b *Builder) Reset() {
	b.buf = b.buf[:0]
	b.n = 0
}

// Add appends the envelope of m for the given delivery attempt.
func (b *Builder) Add(m *Message, attempt int) {
	if b.n == 0 {
		b.buf = append(b.buf[:0], '[')
	} else {
		b.buf = append(b.buf, ',')
	}
	b.buf = AppendEnvelope(b.buf, m, attempt)
	b.n++
}

// Len returns the number of messages added since the last Reset.
func (b *Builder) Len() int { return b.n }

// Size returns the length in bytes of the body Bytes would return now,
// closing bracket included.
func (b *Builder) Size() int {
	if b.n == 0 {
		return len("[]")
	}
	return len(b.buf) + 1
}

// Bytes returns the batch as a valid JSON array ("[]" when empty). The slice
// aliases the Builder's buffer: it is valid until the next Add or Reset.
func (b *Builder) Bytes() []byte {
	if b.n == 0 {
		b.buf = append(b.buf[:0], '[')
	}
	return append(b.buf, ']')
}
