package pipeline_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/internal/auth"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/pipeline"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The pipeline hands a signer the batch's device with its metadata as the attempt reads it, and
// gives a batch up at once on auth.ErrPermanent. With a static URL (one lane for every device)
// and batches of exactly two messages: D1 and D2 in one batch cannot be signed as one device
// (dead-lettered, no request); then two messages of D1 are sent with D1's token, checked here
// against D1's key from Microsoft's documented device SAS algorithm.
func TestSignerSeesTheBatchDevice(t *testing.T) {
	const host = "hub.azure-devices.net"
	key1 := base64.StdEncoding.EncodeToString([]byte("device one's 32-byte key........"))
	var (
		mu       sync.Mutex
		problems []string
		accepted int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "SharedAccessSignature ")
		q, err := url.ParseQuery(tok) // sr, sig, se, each URL-encoded once
		sr := url.QueryEscape(host + "/devices/D1")
		k, _ := base64.StdEncoding.DecodeString(key1)
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(sr + "\n" + q.Get("se")))
		se, _ := strconv.ParseInt(q.Get("se"), 10, 64)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || q.Get("sr") != host+"/devices/D1" || q.Get("sig") != base64.StdEncoding.EncodeToString(mac.Sum(nil)) || se < time.Now().Unix() {
			problems = append(problems, fmt.Sprintf("%s: Authorization %q", r.URL, r.Header.Get("Authorization")))
			w.WriteHeader(http.StatusForbidden)
			return
		}
		accepted++
	}))
	defer srv.Close()

	client := deliver.NewClient(deliver.Options{AllowPrivateNetworks: true})
	defer client.Close()
	st, err := store.Open(context.Background(), store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id, err := st.RouteID("r")
	if err != nil {
		t.Fatal(err)
	}
	u, err := fields.CompileURL(srv.URL + "/devices/D1/messages/events")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := auth.NewAzureIoTHub(auth.AzureIoTHubOptions{Host: host, KeyField: "custom2"})
	if err != nil {
		t.Fatal(err)
	}
	metrics := actors.NewMetrics(prometheus.NewRegistry())
	p := pipeline.New(pipeline.Options{Route: "r", Method: "POST", Client: client, Auth: auth.Chain{signer},
		Policy: &deliver.Policy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}})
	sys := actors.New(actors.Options{Journal: st, Metrics: metrics,
		Fleet: map[string]*actors.DeviceMeta{"D1": {Custom2: key1}, "D2": {Custom2: key1}},
		Routes: []*actors.Route{{ID: id, Name: "r", URL: u, MaxMessages: 2, MaxBytes: 1 << 20, Linger: time.Hour,
			Concurrency: 1, Deliver: p}}})
	if err := st.Start(store.Hooks{OnCommit: sys.OnCommit}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sys.Stop(ctx); err != nil {
			t.Error(err)
		}
	}()
	seqs := map[string]uint64{}
	appendFrame := func(dev string) {
		t.Helper()
		seqs[dev]++
		done := make(chan error, 1)
		st.Append(&store.Frame{Device: dev, Serial: dev, Seq: seqs[dev], ReceivedAt: time.Now().UnixMilli(), Routes: []uint16{id},
			Records: [][]byte{[]byte(`{"a":1}`)}}, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	wait := func(dead, delivered float64) {
		t.Helper()
		checkfor.Check(t, 20*time.Second, 5*time.Millisecond, func() error {
			d, ok := value(metrics.Dead.WithLabelValues("r")), value(metrics.Delivered.WithLabelValues("r"))
			if d != dead || ok != delivered {
				return fmt.Errorf("%v dead-lettered, %v delivered; want %v, %v", d, ok, dead, delivered)
			}
			return nil
		})
	}
	appendFrame("D1")
	appendFrame("D2")
	wait(2, 0)
	appendFrame("D1")
	appendFrame("D1")
	wait(2, 2)
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 || accepted != 1 {
		t.Fatalf("%d requests accepted, want the one of D1's batch; refused: %q", accepted, problems)
	}
}
