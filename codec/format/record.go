package format

import (
	"github.com/fleetrelay/fleetrelay/codec/jsontext"
)

// member is one member of a JSON object (or, with key nil, one element of an array): slices of
// the scanned bytes.
type member struct {
	key []byte // the key's raw body, between the quotes (escapes not resolved)
	val []byte // the value, exactly as written
	at  int    // objectScan: the value's offset in the record
	esc bool   // key holds escapes
	obs uint8  // measurement: how the member is observed (obsNone, …)
}

// keyIs reports whether the member's key means s.
func (mb *member) keyIs(s string) bool { return rawKeyIs(mb.key, mb.esc, s) }

// rawKeyIs reports whether the raw string body key (holding escapes if esc) means s.
func rawKeyIs(key []byte, esc bool, s string) bool {
	if !esc {
		return string(key) == s
	}
	var buf [64]byte
	return string(jsontext.AppendUnquoted(buf[:0], key)) == s
}

// objectScan walks the members of a record, validating it as it goes: after next has returned
// false, ok reports whether the record was exactly one valid JSON object (whitespace around
// it allowed) whose values nest at most jsontext.MaxDepth deep when depth containers are open
// around the object. Members handed out before an error was found are not to be used.
type objectScan struct {
	b     []byte
	i     int
	depth int
	start int  // the object's first byte
	state int8 // 0: before a member, 1: done and valid, -1: invalid
}

func (s *objectScan) init(data []byte, depth int) {
	*s = objectScan{b: data, depth: depth, state: -1}
	i := jsontext.SkipWS(data, 0)
	if i >= len(data) || data[i] != '{' || depth+1 > jsontext.MaxDepth {
		return
	}
	s.start = i
	i = jsontext.SkipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		s.i = i + 1
		s.finish()
		return
	}
	s.i, s.state = i, 0
}

// finish checks that only whitespace follows the object that ended at s.i.
func (s *objectScan) finish() {
	if jsontext.SkipWS(s.b, s.i) == len(s.b) {
		s.state = 1
	} else {
		s.state = -1
	}
}

// next scans the next member into mb and reports whether there was one.
func (s *objectScan) next(mb *member) bool {
	if s.state != 0 {
		return false
	}
	b, i := s.b, s.i
	s.state = -1
	if i >= len(b) || b[i] != '"' {
		return false
	}
	end, esc, ok := jsontext.SkipString(b, i)
	if !ok {
		return false
	}
	mb.key, mb.esc = b[i+1:end-1], esc
	i = jsontext.SkipWS(b, end)
	if i >= len(b) || b[i] != ':' {
		return false
	}
	i = jsontext.SkipWS(b, i+1)
	if end, ok = jsontext.SkipValue(b, i, s.depth+1); !ok {
		return false
	}
	mb.val, mb.at = b[i:end], i
	i = jsontext.SkipWS(b, end)
	if i >= len(b) {
		return false
	}
	switch b[i] {
	case '}':
		s.i = i + 1
		s.finish()
		if s.state != 1 {
			return false
		}
	case ',':
		s.i, s.state = jsontext.SkipWS(b, i+1), 0
	default:
		return false
	}
	return true
}

// ok reports whether the scan reached the end of a valid object.
func (s *objectScan) ok() bool { return s.state == 1 }

// object returns the object's bytes without the whitespace around it, once ok.
func (s *objectScan) object() []byte { return s.b[s.start:s.i] }

// elementScan walks the elements of an array or the members of an object already known to be
// valid JSON (for arrays, member.key is nil).
type elementScan struct {
	b   []byte
	i   int
	obj bool
}

func (s *elementScan) init(v []byte) {
	s.b, s.obj = v, v[0] == '{'
	s.i = jsontext.SkipWS(v, 1)
	if s.i < len(v) && (v[s.i] == '}' || v[s.i] == ']') {
		s.i = len(v)
	}
}

func (s *elementScan) next(mb *member) bool {
	b, i := s.b, s.i
	if i >= len(b) {
		return false
	}
	if s.obj {
		end, esc, _ := jsontext.SkipString(b, i)
		mb.key, mb.esc = b[i+1:end-1], esc
		i = jsontext.SkipWS(b, end)
		i = jsontext.SkipWS(b, i+1)
	}
	end, _ := jsontext.SkipValue(b, i, 0)
	mb.val = b[i:end]
	i = jsontext.SkipWS(b, end)
	if i < len(b) && b[i] == ',' {
		s.i = jsontext.SkipWS(b, i+1)
	} else {
		s.i = len(b)
	}
	return true
}

// isNumber reports whether the valid JSON value v is a number.
func isNumber(v []byte) bool {
	return len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9')
}
