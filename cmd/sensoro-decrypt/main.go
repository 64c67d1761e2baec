// Command sensoro-decrypt shows receivers how to open a SENSORO safe-mode body sent by the relay:
// it reads the request body ({"encryptData":"…"}) from stdin and writes the plaintext, the
// batch exactly as rendered, to stdout. The AppKey comes from $SENSORO_APP_KEY, or from -key
// (which other local users can see in the process list). See auth.SensoroSafeMode for the
// construction.
//
//	SENSORO_APP_KEY=… sensoro-decrypt < body.json
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fleetrelay/fleetrelay/internal/auth"
)

// maxBody bounds what is read from stdin.
const maxBody = 256 << 20

func main() {
	key := flag.String("key", "", "the route's AppKey (default $SENSORO_APP_KEY)")
	flag.Parse()
	if *key == "" {
		*key = os.Getenv("SENSORO_APP_KEY")
	}
	if *key == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: SENSORO_APP_KEY=… sensoro-decrypt < body.json")
		os.Exit(2)
	}
	body, err := io.ReadAll(io.LimitReader(os.Stdin, maxBody))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sensoro-decrypt: read stdin:", err)
		os.Exit(1)
	}
	plain, err := auth.DecryptSensoro([]byte(*key), body)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sensoro-decrypt:", err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(plain); err != nil {
		os.Exit(1)
	}
}
