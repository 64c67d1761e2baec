package access

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// KeyPrefix starts every key fleetrelay makes, so a leaked one is easy to recognise (secret
// scanners) and to tell from other tokens.
const KeyPrefix = "fr_"

// keyBytes is a key's randomness: 256 bits.
const keyBytes = 32

// NewKey makes a key: "fr_" and the base64url (unpadded) of 32 bytes from crypto/rand, and
// its hash, which is all that is stored.
func NewKey() (key string, hash [32]byte, err error) {
	var b [keyBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", hash, fmt.Errorf("make key: %w", err)
	}
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return key, Hash(key), nil
}

// Hash is what a key is stored and looked up as: its SHA-256. A key of 256 random bits cannot
// be guessed or brute-forced from its hash, so it needs no slow password KDF (bcrypt, argon2):
// those protect low-entropy passwords, and would only make every request slower.
func Hash(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// Equal compares two hashes in constant time.
func Equal(a, b [32]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }

// KeyFile is the bootstrap key's file in the data directory.
const KeyFile = "admin.key"

// LocalKey is the relay's own bootstrap key, for a command run on the relay's host by someone
// who may read it (`fleetrelay dlq`, `fleetrelay devices import`): the value s gives
// (admin.bootstrap_key), else the one in <dataDir>/admin.key; "" when neither is readable.
func LocalKey(dataDir string, s config.Secret) string {
	if s.IsSet() {
		k, _ := s.Reveal()
		return k
	}
	b, err := os.ReadFile(filepath.Join(dataDir, KeyFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Bootstrap returns the hash of the bootstrap super key: the one s gives (admin.bootstrap_key),
// or else the one in <dataDir>/admin.key, which the first start makes (mode 0600) and later
// starts reuse. path is the file's path when the key is the file's; created says this call
// wrote it. The key itself never leaves this function: only the file holds it.
func Bootstrap(dataDir string, s config.Secret) (hash [32]byte, path string, created bool, err error) {
	if s.IsSet() {
		v, err := s.Reveal()
		if err != nil {
			return hash, "", false, fmt.Errorf("admin.bootstrap_key: %w", err)
		}
		if len(v) < 16 {
			return hash, "", false, errors.New("admin.bootstrap_key: too short (at least 16 characters; `fleetrelay` makes keys of 46)")
		}
		return Hash(v), "", false, nil
	}
	path = filepath.Join(dataDir, KeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		v := strings.TrimSpace(string(b))
		if v == "" {
			return hash, path, false, fmt.Errorf("bootstrap key file %s is empty", path)
		}
		return Hash(v), path, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return hash, path, false, fmt.Errorf("bootstrap key: %w", err)
	}
	key, hash, err := NewKey()
	if err != nil {
		return hash, path, false, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return hash, path, false, fmt.Errorf("bootstrap key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return hash, path, false, fmt.Errorf("bootstrap key: %w", err)
	}
	_, err = f.WriteString(key + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return hash, path, false, fmt.Errorf("bootstrap key: %w", err)
	}
	return hash, path, true, nil
}
