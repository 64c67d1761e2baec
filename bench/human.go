package bench

import (
	"fmt"
	"math"
)

// Numbers as a person reads them in the tables and charts: three significant digits and a
// unit, never an exponent. Zero, negative or NaN values (nothing measured) read "–".

// Count formats a count or a rate: 512, 68.2k, 682k, 1.34M.
func Count(v float64) string {
	switch {
	case !(v > 0):
		return "–"
	case v < 999.5:
		return fmt.Sprintf("%.0f", v)
	case v < 999.5e3:
		return sig3(v/1e3) + "k"
	case v < 999.5e6:
		return sig3(v/1e6) + "M"
	}
	return sig3(v/1e9) + "G"
}

// Millis formats milliseconds: 842 µs, 1.34 ms, 24.5 ms, 312 ms, 2.41 s.
func Millis(v float64) string {
	switch {
	case !(v > 0):
		return "–"
	case v < 0.9995:
		return sig3(v*1e3) + " µs"
	case v < 999.5:
		return sig3(v) + " ms"
	}
	return sig3(v/1e3) + " s"
}

// Micros formats microseconds (CPU per frame or message): 3.86 µs, 24.5 µs, 102 µs, 1.20 ms.
func Micros(v float64) string {
	if v >= 999.5 {
		return Millis(v / 1e3)
	}
	if !(v > 0) {
		return "–"
	}
	return sig3(v) + " µs"
}

// MiB formats mebibytes: 76 MiB, 245 MiB, 1.30 GiB.
func MiB(v float64) string {
	switch {
	case !(v > 0):
		return "–"
	case v < 1023.5:
		return fmt.Sprintf("%.0f MiB", v)
	}
	return sig3(v/1024) + " GiB"
}

// Ratio formats a ratio: 0.82×, 3.95×, 12.4×.
func Ratio(v float64) string {
	if !(v > 0) || math.IsInf(v, 0) {
		return "–"
	}
	return sig3(v) + "×"
}

// sig3 writes v (0 < v < 1000) with three significant digits.
func sig3(v float64) string {
	switch {
	case v < 9.995:
		return fmt.Sprintf("%.2f", v)
	case v < 99.95:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}
