package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Mem is a process's resident memory from /proc/PID/status, in MiB. Badger memory-maps its
// value log and tables, so file-backed pages count in VmRSS: RssAnon is the part that grows with
// what the process holds itself (Go heap, stacks); RssFile is mapped files (and the binary),
// which the kernel can drop and read again.
type Mem struct {
	RSSMiB   float64 `json:"rssMiB"`   // VmRSS = RssAnon + RssFile + RssShmem
	AnonMiB  float64 `json:"anonMiB"`  // RssAnon
	FileMiB  float64 `json:"fileMiB"`  // RssFile
	ShmemMiB float64 `json:"shmemMiB"` // RssShmem
	// HeapMiB is the Go heap in use (go_memstats_heap_inuse_bytes of the relay's /metrics), 0
	// if it could not be read.
	HeapMiB float64 `json:"goHeapInuseMiB"`
}

func (m Mem) String() string {
	return fmt.Sprintf("VmRSS %.1f MiB (anon %.1f, file %.1f, shmem %.1f; Go heap in use %.1f)", m.RSSMiB, m.AnonMiB, m.FileMiB, m.ShmemMiB, m.HeapMiB)
}

// mem reads the process's resident memory; the Go heap comes from admin's /metrics when admin
// is set.
func (p *relayProc) mem(ctx context.Context, admin string) Mem {
	mib := func(key string) float64 { return float64(p.status(key)) / (1 << 20) }
	m := Mem{RSSMiB: mib("VmRSS"), AnonMiB: mib("RssAnon"), FileMiB: mib("RssFile"), ShmemMiB: mib("RssShmem")}
	if admin != "" {
		if v, err := scrape(ctx, admin, "go_memstats_heap_inuse_bytes"); err == nil {
			m.HeapMiB = v / (1 << 20)
		}
	}
	return m
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *relayProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// terminate sends SIGTERM and waits up to timeout for the exit (then SIGKILL); it returns how
// long the process took and its exit error (nil: exit status 0).
func (p *relayProc) terminate(timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return time.Since(t0), p.err
	case <-time.After(timeout):
		p.kill()
		return time.Since(t0), fmt.Errorf("relay still running %v after SIGTERM: killed", timeout)
	}
}

// ready polls until the relay accepts on devAddr and, with admin set, answers GET /healthz with
// 200; it fails when the process exits, ctx ends or timeout passes.
func (p *relayProc) waitReady(ctx context.Context, devAddr, admin string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := http.Client{Timeout: time.Second}
	listening := false
	for {
		if !listening {
			if c, err := net.DialTimeout("tcp", devAddr, time.Second); err == nil {
				c.Close()
				listening = true
			}
		}
		if listening && admin == "" {
			return nil
		}
		if listening {
			if resp, err := client.Get("http://" + admin + "/healthz"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready (device listener %s accepting: %t, /healthz ok) after %v", p.name, devAddr, listening, timeout)
		}
	}
}

// scrape reads the relay's /metrics and returns the sum of every series of the metric name.
func scrape(ctx context.Context, admin, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: %s", name, resp.Status)
	}
	return metricValue(resp.Body, name)
}

// errNoMetric is returned when /metrics has no series of the metric asked for.
var errNoMetric = errors.New("metric not found")

// metricValue sums the series of the metric name in a Prometheus text exposition.
func metricValue(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var sum float64
	found := false
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		if rest[0] == '{' {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: %w", name, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s: %w", name, errNoMetric)
	}
	return sum, nil
}

// diskUsage is the space the files under dir take on disk (allocated blocks, not apparent
// sizes: Badger's value log files are sparse until written).
func diskUsage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// removeAll removes dir, reporting a failure on w: a backlog run leaves gigabytes.
func removeAll(dir string, w io.Writer) {
	if err := os.RemoveAll(dir); err != nil && w != nil {
		fmt.Fprintf(w, "remove %s: %v\n", dir, err)
	}
}
