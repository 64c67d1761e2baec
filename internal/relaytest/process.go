package relaytest

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
)

// builds are the relay binaries built by this test process, by flavour (race or not).
var builds struct {
	sync.Mutex
	dir  string // the temporary directory holding them
	bins map[bool]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the path of cmd/fleetrelay built once per test process, with the race detector
// when race is set (a crash test wants it; a benchmark must not have it). The build runs from the
// test's working directory, which any package of the module has. The package's TestMain must be
// Main, which removes the binaries when the tests are done.
func Binary(t testing.TB, race bool) string {
	t.Helper()
	builds.Lock()
	if builds.bins == nil {
		builds.bins = make(map[bool]*build)
	}
	b := builds.bins[race]
	if b == nil {
		b = &build{}
		builds.bins[race] = b
	}
	builds.Unlock()
	b.once.Do(func() { b.path, b.err = buildRelay(race) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildRelay(race bool) (string, error) {
	builds.Lock()
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "fleetrelay-test-bin")
		if err != nil {
			builds.Unlock()
			return "", err
		}
		builds.dir = dir
	}
	dir := builds.dir
	builds.Unlock()
	name, args := "fleetrelay", []string{"build"}
	if race {
		name, args = "fleetrelay-race", append(args, "-race")
	}
	path := filepath.Join(dir, name)
	args = append(args, "-o", path, "github.com/fleetrelay/fleetrelay/cmd/fleetrelay")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %v: %w\n%s", args, err, out)
	}
	return path, nil
}

// removeBinaries deletes the binaries Binary built (Main calls it once the tests ran).
func removeBinaries() {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
	}
	builds.dir, builds.bins = "", nil
}

// Process is a relay binary running as a child process of the test.
type Process struct {
	Cmd  *exec.Cmd
	done chan struct{} // closed when the process exited; err is then set
	err  error
	log  tailBuffer // the end of its stderr
}

// tailBuffer keeps the last bytes written to it (at most 64 KiB). Safe for concurrent use.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - 64<<10; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

// tail returns the last n bytes written.
func (t *tailBuffer) tail(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b[max(0, len(t.b)-n):])
}

// StartProcess runs bin with args, its stdout (and, under -v, its stderr) on the test's stderr,
// and returns once a TCP connection to waitAddr succeeds; it fails the test if the process exits
// before. The process is killed, if still running, when the test ends.
func StartProcess(t testing.TB, bin, waitAddr string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = os.Stderr
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	// Its stderr (the log) is kept, so that a start that fails says why; under -v it is shown
	// as it comes.
	cmd.Stderr = &p.log
	if testing.Verbose() {
		cmd.Stderr = io.MultiWriter(os.Stderr, &p.log)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	checkfor.Check(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-p.done:
			t.Fatalf("%s exited at start: %v; its log ends:\n%s", filepath.Base(bin), p.err, p.log.tail(4096))
		default:
		}
		c, err := net.Dial("tcp", waitAddr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return p
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits for the process to exit and returns its exit error.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Main runs the tests of a package that uses Binary, removes the binaries and exits: call it as
// the whole of the package's TestMain.
func Main(m *testing.M) {
	code := m.Run()
	removeBinaries()
	os.Exit(code)
}
