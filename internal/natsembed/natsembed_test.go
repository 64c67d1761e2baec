package natsembed

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The embedded server keeps what it acknowledged across a restart on the same directory.
func TestEmbeddedKeepsStreamsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Start("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := connect(t, s.URL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := js.Publish(ctx, "t.x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Shutdown()

	s2, err := Start("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	st, err := connect(t, s2.URL()).Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 10 {
		t.Fatalf("%d messages after the restart, want 10", info.State.Msgs)
	}
}

func TestEmbeddedBadAddress(t *testing.T) {
	for _, addr := range []string{"nohostport", "127.0.0.1:x", "127.0.0.1:70000"} {
		if _, err := Start(addr, t.TempDir()); err == nil {
			t.Errorf("Start(%q) succeeded", addr)
		}
	}
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// A fresh consumer's first pull request reaches it: on a 3-node cluster whose nodes keep one
// route each (not a pool), 1,000 ordered consumers created one after another on an R3 stream
// each deliver their first message long before two missed heartbeats (2 s) would remake
// them. With pooled routes (the server's default) 17 of 6,000 waited those 2 s here.
func TestFreshConsumersFirstPull(t *testing.T) {
	c, err := StartCluster(3, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := connect(t, c.NodeURL(0))
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "J", Subjects: []string{"j.>"}, Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	const parts = 32
	for p := range parts {
		if _, err := js.Publish(ctx, fmt.Sprintf("j.%d.d", p), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	late := 0
	for i := range 1000 {
		start := time.Now()
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{fmt.Sprintf("j.%d.>", i%parts)}})
		if err != nil {
			t.Fatal(err)
		}
		it, err := cons.Messages(jetstream.PullHeartbeat(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := it.Next(jetstream.NextContext(ctx)); err != nil {
			t.Fatalf("consumer %d: %v", i, err)
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			late++
			t.Logf("consumer %d: first message after %v", i, d)
		}
		it.Stop()
		if info := cons.CachedInfo(); info != nil {
			_ = s.DeleteConsumer(ctx, info.Name)
		}
	}
	if late > 0 {
		t.Errorf("%d of 1,000 fresh consumers waited for missed heartbeats before their first message", late)
	}
}
