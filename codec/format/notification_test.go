package format_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

// testNotification is a notification message as testdata/notifications.json writes it.
type testNotification struct {
	Name         string `json:"name"`
	Comment      string `json:"comment"`
	ReceivedAt   int64  `json:"receivedAt"`
	Attempt      int    `json:"attempt"`
	Notification struct {
		HashID       string `json:"hashId"`
		Environment  string `json:"environment"`
		Observations []struct {
			HashID    string `json:"hashId"`
			Action    string `json:"action"`
			Device    string `json:"device"`
			CreatedAt int64  `json:"createdAt"`
			UpdatedAt int64  `json:"updatedAt"`
			DeletedAt int64  `json:"deletedAt"`
		} `json:"observations"`
	} `json:"notification"`
}

func (tn *testNotification) message() *format.Message {
	n := format.Notification{HashID: tn.Notification.HashID, Environment: tn.Notification.Environment}
	for _, o := range tn.Notification.Observations {
		n.Observations = append(n.Observations, format.Observation{HashID: o.HashID, Action: o.Action,
			Device: o.Device, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt, DeletedAt: o.DeletedAt})
	}
	return &format.Message{Kind: format.KindNotification, Device: tn.Notification.Environment,
		ReceivedAt: tn.ReceivedAt, Attempt: tn.Attempt, Data: format.AppendNotification(nil, &n)}
}

// TestGoldenNotification renders every message of testdata/notifications.json in the
// notification format and compares with testdata/golden/notification.jsonl (-update rewrites
// it), and checks each line against the HTTPS forwarding spec's field reference.
func TestGoldenNotification(t *testing.T) {
	b, err := os.ReadFile("testdata/notifications.json")
	if err != nil {
		t.Fatal(err)
	}
	var ns []testNotification
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ns); err != nil {
		t.Fatalf("testdata/notifications.json: %v", err)
	}
	f, err := format.Lookup(format.NameNotification, format.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	bld := format.NewBuilder(f)
	for i := range ns {
		m := ns[i].message()
		line := f.Append(nil, m)
		checkNotification(t, ns[i].Name, line, len(ns[i].Notification.Observations), m.Attempt)
		if hint := f.SizeHint(m); hint < len(line) {
			t.Errorf("SizeHint(%s) = %d, rendered %d bytes", ns[i].Name, hint, len(line))
		}
		got.Write(line)
		got.WriteByte('\n')
		bld.Add(m)
	}
	if body := bld.Bytes(); !json.Valid(body) {
		t.Errorf("batch body is not valid JSON: %s", body)
	}
	path := filepath.Join("testdata", "golden", "notification.jsonl")
	if *update {
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	gotLines, wantLines := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
	if len(gotLines) != len(wantLines) {
		t.Fatalf("%s: %d lines, golden has %d", path, len(gotLines), len(wantLines))
	}
	for i := range gotLines {
		if gotLines[i] != wantLines[i] {
			t.Errorf("notification(%s) =\n%s\nwant (%s line %d)\n%s", ns[i].Name, gotLines[i], path, i+1, wantLines[i])
		}
	}
}

// checkNotification checks a rendered message against the HTTPS forwarding spec's field reference.
func checkNotification(t *testing.T, name string, line []byte, nobs, attempt int) {
	t.Helper()
	var msg struct {
		HashID       *string           `json:"hashId"`
		Environment  json.RawMessage   `json:"environmentHashId"`
		Observations []json.RawMessage `json:"observations"`
		GeneratedAt  *string           `json:"generatedAt"`
		Attempt      *int              `json:"attempt"`
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&msg); err != nil {
		t.Fatalf("notification(%s) = %s: %v", name, line, err)
	}
	if msg.HashID == nil || msg.Environment == nil || msg.GeneratedAt == nil || msg.Attempt == nil ||
		*msg.Attempt != attempt || len(msg.Observations) != nobs {
		t.Errorf("notification(%s) = %s: a field is missing, or attempt is not %d, or not %d observations", name, line, attempt, nobs)
	}
	for _, o := range msg.Observations {
		var obs struct {
			HashID    string                        `json:"hashId"`
			Object    string                        `json:"object"`
			Action    string                        `json:"action"`
			Device    *struct{ Identifier *string } `json:"device"`
			CreatedAt string                        `json:"createdAt"`
			UpdatedAt string                        `json:"updatedAt"`
			DeletedAt *string                       `json:"deletedAt"`
		}
		dec := json.NewDecoder(bytes.NewReader(o))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&obs); err != nil {
			t.Fatalf("notification(%s) observation %s: %v", name, o, err)
		}
		if obs.Object != "device" || obs.Device == nil || obs.Device.Identifier == nil || obs.CreatedAt == "" ||
			obs.UpdatedAt == "" || (obs.Action == "delete") != (obs.DeletedAt != nil) {
			t.Errorf("notification(%s) observation %s does not match the HTTPS forwarding spec", name, o)
		}
	}
}

// TestNotificationOtherKinds: a data message that reaches the notification format is rendered
// as the envelope, and an empty object gets the two fields alone.
func TestNotificationOtherKinds(t *testing.T) {
	f, _ := format.Lookup(format.NameNotification, format.Options{})
	env, _ := format.Lookup(format.NameEnvelope, format.Options{})
	m := &format.Message{Device: "D1", Seq: 3, ReceivedAt: 1795341600123, Data: []byte(`{"a":1}`)}
	if got, want := f.Append(nil, m), env.Append(nil, m); string(got) != string(want) {
		t.Errorf("Append(data) = %s, want the envelope %s", got, want)
	}
	m = &format.Message{Kind: format.KindNotification, ReceivedAt: 0, Attempt: 1, Data: []byte(" { } ")}
	if got, want := string(f.Append(nil, m)), `{"generatedAt":"1970-01-01T00:00:00.000Z","attempt":1}`; got != want {
		t.Errorf("Append(%s) = %s, want %s", m.Data, got, want)
	}
}

// BenchmarkNotification: building a notification message of n observations (as control does
// when a write commits) and rendering it (as a route does per attempt).
func BenchmarkNotification(b *testing.B) {
	f, _ := format.Lookup(format.NameNotification, format.Options{})
	for _, n := range []int{1, 500} {
		nt := format.Notification{HashID: "9f1c2e7a4b3d5e60", Environment: "acme"}
		for i := range n {
			nt.Observations = append(nt.Observations, format.Observation{HashID: "9f1c2e7a4b3d5e60-" + strconv.Itoa(i),
				Action: "update", Device: "SN-" + strconv.Itoa(i), CreatedAt: 1795341600100, UpdatedAt: 1795341700400})
		}
		data := format.AppendNotification(nil, &nt)
		b.Run("build/"+strconv.Itoa(n), func(b *testing.B) {
			buf := make([]byte, 0, 2*len(data))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				buf = format.AppendNotification(buf[:0], &nt)
			}
		})
		b.Run("render/"+strconv.Itoa(n), func(b *testing.B) {
			m := &format.Message{Kind: format.KindNotification, ReceivedAt: 1795341700456, Data: data}
			buf := make([]byte, 0, 2*len(data))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				buf = f.Append(buf[:0], m)
			}
		})
	}
}
