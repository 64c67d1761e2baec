package linkcrypt_test

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/netio/link"
	"github.com/fleetrelay/fleetrelay/netio/link/linkcrypt"
)

var _ link.Cipher = (*linkcrypt.Cipher)(nil)

// The reference: AES-256-CTR as SP 800-38A defines it, built from the block cipher alone
// (crypto/aes Block.Encrypt, not crypto/cipher's CTR), and the counter arithmetic of
// ENCRYPTION.md in math/big, not the package's.

var two128 = new(big.Int).Lsh(big.NewInt(1), 128)

// refStart is the first counter block of datagram n in direction d (0: client → relay,
// 1: relay → client): IV + d·2^127 + n·2^12 mod 2^128.
func refStart(iv []byte, d int, n uint64) *big.Int {
	x := new(big.Int).SetBytes(iv)
	x.Add(x, new(big.Int).Lsh(big.NewInt(int64(d)), 127))
	x.Add(x, new(big.Int).Lsh(new(big.Int).SetUint64(n), 12))
	return x.Mod(x, two128)
}

// refCTR XORs in with the keystream AES_K(T), AES_K(T+1), … from counter block start.
func refCTR(t testing.TB, key []byte, start *big.Int, in []byte) []byte {
	t.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	ctr := new(big.Int).Set(start)
	one := big.NewInt(1)
	out := make([]byte, len(in))
	var cb, ks [16]byte
	for i := 0; i < len(in); i += 16 {
		ctr.FillBytes(cb[:])
		blk.Encrypt(ks[:], cb[:])
		for j := i; j < len(in) && j < i+16; j++ {
			out[j] = in[j] ^ ks[j-i]
		}
		ctr.Add(ctr, one).Mod(ctr, two128)
	}
	return out
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newCipher(t testing.TB, key, iv []byte) *linkcrypt.Cipher {
	t.Helper()
	c, err := linkcrypt.New(key, iv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt: the key, then the initial counter block, in that
// order; the client → relay direction starts at the IV itself, so it is the NIST computation.
var (
	nistKey = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
	nistIV  = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
	nistPT  = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710"
	nistCT  = "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5 2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6"
)

func TestNISTVector(t *testing.T) {
	key, iv, pt, ct := unhex(t, nistKey), unhex(t, nistIV), unhex(t, nistPT), unhex(t, nistCT)
	if got := refCTR(t, key, refStart(iv, 0, 0), pt); !bytes.Equal(got, ct) {
		t.Fatalf("reference CTR = %x, want %x", got, ct)
	}
	c, err := linkcrypt.NewHex(nistKey, strings.ToUpper(nistIV))
	if err != nil {
		t.Fatal(err)
	}
	_, out := c.ClientStreams()
	got := make([]byte, len(pt))
	out.XORKeyStream(got, pt)
	if !bytes.Equal(got, ct) {
		t.Errorf("client → relay TCP stream = %x, want %x", got, ct)
	}
	in, _ := c.Streams()
	in.XORKeyStream(got, ct)
	if !bytes.Equal(got, pt) {
		t.Errorf("relay's in stream decrypts to %x, want %x", got, pt)
	}
	// Datagram 0 of the client starts at the IV too.
	if d := c.ClientSeal(nil, 0, pt); !bytes.Equal(d[:8], make([]byte, 8)) || !bytes.Equal(d[8:], ct) {
		t.Errorf("ClientSeal(0) = %x, want 8 zero bytes then %x", d, ct)
	}
}

// Edge IVs: where the counter arithmetic carries from the low 64 bits, into the top bit, and
// wraps around 2^128.
var edgeIVs = []string{
	"00000000000000000000000000000000",
	"ffffffffffffffffffffffffffffffff",
	"7fffffffffffffffffffffffffffffff",
	"0123456789abcdefffffffffffffffff",
	"0123456789abcdeffffffffffffff001",
	"fffffffffffff000ffffffffffffffff",
}

func TestStreamsMatchReference(t *testing.T) {
	key := randBytes(32)
	ivs := append([]string{hex.EncodeToString(randBytes(16))}, edgeIVs...)
	for _, ivh := range ivs {
		iv := unhex(t, ivh)
		c := newCipher(t, key, iv)
		plain := randBytes(100_003)
		wantUp := refCTR(t, key, refStart(iv, 0, 0), plain)
		wantDown := refCTR(t, key, refStart(iv, 1, 0), plain)
		relayIn, relayOut := c.Streams()
		clientIn, clientOut := c.ClientStreams()
		// Uneven pieces, as a socket delivers them.
		up, down := make([]byte, len(plain)), make([]byte, len(plain))
		for i, step := 0, 1; i < len(plain); i, step = i+step, step*3%1021+1 {
			j := min(i+step, len(plain))
			clientOut.XORKeyStream(up[i:j], plain[i:j])
			relayOut.XORKeyStream(down[i:j], plain[i:j])
		}
		if !bytes.Equal(up, wantUp) {
			t.Errorf("IV %s: client → relay differs from the reference", ivh)
		}
		if !bytes.Equal(down, wantDown) {
			t.Errorf("IV %s: relay → client differs from the reference", ivh)
		}
		relayIn.XORKeyStream(up, up)
		clientIn.XORKeyStream(down, down)
		if !bytes.Equal(up, plain) || !bytes.Equal(down, plain) {
			t.Errorf("IV %s: the other end does not decrypt", ivh)
		}
	}
}

var edgeNumbers = []uint64{0, 1, 2, 4095, 4096, 1<<52 - 1, 1 << 52, 1 << 63, 1<<64 - 1}

func TestDatagramsMatchReference(t *testing.T) {
	key := randBytes(32)
	for _, ivh := range append([]string{hex.EncodeToString(randBytes(16))}, edgeIVs...) {
		iv := unhex(t, ivh)
		c := newCipher(t, key, iv)
		for _, n := range edgeNumbers {
			for _, size := range []int{0, 1, 15, 16, 17, 63, 64, 65, 1400, linkcrypt.MaxPlain} {
				plain := randBytes(size)
				prefix := []byte("dst")
				var num [8]byte
				binary.BigEndian.PutUint64(num[:], n)
				for _, dir := range []struct {
					d          int
					seal       func([]byte, uint64, []byte) []byte
					open, peer func([]byte, []byte) ([]byte, error)
				}{{0, c.ClientSeal, c.Open, c.ClientOpen}, {1, c.Seal, c.ClientOpen, c.Open}} {
					want := append(append(append([]byte(nil), prefix...), num[:]...), refCTR(t, key, refStart(iv, dir.d, n), plain)...)
					got := dir.seal(append([]byte(nil), prefix...), n, plain)
					if !bytes.Equal(got, want) {
						t.Fatalf("IV %s, direction %d, datagram %d, %d bytes: sealed %.40x…, want %.40x…", ivh, dir.d, n, size, got, want)
					}
					back, err := dir.open([]byte("x"), got[len(prefix):])
					if err != nil || !bytes.Equal(back, append([]byte("x"), plain...)) {
						t.Fatalf("IV %s, direction %d, datagram %d, %d bytes: open = %.20x…, %v; want x + the plaintext", ivh, dir.d, n, size, back, err)
					}
					// The other direction's key stream gives something else. Checked from a block
					// up: a shorter datagram matches by chance (one byte: 1 in 256).
					if other, _ := dir.peer(nil, got[len(prefix):]); size >= 16 && bytes.Equal(other, plain) {
						t.Fatalf("IV %s, datagram %d: the other direction opens it too", ivh, n)
					}
				}
			}
		}
	}
}

// keystream is what c sends for zeros: the keystream itself, block by block.
func blocks(t *testing.T, seen map[[16]byte]string, ks []byte, what string) {
	t.Helper()
	for i := 0; i+16 <= len(ks); i += 16 {
		b := [16]byte(ks[i : i+16])
		if prev, ok := seen[b]; ok {
			t.Fatalf("keystream block reused: %s block %d is also %s", what, i/16, prev)
		}
		seen[b] = fmt.Sprintf("%s block %d", what, i/16)
	}
}

// No keystream block is used twice in a link: AES is a permutation, so two equal keystream
// blocks would mean the same counter block. The datagrams' ranges are full (MaxPlain bytes),
// in both directions, at the numbers where the arithmetic carries, with the TCP streams' first
// 64 KiB beside them, for IVs at the carries.
func TestNoKeystreamReuse(t *testing.T) {
	key := randBytes(32)
	zeros := make([]byte, linkcrypt.MaxPlain)
	for _, ivh := range append([]string{hex.EncodeToString(randBytes(16))}, edgeIVs...) {
		c := newCipher(t, key, unhex(t, ivh))
		seen := make(map[[16]byte]string)
		for _, n := range edgeNumbers {
			blocks(t, seen, c.ClientSeal(nil, n, zeros)[8:], fmt.Sprintf("IV %s client datagram %d", ivh, n))
			blocks(t, seen, c.Seal(nil, n, zeros)[8:], fmt.Sprintf("IV %s relay datagram %d", ivh, n))
		}
		// TCP's streams start where datagram 0 of their direction does: check them apart.
		seen = make(map[[16]byte]string)
		in, out := c.Streams()
		ks := make([]byte, 1<<16)
		in.XORKeyStream(ks, zeros[:len(ks)])
		blocks(t, seen, ks, "client → relay stream")
		out.XORKeyStream(ks, zeros[:len(ks)])
		blocks(t, seen, ks, "relay → client stream")
	}
}

// The same plaintext both ways gives ciphertexts whose XOR is not zero anywhere a block long:
// the two directions share no keystream (with a shared one, the XOR would be all zeros and
// would reveal the XOR of the plaintexts).
func TestDirectionsShareNoKeystream(t *testing.T) {
	c := newCipher(t, randBytes(32), randBytes(16))
	plain := bytes.Repeat([]byte("the same request, both ways. "), 4000)
	relayIn, relayOut := c.Streams()
	_, clientOut := c.ClientStreams()
	up, down := make([]byte, len(plain)), make([]byte, len(plain))
	clientOut.XORKeyStream(up, plain)
	relayOut.XORKeyStream(down, plain)
	x := make([]byte, len(plain))
	for i := range x {
		x[i] = up[i] ^ down[i]
	}
	for i := 0; i+16 <= len(x); i += 16 {
		if bytes.Equal(x[i:i+16], make([]byte, 16)) {
			t.Fatalf("TCP: block %d of both directions' ciphertexts is equal", i/16)
		}
	}
	if bytes.Equal(up, plain) {
		t.Fatal("TCP: the client's stream left the plaintext as it was")
	}
	relayIn.XORKeyStream(up, up)
	if !bytes.Equal(up, plain) {
		t.Fatal("TCP: the relay does not decrypt what the client sent")
	}
	for n := uint64(0); n < 4; n++ {
		a, b := c.ClientSeal(nil, n, plain[:1400]), c.Seal(nil, n, plain[:1400])
		for i := 8; i+16 <= len(a); i += 16 {
			if bytes.Equal(a[i:i+16], b[i:i+16]) {
				t.Fatalf("UDP datagram %d: block %d equal both ways", n, (i-8)/16)
			}
		}
	}
}

func TestNewErrors(t *testing.T) {
	f := func(key, iv string, want error, field string) {
		t.Helper()
		_, err := linkcrypt.NewHex(key, iv)
		if !errors.Is(err, want) || !strings.Contains(err.Error(), field) {
			t.Errorf("NewHex(%q, %q) = %v, want %v naming %s", key, iv, err, want, field)
		}
	}
	k, v := strings.Repeat("ab", 32), strings.Repeat("cd", 16)
	f(k[:32], v, linkcrypt.ErrKey, "key is 16 bytes")
	f(k+"00", v, linkcrypt.ErrKey, "key is 33 bytes")
	f("zz"+k[2:], v, linkcrypt.ErrKey, "key is not hex")
	f(k, v[:24], linkcrypt.ErrIV, "initializationVector is 12 bytes")
	f(k, v[:31], linkcrypt.ErrIV, "initializationVector is not hex")
	f("", "", linkcrypt.ErrKey, "key is 0 bytes")
	if _, err := linkcrypt.NewHex(k, v); err != nil {
		t.Errorf("NewHex(good) = %v", err)
	}
	if _, err := linkcrypt.New(make([]byte, 32), make([]byte, 8)); !errors.Is(err, linkcrypt.ErrIV) {
		t.Errorf("New(8-byte IV) = %v, want ErrIV", err)
	}
}

func TestOpenRefuses(t *testing.T) {
	c := newCipher(t, randBytes(32), randBytes(16))
	for _, size := range []int{0, 1, 7} {
		got, err := c.Open([]byte("keep"), make([]byte, size))
		if !errors.Is(err, linkcrypt.ErrShort) || string(got) != "keep" {
			t.Errorf("Open(%d bytes) = %q, %v; want dst unchanged, ErrShort", size, got, err)
		}
	}
	if _, err := c.ClientOpen(nil, make([]byte, 8+linkcrypt.MaxPlain+1)); !errors.Is(err, linkcrypt.ErrLong) {
		t.Errorf("ClientOpen(8+MaxPlain+1 bytes) = %v, want ErrLong", err)
	}
	if got, err := c.Open(nil, make([]byte, 8)); err != nil || len(got) != 0 {
		t.Errorf("Open(number only) = %x, %v; want empty", got, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Seal of MaxPlain+1 bytes did not panic")
		}
	}()
	c.Seal(nil, 0, make([]byte, linkcrypt.MaxPlain+1))
}

// Open on anything never panics; what it accepts, sealing again gives back byte for byte (CTR
// accepts every datagram of a possible length: it cannot tell a forged one).
func FuzzOpen(f *testing.F) {
	key, iv := unhex(f, nistKey), unhex(f, nistIV)
	c := newCipher(f, key, iv)
	d := c.ClientSeal(nil, 7, []byte("a datagram the client sent, 41 bytes long"))
	for i := range d {
		f.Add(d[:i])
	}
	f.Add(d)
	f.Add(append(d, 0))
	f.Fuzz(func(t *testing.T, datagram []byte) {
		plain, err := c.Open(nil, datagram)
		if len(datagram) < 8 {
			if !errors.Is(err, linkcrypt.ErrShort) {
				t.Fatalf("Open(%x) = %v, want ErrShort", datagram, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Open(%x) = %v", datagram, err)
		}
		n := binary.BigEndian.Uint64(datagram)
		if again := c.ClientSeal(nil, n, plain); !bytes.Equal(again, datagram) {
			t.Fatalf("ClientSeal(Open(%x)) = %x", datagram, again)
		}
		if other, err := c.ClientOpen(nil, datagram); err != nil || len(other) != len(plain) {
			t.Fatalf("ClientOpen(%x) = %x, %v", datagram, other, err)
		}
	})
}

func BenchmarkStream(b *testing.B) {
	c := newCipher(b, randBytes(32), randBytes(16))
	_, out := c.Streams()
	buf := randBytes(64 << 10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		out.XORKeyStream(buf, buf)
	}
}

func BenchmarkSeal(b *testing.B) {
	c := newCipher(b, randBytes(32), randBytes(16))
	for _, size := range []int{64, 65, 1400} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			plain, dst := randBytes(size), make([]byte, 0, size+8)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			n := uint64(0)
			for b.Loop() {
				dst = c.Seal(dst[:0], n, plain)
				n++
			}
		})
	}
}

// A short datagram is encrypted in dst's own storage: the keystream of its last block's unused
// part is not left behind in dst's spare capacity.
func TestSealLeavesNoKeystream(t *testing.T) {
	c := newCipher(t, randBytes(32), randBytes(16))
	buf := bytes.Repeat([]byte{0xee}, 64)
	d := c.Seal(buf[:0], 3, []byte("hello"))
	if len(d) != 13 || &d[0] != &buf[0] {
		t.Fatalf("Seal = %x, want 13 bytes in buf", d)
	}
	if rest := buf[13:24]; !bytes.Equal(rest, make([]byte, 11)) {
		t.Errorf("after the datagram, buf holds %x: keystream left behind", rest)
	}
}
