// Package linkcrypt owns the encryption of a device link's client leg: AES-256-CTR with the
// link's key and initialization vector, split so that no keystream block is ever used twice —
// one counter range per direction and, over UDP, one per datagram, numbered in clear. The
// construction is specified in ENCRYPTION.md (in the parent folder) so that a client in any
// language can build it from AES-256-CTR alone; this package implements both sides of it, the
// relay's (link.Cipher) and the client's (for loadgen and tests).
//
// CTR gives confidentiality only: anyone on the path can flip bits of the plaintext, and
// replayed or reordered datagrams are not detected.
//
// The package imports only the standard library.
package linkcrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"slices"
)

// Sizes of the construction.
const (
	KeySize = 32 // AES-256
	IVSize  = 16 // one AES block: the first counter block

	// NumberSize is the length of the datagram number that starts every datagram, in clear,
	// big-endian.
	NumberSize = 8
	// DatagramBlocksLog is log2 of the counter blocks each datagram owns: datagram n of a
	// direction starts at block IV + d·2^127 + n·2^12.
	DatagramBlocksLog = 12
	// MaxPlain is the most plaintext one datagram can carry: its 2^12 blocks of 16 bytes
	// (more than any UDP datagram holds: 65,507 bytes over IPv4, less the number).
	MaxPlain = aes.BlockSize << DatagramBlocksLog
)

// Directions, the d of the counter arithmetic.
const (
	toRelay  = 0 // client → relay
	toClient = 1 // relay → client
)

// Cipher is one link's encryption, made from its key and IV. It holds the expanded key only:
// it is safe for concurrent use, and Seal, Open, ClientSeal and ClientOpen may be called from
// any goroutine (or event loop) at once.
//
// A key must encrypt one link only: two links with the same key would reuse keystream (their
// counter ranges start from their IVs and may overlap).
type Cipher struct {
	block  cipher.Block
	hi, lo uint64 // the IV as a 128-bit big-endian integer
}

// New returns the cipher of a link with a 32-byte key and a 16-byte initialization vector.
// The errors name the field (as the API calls it) and wrap ErrKey or ErrIV.
func New(key, iv []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: key is %d bytes, want %d (AES-256: 64 hex digits)", ErrKey, len(key), KeySize)
	}
	if len(iv) != IVSize {
		return nil, fmt.Errorf("%w: initializationVector is %d bytes, want %d (32 hex digits)", ErrIV, len(iv), IVSize)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return &Cipher{block: b, hi: binary.BigEndian.Uint64(iv), lo: binary.BigEndian.Uint64(iv[8:])}, nil
}

// NewHex is New over the API's hex strings (upper or lower case).
func NewHex(key, iv string) (*Cipher, error) {
	k, err := hex.DecodeString(key)
	if err != nil {
		return nil, fmt.Errorf("%w: key is not hex: %v", ErrKey, err)
	}
	v, err := hex.DecodeString(iv)
	if err != nil {
		return nil, fmt.Errorf("%w: initializationVector is not hex: %v", ErrIV, err)
	}
	return New(k, v)
}

// counter returns the first counter block of datagram n in direction d (0: client → relay,
// 1: relay → client): IV + d·2^127 + n·2^12 mod 2^128, as its high and low 64 bits. Datagram 0
// of a direction is also where that direction's TCP keystream starts.
func (c *Cipher) counter(d int, n uint64) (hi, lo uint64) {
	// n·2^12 as a 128-bit number: its top 12 bits go to the high word.
	lo, carry := bits.Add64(c.lo, n<<DatagramBlocksLog, 0)
	hi, _ = bits.Add64(c.hi, n>>(64-DatagramBlocksLog), carry)
	return hi + uint64(d&1)<<63, lo // + d·2^127: the top bit flipped for relay → client
}

// putBlock writes the counter block (hi, lo) into b, big-endian.
func putBlock(b []byte, hi, lo uint64) {
	binary.BigEndian.PutUint64(b, hi)
	binary.BigEndian.PutUint64(b[8:], lo)
}

func (c *Cipher) stream(d int) cipher.Stream {
	var b [IVSize]byte
	hi, lo := c.counter(d, 0)
	putBlock(b[:], hi, lo)
	return cipher.NewCTR(c.block, b[:])
}

// Streams returns the relay's TCP keystreams, each from its start: in decrypts what the client
// sends (counter IV), out encrypts what the relay sends the client (counter IV with its top bit
// flipped). Each call starts them again: call it once per link.
func (c *Cipher) Streams() (in, out cipher.Stream) {
	return c.stream(toRelay), c.stream(toClient)
}

// ClientStreams returns the client's TCP keystreams, each from its start: in decrypts what the
// relay sends, out encrypts what the client sends. Each call starts them again: call it once
// per connection.
func (c *Cipher) ClientStreams() (in, out cipher.Stream) {
	return c.stream(toClient), c.stream(toRelay)
}

// Seal appends to dst the datagram the relay sends the client carrying plain as its n-th
// datagram (n counts from 0 and must never repeat in a link): n in 8 bytes big-endian, then
// plain encrypted from counter block IV + 2^127 + n·2^12. plain must be at most MaxPlain bytes
// (no UDP datagram is larger). dst, up to its capacity, must not overlap plain: a short
// datagram's keystream is made in dst's storage.
func (c *Cipher) Seal(dst []byte, n uint64, plain []byte) []byte {
	return c.seal(dst, toClient, n, plain)
}

// ClientSeal is Seal for the client's datagrams: plain encrypted from counter block IV + n·2^12.
func (c *Cipher) ClientSeal(dst []byte, n uint64, plain []byte) []byte {
	return c.seal(dst, toRelay, n, plain)
}

// Open appends to dst the plaintext of a datagram the client sent. It fails (ErrShort, ErrLong)
// only on a datagram that cannot be one: CTR cannot tell a forged, altered or replayed datagram
// from a genuine one. dst, up to its capacity, must not overlap datagram.
func (c *Cipher) Open(dst, datagram []byte) ([]byte, error) {
	return c.open(dst, toRelay, datagram)
}

// ClientOpen is Open for the datagrams the relay sends the client (direction 1).
func (c *Cipher) ClientOpen(dst, datagram []byte) ([]byte, error) {
	return c.open(dst, toClient, datagram)
}

func (c *Cipher) seal(dst []byte, d int, n uint64, plain []byte) []byte {
	if len(plain) > MaxPlain {
		panic(fmt.Sprintf("linkcrypt: Seal of %d bytes, more than a datagram's %d", len(plain), MaxPlain))
	}
	dst = binary.BigEndian.AppendUint64(dst, n)
	return c.xor(dst, d, n, plain)
}

func (c *Cipher) open(dst []byte, d int, datagram []byte) ([]byte, error) {
	if len(datagram) < NumberSize {
		return dst, fmt.Errorf("%w (%d bytes)", ErrShort, len(datagram))
	}
	if len(datagram)-NumberSize > MaxPlain {
		return dst, fmt.Errorf("%w (%d bytes)", ErrLong, len(datagram))
	}
	return c.xor(dst, d, binary.BigEndian.Uint64(datagram), datagram[NumberSize:]), nil
}

// smallBlocks: a datagram of up to this many blocks (64 bytes, a typical request) is encrypted
// block by block in dst's own storage, without an allocation; a longer one through
// crypto/cipher's CTR, whose set-up (a 512-byte allocation, the key schedule copied, ≈200 ns)
// its bulk speed (≈0.2 ns a byte, against ≈30 ns a block one by one) repays from about here.
const smallBlocks = 4

// xor appends src encrypted (or decrypted) from datagram n's first counter block in direction d.
func (c *Cipher) xor(dst []byte, d int, n uint64, src []byte) []byte {
	if len(src) == 0 {
		return dst
	}
	hi, lo := c.counter(d, n)
	l := len(dst)
	blocks := (len(src) + aes.BlockSize - 1) / aes.BlockSize
	if blocks > smallBlocks {
		dst = slices.Grow(dst, len(src))[:l+len(src)]
		out := dst[l:]
		putBlock(out, hi, lo) // NewCTR reads its IV from there before the XOR overwrites it
		cipher.NewCTR(c.block, out[:IVSize]).XORKeyStream(out, src)
		return dst
	}
	dst = slices.Grow(dst, blocks*aes.BlockSize)[:l+blocks*aes.BlockSize]
	ks := dst[l:]
	for i := 0; i < len(ks); i += aes.BlockSize {
		putBlock(ks[i:], hi, lo)
		c.block.Encrypt(ks[i:i+aes.BlockSize], ks[i:i+aes.BlockSize])
		lo++
		if lo == 0 {
			hi++
		}
	}
	subtle.XORBytes(ks, ks[:len(src)], src)
	clear(ks[len(src):]) // the unused keystream of the last block stays nowhere
	return dst[:l+len(src)]
}
