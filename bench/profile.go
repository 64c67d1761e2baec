package bench

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"
)

// profiler takes CPU profiles of the relay and of this process during a scenario's load.
type profiler struct {
	dir, name, admin, key string
	logf                  func(string, ...any)
	self                  *os.File
	wg                    sync.WaitGroup
}

// startProfiles starts both CPU profiles and the relay's execution trace. The relay's covers the load after ramp-up (its
// length is fixed when requested); this process's runs until finish.
func startProfiles(dir, name string, s *Scenario, admin, key string, logf func(string, ...any)) *profiler {
	p := &profiler{dir: dir, name: name, admin: admin, key: key, logf: logf}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		logf("profile: %v", err)
		return p
	}
	if f, err := os.Create(p.path("bench.cpu")); err == nil {
		if err := pprof.StartCPUProfile(f); err != nil {
			logf("profile: %v", err)
			f.Close()
		} else {
			p.self = f
		}
	}
	secs := int((time.Duration(s.Load.Duration) - time.Duration(s.Load.Ramp)).Seconds()) - 1
	if secs < 1 {
		secs = 1
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		time.Sleep(time.Duration(s.Load.Ramp))
		p.fetch("profile?seconds="+strconv.Itoa(secs), "relay.cpu", time.Duration(secs+30)*time.Second)
	}()
	go func() { // an execution trace of 5 s in the middle of the load: stalls, blocking, GC
		defer p.wg.Done()
		time.Sleep(time.Duration(s.Load.Ramp) + max(0, time.Duration(secs)*time.Second/2-2500*time.Millisecond))
		p.fetch("trace?seconds=5", "relay.trace", 40*time.Second)
	}()
	return p
}

func (p *profiler) path(kind string) string {
	return filepath.Join(p.dir, p.name+"-"+kind+".pprof")
}

// fetch saves one of the relay's /debug/pprof profiles.
func (p *profiler) fetch(query, kind string, timeout time.Duration) {
	p.fetchURL("http://"+p.admin+"/debug/pprof/"+query, p.path(kind), timeout)
}

// fetchURL saves what url answers to path.
func (p *profiler) fetchURL(url, path string, timeout time.Duration) {
	kind := filepath.Base(path)
	c := http.Client{Timeout: timeout}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		p.logf("profile %s: %v", kind, err)
		return
	}
	req.Header.Set("Authorization", "Bearer "+p.key) // /debug/pprof needs a super key
	resp, err := c.Do(req)
	if err != nil {
		p.logf("profile %s: %v", kind, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		p.logf("profile %s: %s: %s", kind, resp.Status, strings.TrimSpace(string(b)))
		return
	}
	f, err := os.Create(path)
	if err != nil {
		p.logf("profile %s: %v", kind, err)
		return
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		p.logf("profile %s: %v", kind, err)
	}
	f.Close()
}

// finish stops this process's profile, waits for the relay's and saves the relay's heap; then
// it profiles the relay for 10 s more in the background (the drain, if there is one), waited
// for by done.
func (p *profiler) finish() {
	if p.self != nil {
		pprof.StopCPUProfile()
		p.self.Close()
	}
	p.wg.Wait()
	p.fetch("heap", "relay.heap", 30*time.Second)
	p.fetchURL("http://"+p.admin+"/metrics", filepath.Join(p.dir, p.name+"-relay.metrics.txt"), 10*time.Second)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.fetch("profile?seconds=10", "relay-drain.cpu", 40*time.Second)
	}()
}

// done waits for the drain profile.
func (p *profiler) done() {
	p.wg.Wait()
	p.logf("profiles in %s", p.dir)
}

// selfCPU is this process's user+system CPU time in seconds.
func selfCPU() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	return statCPU(b)
}

// statCPU reads utime+stime from a /proc/PID/stat line.
func statCPU(b []byte) float64 {
	// Fields after the command name (which may contain spaces) start after the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}
