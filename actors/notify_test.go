package actors_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/format"
)

// kindDeliverer records what each delivered message is: kind, account and record.
type kindDeliverer struct {
	mu   sync.Mutex
	msgs []string // "<kind> <account> <data>"
}

func (d *kindDeliverer) Deliver(_ context.Context, b *actors.Batch) actors.Outcome {
	var m format.Message
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range b.Len() {
		b.Message(i, &m)
		d.msgs = append(d.msgs, fmt.Sprintf("%s %s %s", m.Kind, m.Account, m.Data))
	}
	return actors.Outcome{Result: actors.Delivered, Status: 200, Attempts: 1}
}

func (d *kindDeliverer) got() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.msgs)
}

// Notification routes take the notification messages of their account (or of every account)
// and nothing a device sends; the other routes never see a notification; a paused notification
// route takes none; Notify stores nothing when no route takes the message.
func TestNotifyRouting(t *testing.T) {
	data, notes, acme, paused := &kindDeliverer{}, &kindDeliverer{}, &kindDeliverer{}, &kindDeliverer{}
	rd := liveRoute(t, "data", "http://x.invalid/data", data, 100)
	rn := liveRoute(t, "notes", "http://x.invalid/notes", notes, 100)
	rn.Notifications = true
	ra := liveRoute(t, "acme-notes", "http://x.invalid/acme", acme, 100)
	ra.Notifications, ra.Account = true, "acme"
	rp := liveRoute(t, "paused-notes", "http://x.invalid/paused", paused, 100)
	rp.Notifications, rp.Paused = true, true
	fleet := map[string]*actors.DeviceMeta{"ACME": {Account: "acme", Custom1: "not a notification's"}}
	rig := newLiveRig(t, liveOpts{fleet: fleet}, rd, rn, ra, rp)

	dev := rig.dial("ACME") // a device whose identity is an account's: its metadata stays its own
	dev.send(1, 2)
	dev.stored(1)
	stored := make(chan error, 2)
	at := time.UnixMilli(1_800_000_000_000)
	if !rig.sys.Notify("acme", []byte(`{"hashId":"n1"}`), at, func(err error) { stored <- err }) {
		t.Fatal("Notify(acme) = false, want true")
	}
	if !rig.sys.Notify("other", []byte(`{"hashId":"n2"}`), at, func(err error) { stored <- err }) {
		t.Fatal("Notify(other) = false, want true")
	}
	for range 2 {
		if err := <-stored; err != nil {
			t.Fatalf("notification stored: %v", err)
		}
	}
	poll(t, func() error {
		if n, a := len(notes.got()), len(acme.got()); n != 2 || a != 1 || len(data.got()) != 2 {
			return fmt.Errorf("notes %d, acme-notes %d, data %d delivered; want 2, 1, 2", n, a, len(data.got()))
		}
		return nil
	})
	want := []string{`notification acme {"hashId":"n1"}`, `notification other {"hashId":"n2"}`}
	if got := notes.got(); !slices.Equal(got, want) {
		t.Errorf("notes got %q, want %q", got, want)
	}
	if got := acme.got(); !slices.Equal(got, want[:1]) {
		t.Errorf("acme-notes got %q, want %q", got, want[:1])
	}
	for _, m := range data.got() {
		if !strings.HasPrefix(m, "data acme ") {
			t.Errorf("data route got %q, want only the device's data", m)
		}
	}
	if got := paused.got(); len(got) != 0 {
		t.Errorf("paused notification route got %q", got)
	}

	rig2 := newLiveRig(t, liveOpts{}, liveRoute(t, "data", "http://x.invalid/data", &kindDeliverer{}, 100))
	if rig2.sys.Notify("acme", []byte(`{}`), at, func(error) { t.Error("done called for a notification no route takes") }) {
		t.Error("Notify without notification routes = true, want false")
	}
}
