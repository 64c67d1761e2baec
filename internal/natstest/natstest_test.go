package natstest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/natstest"
)

func TestMain(m *testing.M) {
	natstest.ServeNodeIfChild()
	os.Exit(m.Run())
}

// TestReplicatedStreamSurvivesNodeStop: a stream of three replicas keeps every acknowledged
// message, and takes new ones, with one of the three nodes stopped; the node comes back and
// catches up.
func TestReplicatedStreamSurvivesNodeStop(t *testing.T) {
	c := natstest.Start(t, 3)
	survives(t, c.URL(), c.Stop, c.Restart)
}

// The same with node processes, the stream's leader killed with SIGKILL.
func TestReplicatedStreamSurvivesNodeKill(t *testing.T) {
	c := natstest.StartProcs(t, 3)
	survives(t, c.URL(), c.Kill, c.Restart)
}

// survives publishes 50 messages to a stream of three replicas, stops its leader (node "n<i+1>"
// is i), publishes 50 more, checks all 100, restarts the node, and checks again.
func survives(t *testing.T, url string, stop, restart func(i int)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"},
		Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			for {
				// Each attempt has its own deadline: a publish that reached the killed leader,
				// or was sent again after the client's reconnection to no leader yet, is never
				// answered, and would wait out the test's.
				actx, acancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(actx, "s.x", fmt.Appendf(nil, "m%d", i))
				acancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("publish m%d: %v", i, err)
				}
				time.Sleep(50 * time.Millisecond) // a leader moving: retry
			}
		}
	}
	publish(0, 50)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := info.Cluster.Leader
	stopped, err := strconv.Atoi(strings.TrimPrefix(leader, "n"))
	if err != nil || stopped < 1 || stopped > 3 {
		t.Fatalf("stream leader %q is none of the nodes", leader)
	}
	stopped--
	stop(stopped) // the stream's leader: the hardest case
	publish(50, 100)
	check := func() {
		t.Helper()
		for seq := uint64(1); seq <= 100; seq++ {
			var m *jetstream.RawStreamMsg
			for {
				actx, acancel := context.WithTimeout(ctx, 2*time.Second)
				m, err = st.GetMsg(actx, seq)
				acancel()
				if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) || ctx.Err() != nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("message %d: %v", seq, err)
			}
			if want := fmt.Sprintf("m%d", seq-1); string(m.Data) != want {
				t.Fatalf("message %d = %q, want %q", seq, m.Data, want)
			}
		}
	}
	check()
	restart(stopped)
	check()
}
