package linkcrypt_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

// doc is ENCRYPTION.md, the construction's specification, which holds the worked example and
// the Python client.
func doc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../ENCRYPTION.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fenced returns the first fenced block after heading whose opening fence is fence.
func fenced(t *testing.T, text, heading, fence string) string {
	t.Helper()
	_, after, ok := strings.Cut(text, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("ENCRYPTION.md has no %q", heading)
	}
	_, body, ok := strings.Cut(after, fence+"\n")
	if !ok {
		t.Fatalf("ENCRYPTION.md: no %s block after %q", fence, heading)
	}
	body, _, _ = strings.Cut(body, "```\n")
	return body
}

// exampleLine is one line of the worked example: its label's words and its hex value.
type exampleLine struct {
	words []string
	value []byte
}

func workedExample(t *testing.T) []exampleLine {
	var lines []exampleLine
	for _, l := range strings.Split(fenced(t, doc(t), "## Worked example", "```"), "\n") {
		f := strings.Fields(l)
		for i, w := range f {
			if v, err := hex.DecodeString(w); err == nil && len(v) >= 4 {
				lines = append(lines, exampleLine{f[:i], v})
				break
			}
			if i == len(f)-1 {
				lines = append(lines, exampleLine{f, nil})
			}
		}
	}
	return lines
}

func number(t *testing.T, s string) uint64 {
	t.Helper()
	s = strings.Trim(s, "(),")
	if s == "2^64-1" {
		return math.MaxUint64
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("worked example: number %q: %v", s, err)
	}
	return n
}

// step is one check of the worked example, for the package and for the Python client.
type step struct {
	what   string
	got    func(c *linkcrypt.Cipher) []byte
	python string // an expression whose value's hex the Python client prints
	want   []byte
}

func exampleSteps(t *testing.T) (key, iv []byte, steps []step) {
	lines := workedExample(t)
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		label := strings.Join(l.words, " ")
		wire := func() []byte {
			if i+1 >= len(lines) || strings.Join(lines[i+1].words, " ") != "on the wire" {
				t.Fatalf("worked example: %q is not followed by its wire bytes", label)
			}
			i++
			return lines[i].value
		}
		switch {
		case label == "key":
			key = l.value
		case label == "iv":
			iv = l.value
		case strings.HasPrefix(label, "T("):
			d, n := int(number(t, l.words[0][2:])), number(t, l.words[1])
			steps = append(steps, step{label, func(c *linkcrypt.Cipher) []byte { b := linkcrypt.Counter(c, d, n); return b[:] },
				fmt.Sprintf("counter(iv, %d, %d)", d, n), l.value})
			if !bytes.Equal(refStart(iv, d, n).FillBytes(make([]byte, 16)), l.value) {
				t.Errorf("worked example: %s = %x, the reference says %x", label, l.value, refStart(iv, d, n).FillBytes(make([]byte, 16)))
			}
		case label == "client sends":
			plain, w := l.value, wire()
			steps = append(steps,
				step{"TCP client → relay", func(c *linkcrypt.Cipher) []byte {
					_, out := c.ClientStreams()
					b := make([]byte, len(plain))
					out.XORKeyStream(b, plain)
					return b
				}, fmt.Sprintf("tcp.encrypt(bytes.fromhex(%q))", hex.EncodeToString(plain)), w},
				step{"TCP relay decrypts", func(c *linkcrypt.Cipher) []byte {
					in, _ := c.Streams()
					b := make([]byte, len(w))
					in.XORKeyStream(b, w)
					return b
				}, "", plain})
		case label == "relay sends":
			plain, w := l.value, wire()
			steps = append(steps,
				step{"TCP relay → client", func(c *linkcrypt.Cipher) []byte {
					_, out := c.Streams()
					b := make([]byte, len(plain))
					out.XORKeyStream(b, plain)
					return b
				}, "", w},
				step{"TCP client decrypts", func(c *linkcrypt.Cipher) []byte {
					in, _ := c.ClientStreams()
					b := make([]byte, len(w))
					in.XORKeyStream(b, w)
					return b
				}, fmt.Sprintf("tcp.decrypt(bytes.fromhex(%q))", hex.EncodeToString(w)), plain})
		case len(l.words) == 3 && l.words[1] == "datagram":
			n, plain, w := number(t, l.words[2]), l.value, wire()
			if l.words[0] == "client" {
				steps = append(steps,
					step{label, func(c *linkcrypt.Cipher) []byte { return c.ClientSeal(nil, n, plain) },
						fmt.Sprintf("(setattr(udp, 'next', %d), udp.seal(bytes.fromhex(%q)))[1]", n, hex.EncodeToString(plain)), w},
					step{label + " opened", func(c *linkcrypt.Cipher) []byte { p, _ := c.Open(nil, w); return p }, "", plain})
			} else {
				steps = append(steps,
					step{label, func(c *linkcrypt.Cipher) []byte { return c.Seal(nil, n, plain) }, "", w},
					step{label + " opened", func(c *linkcrypt.Cipher) []byte { p, _ := c.ClientOpen(nil, w); return p },
						fmt.Sprintf("udp.open(bytes.fromhex(%q))", hex.EncodeToString(w)), plain})
			}
		case label == "TCP" || label == "UDP" || len(l.words) == 0:
		default:
			t.Fatalf("worked example: line %q not understood", label)
		}
	}
	if key == nil || iv == nil || len(steps) < 12 {
		t.Fatalf("worked example: key %x, iv %x, %d steps: not the example", key, iv, len(steps))
	}
	return key, iv, steps
}

// Every line of ENCRYPTION.md's worked example is what the package computes, both ways.
func TestWorkedExample(t *testing.T) {
	key, iv, steps := exampleSteps(t)
	c := newCipher(t, key, iv)
	for _, s := range steps {
		if got := s.got(c); !bytes.Equal(got, s.want) {
			t.Errorf("%s = %x, ENCRYPTION.md says %x", s.what, got, s.want)
		}
	}
}

// The Python client of ENCRYPTION.md, run as written, computes the worked example: a second
// implementation, on another AES library, agrees with the document (and so with the package).
// It needs python3 with the cryptography package; without them it is skipped.
func TestPythonClient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	if err := exec.Command(py, "-c", "import cryptography").Run(); err != nil {
		t.Skip("python3 has no cryptography package")
	}
	key, iv, steps := exampleSteps(t)
	var prog strings.Builder
	prog.WriteString(fenced(t, doc(t), "## A client in Python", "```python"))
	fmt.Fprintf(&prog, "\nkey, iv = bytes.fromhex(%q), bytes.fromhex(%q)\n", hex.EncodeToString(key), hex.EncodeToString(iv))
	prog.WriteString("tcp, udp = TCPLink(key, iv), UDPLink(key, iv)\n")
	var want []string
	for _, s := range steps {
		if s.python != "" {
			fmt.Fprintf(&prog, "print(%s.hex())\n", s.python)
			want = append(want, fmt.Sprintf("%s: %x", s.what, s.want))
		}
	}
	cmd := exec.Command(py, "-")
	cmd.Stdin = strings.NewReader(prog.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, prog.String())
	}
	got := strings.Fields(string(out))
	if len(got) != len(want) {
		t.Fatalf("python printed %d lines, want %d:\n%s", len(got), len(want), out)
	}
	for i, w := range want {
		if !strings.HasSuffix(w, ": "+got[i]) {
			t.Errorf("python: %s, got %s", w, got[i])
		}
	}
}
