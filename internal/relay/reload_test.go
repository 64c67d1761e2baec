package relay_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// A reloaded config applies its routes and fleet while the relay runs: a fleet device added
// is admitted (devices.auth: known) and one dropped refused, each change notified (one message,
// signed, at the notification route); a route's new URL takes the next messages; a route that
// does not compile fails the whole reload, which changes nothing; sections that need a restart
// are named.
func TestReloadRoutesAndFleet(t *testing.T) {
	ep := newNotifyEndpoint(t)
	oldSink, newSink := startSink(t), startSink(t)
	cfg := testConfig(t, oldSink)
	cfg.Devices.Auth = config.AuthKnown
	cfg.Fleet = []config.Device{{ID: "KEEP", Custom1: "a"}, {ID: "DROP"}}
	rt := config.DefaultRoute()
	rt.Name, rt.URL, rt.Notifications = "changes", ep.URL+"/changes", true
	rt.Batch.Linger = config.Duration(5 * time.Millisecond)
	rt.Sign.Webhooks = &config.WebhooksSign{Secrets: []config.Secret{config.SecretValue(ep.secret)}}
	cfg.Routes = append(cfg.Routes, rt)
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	tcp := r.DeviceTCPAddr().String()
	helloRefused(t, r, native.Hello{Serial: "ADDED"})

	next := *cfg // the file, edited: as relay.LoadConfig would read it
	next.Routes = slices.Clone(cfg.Routes)
	next.Routes[0].URL = newSink.URL()
	next.Fleet = []config.Device{{ID: "KEEP", Custom1: "b"}, {ID: "ADDED"}}
	next.Delivery.Timeout *= 2 // needs a restart
	bad := next
	bad.Routes = slices.Clone(next.Routes)
	bad.Routes[0].URL = "http://[::1" // does not compile
	if _, _, err := r.Reload(t.Context(), &bad); err == nil {
		t.Fatal("Reload of a config whose route does not compile succeeded")
	}
	helloRefused(t, r, native.Hello{Serial: "ADDED"}) // nothing changed

	restart, kept, err := r.Reload(t.Context(), &next)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(restart) != "[delivery]" || len(kept) != 0 {
		t.Errorf("Reload: restart needed for %v, kept %v; want [delivery] and none", restart, kept)
	}
	d := connect(t, tcp, native.Hello{Serial: "ADDED"}, 1)
	waitRecords(t, newSink, "ADDED", send(t, d, "ADDED", 3))
	helloRefused(t, r, native.Hello{Serial: "DROP"})
	if got := field(api.must(http.StatusOK, "GET", "/api/v1/devices/KEEP", nil), "custom1"); got != "b" {
		t.Errorf("KEEP's custom1 after the reload = %v, want b", got)
	}
	if n := len(oldSink.Messages()); n != 0 {
		t.Errorf("the old URL got %d messages after the reload", n)
	}

	var msgs []struct {
		Observations []struct {
			Action string            `json:"action"`
			Device map[string]string `json:"device"`
		} `json:"observations"`
	}
	if err := json.Unmarshal(ep.wait(t, 1)[0], &msgs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		for _, o := range m.Observations {
			got = append(got, o.Action+" "+o.Device["identifier"])
		}
	}
	if want := "update KEEP, add ADDED, delete DROP"; strings.Join(got, ", ") != want || len(msgs) != 1 {
		t.Errorf("%d notification messages with %q, want one with %q", len(msgs), strings.Join(got, ", "), want)
	}
}

// SIGHUP makes the relay binary read its config file again: the route's new URL takes the
// next messages; a file that no longer parses changes nothing and the relay runs on.
func TestReloadOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	first, second := startSink(t), startSink(t)
	dir := t.TempDir()
	tcp := relaytest.FreeAddr(t)
	path := writeConfig(t, dir, tcp, first.URL())
	proc := startProcess(t, path, tcp)
	d := connect(t, tcp, native.Hello{Serial: "HUP"}, 1)
	waitRecords(t, first, "HUP", send(t, d, "HUP", 2))

	writeConfig(t, dir, tcp, second.URL())
	if err := proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	checkfor.Check(t, 30*time.Second, 50*time.Millisecond, func() error {
		send(t, d, "HUP", 1) // the reload is asynchronous: keep sending until the new URL gets one
		if n := len(second.Messages()); n == 0 {
			return fmt.Errorf("the new URL got nothing yet")
		}
		return nil
	})

	if err := os.WriteFile(path, []byte("routes: [oops"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	before := len(second.Messages())
	checkfor.Check(t, 30*time.Second, 50*time.Millisecond, func() error {
		send(t, d, "HUP", 1)
		if len(second.Messages()) == before {
			return fmt.Errorf("no new message at the route's URL")
		}
		return nil
	})
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(); err != nil {
		t.Errorf("relay exit after SIGTERM: %v", err)
	}
}
