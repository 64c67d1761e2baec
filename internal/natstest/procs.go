package natstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/natsembed"
)

// nodeEnv, set in a node process's environment, holds "<i> <plan as JSON>".
const nodeEnv = "FLEETRELAY_NATSTEST_NODE"

// ServeNodeIfChild runs this process as node i of a Procs cluster, and never returns, when it
// was started as one; otherwise it returns at once. Call it first in the TestMain of a package
// that uses StartProcs.
func ServeNodeIfChild() {
	v := os.Getenv(nodeEnv)
	if v == "" {
		return
	}
	i, planJSON, _ := strings.Cut(v, " ")
	n, err := strconv.Atoi(i)
	var plan natsembed.Plan
	if err == nil {
		err = json.Unmarshal([]byte(planJSON), &plan)
	}
	if err == nil {
		_, err = natsembed.StartNode(plan, n)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "natstest node %s: %v\n", i, err)
		os.Exit(1)
	}
	select {} // until killed
}

// Procs is a JetStream cluster whose nodes are processes of their own (this test binary run
// again, see ServeNodeIfChild), so that a node can be killed with SIGKILL: no shutdown, no
// leadership handed over, only what it had fsynced left on disk. Its methods are safe for
// concurrent use.
type Procs struct {
	t    testing.TB
	plan natsembed.Plan
	mu   sync.Mutex
	cmds []*exec.Cmd // nil while killed
	done []chan struct{}
}

// StartProcs runs an n-node cluster of node processes on loopback and waits until a stream
// replicated on every node can be made. The nodes are killed when t ends.
func StartProcs(t testing.TB, n int) *Procs {
	t.Helper()
	plan, err := natsembed.NewPlan(n, t.TempDir())
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	p := &Procs{t: t, plan: plan, cmds: make([]*exec.Cmd, n), done: make([]chan struct{}, n)}
	t.Cleanup(func() {
		for i := range n {
			p.Kill(i)
		}
	})
	for i := range n {
		p.start(i)
	}
	p.WaitReady(n)
	return p
}

func (p *Procs) start(i int) {
	p.t.Helper()
	planJSON, err := json.Marshal(p.plan)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %s", nodeEnv, i, planJSON))
	cmd.Stderr = os.Stderr
	// A node outlives no test binary, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("natstest: node %d: %v", i, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmds[i], p.done[i] = cmd, done
	p.mu.Unlock()
}

// URL returns every node's client URL, comma-separated: a client fails over to the running ones.
func (p *Procs) URL() string { return p.plan.URL() }

// Len returns the number of nodes.
func (p *Procs) Len() int { return p.plan.Len() }

// Kill kills node i with SIGKILL and waits until it is gone; its store directory stays.
func (p *Procs) Kill(i int) {
	p.mu.Lock()
	cmd, done := p.cmds[i], p.done[i]
	p.cmds[i] = nil
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts node i again over its store directory and waits until a stream replicated
// on every running node can be made.
func (p *Procs) Restart(i int) {
	p.t.Helper()
	p.start(i)
	running := 0
	p.mu.Lock()
	for _, c := range p.cmds {
		if c != nil {
			running++
		}
	}
	p.mu.Unlock()
	p.WaitReady(running)
}

// WaitReady waits until a stream with replicas replicas can be made (and deletes it): the
// nodes agree on a meta leader, which would place it.
func (p *Procs) WaitReady(replicas int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natsembed.ReadyTimeout)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		if last = tryStream(ctx, p.URL(), replicas); last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("natstest: node processes not ready after %v: %v", natsembed.ReadyTimeout, last)
}

func tryStream(ctx context.Context, url string, replicas int) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	name := "natstest_ready"
	_, err = js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{Name: name, Subjects: []string{"natstest.ready"},
		Replicas: replicas, Storage: jetstream.FileStorage})
	if err != nil {
		return err
	}
	if err := js.DeleteStream(cctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	return nil
}
