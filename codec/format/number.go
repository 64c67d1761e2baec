package format

import (
	"math"
	"strconv"
	"time"
)

// maxDigits is the significand's precision: 15 decimal digits is what a float64 (and so a
// JavaScript number) holds exactly, so receivers can parse the significand without loss.
const maxDigits = 15

// pow10Max is 10^maxDigits, the first significand that has too many digits.
const pow10Max = 1_000_000_000_000_000

// maxExp bounds the exponent parsed from a JSON number; beyond it the exponent saturates (JSON
// numbers may carry any number of exponent digits).
const maxExp = 1 << 30

// decimal is a JSON number as neg × sig × 10^exp, sig without trailing zeros (0 has exp 0).
type decimal struct {
	neg bool
	sig int64
	exp int
}

// parseDecimal reads the JSON number b exactly as written, rounding to maxDigits significant
// digits (half away from zero). It reports false if b is not a JSON number.
func parseDecimal(b []byte) (d decimal, ok bool) {
	i := 0
	if i < len(b) && b[i] == '-' {
		d.neg = true
		i++
	}
	n := 0         // significant digits kept
	round := false // the first dropped digit is 5 or more
	dropped := false
	digit := func(c byte, frac bool) {
		if n == 0 && c == '0' {
			if frac {
				d.exp--
			}
			return
		}
		if n < maxDigits {
			d.sig = d.sig*10 + int64(c-'0')
			n++
			if frac {
				d.exp--
			}
			return
		}
		if !dropped {
			dropped, round = true, c >= '5'
		}
		if !frac {
			d.exp++
		}
	}
	start := i
	if i < len(b) && b[i] == '0' {
		i++
	} else {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			digit(b[i], false)
			i++
		}
	}
	if i == start {
		return d, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start = i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			digit(b[i], true)
			i++
		}
		if i == start {
			return d, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		neg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			neg = b[i] == '-'
			i++
		}
		start = i
		e := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if e < maxExp {
				e = e*10 + int(b[i]-'0')
			}
			i++
		}
		if i == start {
			return d, false
		}
		e = min(e, maxExp)
		if neg {
			e = -e
		}
		d.exp += e
	}
	if i != len(b) {
		return d, false
	}
	if round {
		d.sig++
		if d.sig == pow10Max {
			d.sig /= 10
			d.exp++
		}
	}
	if d.sig == 0 {
		return decimal{}, true
	}
	for d.sig%10 == 0 {
		d.sig /= 10
		d.exp++
	}
	return d, true
}

// appendFormatted appends d as a human-readable decimal: thousands separated by commas,
// "." before the fraction, and exponent notation ("1.5e+30", "2e-9") where JavaScript's
// Number.prototype.toString would use it (from 1e21, below 1e-6).
func (d decimal) appendFormatted(dst []byte) []byte {
	if d.sig == 0 {
		return append(dst, '0')
	}
	if d.neg {
		dst = append(dst, '-')
	}
	var buf [20]byte
	digits := strconv.AppendInt(buf[:0], d.sig, 10)
	n := len(digits)
	p := n + d.exp // digits before the decimal point
	switch {
	case p > 21 || p < -5:
		dst = append(dst, digits[0])
		if n > 1 {
			dst = append(append(dst, '.'), digits[1:]...)
		}
		dst = append(dst, 'e')
		if p-1 >= 0 {
			dst = append(dst, '+')
		}
		return strconv.AppendInt(dst, int64(p-1), 10)
	case p <= 0:
		dst = append(dst, '0', '.')
		for range -p {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	}
	for k := range p {
		if k > 0 && (p-k)%3 == 0 {
			dst = append(dst, ',')
		}
		if k < n {
			dst = append(dst, digits[k])
		} else {
			dst = append(dst, '0')
		}
	}
	if p < n {
		dst = append(append(dst, '.'), digits[p:]...)
	}
	return dst
}

// secondsBelow is where record times change unit: numbers below it are Unix seconds, at or
// above it Unix milliseconds (10^11 s is the year 5138; 10^11 ms is March 1973).
const secondsBelow = 1e11

// maxTimeMs bounds the record times taken as times (about ±31,700 years).
const maxTimeMs = 1e15

// parseTime reads a record's time value (raw JSON) as Unix milliseconds: a number of Unix
// seconds (below 10^11, fractions allowed) or milliseconds, or an RFC 3339 string.
func parseTime(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	if v[0] == '"' {
		if len(v) < 2 {
			return 0, false
		}
		return parseRFC3339(v[1 : len(v)-1])
	}
	d, ok := parseDecimal(v)
	if !ok {
		return 0, false
	}
	f := float64(d.sig) * math.Pow10(d.exp)
	if d.neg {
		f = -f
	}
	if math.Abs(f) < secondsBelow {
		f *= 1000
	}
	if !(math.Abs(f) <= maxTimeMs) {
		return 0, false
	}
	return int64(math.Round(f)), true
}

// parseRFC3339 parses YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM), as time.RFC3339Nano does but
// without allocating, to Unix milliseconds (the fraction is truncated to milliseconds).
func parseRFC3339(s []byte) (int64, bool) {
	num := func(i, n int) (int, bool) {
		if i+n > len(s) {
			return 0, false
		}
		v := 0
		for _, c := range s[i : i+n] {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	sep := func(i int, c ...byte) bool {
		if i >= len(s) {
			return false
		}
		for _, x := range c {
			if s[i] == x {
				return true
			}
		}
		return false
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 2)
	day, ok3 := num(8, 2)
	hour, ok4 := num(11, 2)
	minute, ok5 := num(14, 2)
	sec, ok6 := num(17, 2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && sep(4, '-') && sep(7, '-') && sep(10, 'T', 't') &&
		sep(13, ':') && sep(16, ':')) {
		return 0, false
	}
	if month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 {
		return 0, false
	}
	i := 19
	ms := 0
	if sep(i, '.') {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if i-start < 3 {
				ms = ms*10 + int(s[i]-'0')
			}
			i++
		}
		if i == start {
			return 0, false
		}
		for k := i - start; k < 3; k++ {
			ms *= 10
		}
	}
	offset := 0 // seconds east of UTC
	switch {
	case sep(i, 'Z', 'z') && i+1 == len(s):
	case sep(i, '+', '-') && i+6 == len(s) && sep(i+3, ':'):
		oh, ok1 := num(i+1, 2)
		om, ok2 := num(i+4, 2)
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, false
		}
		offset = oh*3600 + om*60
		if s[i] == '-' {
			offset = -offset
		}
	default:
		return 0, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC)
	if t.Day() != day { // February 30 and the like
		return 0, false
	}
	return t.UnixMilli() + int64(ms) - int64(offset)*1000, true
}
