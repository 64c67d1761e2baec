package format_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// testMessage is a Message as testdata/messages.json writes it.
type testMessage struct {
	Name       string          `json:"name"`
	Comment    string          `json:"comment"`
	Kind       string          `json:"kind"`
	TaskID     string          `json:"taskId"`
	ResultCode int             `json:"resultCode"`
	Device     string          `json:"device"`
	Serial     string          `json:"serial"`
	IMEI       string          `json:"imei"`
	ICCID      string          `json:"iccid"`
	Custom1    string          `json:"custom1"`
	Custom2    string          `json:"custom2"`
	Custom3    string          `json:"custom3"`
	Secret     []string        `json:"secret"` // the custom fields that are secrets
	Tags       []string        `json:"tags"`
	Groups     []string        `json:"groups"`
	Account    string          `json:"account"`
	Seq        uint64          `json:"seq"`
	Index      int             `json:"index"`
	ReceivedAt int64           `json:"receivedAt"`
	Attempt    int             `json:"attempt"`
	Data       json.RawMessage `json:"data"`
}

func (tm *testMessage) message() *format.Message {
	m := &format.Message{
		Device: tm.Device, Serial: tm.Serial, IMEI: tm.IMEI, ICCID: tm.ICCID,
		Custom1: tm.Custom1, Custom2: tm.Custom2, Custom3: tm.Custom3,
		Tags: tm.Tags, Groups: tm.Groups, Account: tm.Account,
		Seq: tm.Seq, Index: tm.Index, ReceivedAt: tm.ReceivedAt, Attempt: tm.Attempt,
		TaskID: tm.TaskID, ResultCode: tm.ResultCode, Data: []byte(tm.Data),
	}
	if tm.Kind == "result" {
		m.Kind = format.KindResult
	}
	for _, f := range tm.Secret {
		m.Secret |= format.SecretOf(f)
	}
	return m
}

func loadMessages(t testing.TB) []testMessage {
	t.Helper()
	b, err := os.ReadFile("testdata/messages.json")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []testMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&msgs); err != nil {
		t.Fatalf("testdata/messages.json: %v", err)
	}
	return msgs
}

// goldenCases are the formats rendered into testdata/golden/<name>.jsonl.
func goldenCases(t testing.TB) []struct {
	name   string
	format string
	opts   format.Options
} {
	tmpl, err := os.ReadFile("testdata/template.json")
	if err != nil {
		t.Fatal(err)
	}
	return []struct {
		name   string
		format string
		opts   format.Options
	}{
		{"envelope", format.NameEnvelope, format.Options{}},
		{"raw", format.NameRaw, format.Options{}},
		{"sensoro", format.NameSENSORO, format.Options{AppID: "123456", DeviceType: "node"}},
		{"bewhere", format.NameBeWhere, format.Options{}},
		{"bewhere-full", format.NameBeWhereFull, format.Options{}},
		{"measurement", format.NameMeasurement, format.Options{}},
		{"template", format.NameTemplate, format.Options{Template: string(tmpl)}},
	}
}

// TestGolden renders every message of testdata/messages.json in every format and compares
// with testdata/golden/<format>.jsonl: one line per message, in the order of messages.json.
// Run with -update to rewrite the files (and review the diff against the vendors' documents).
func TestGolden(t *testing.T) {
	msgs := loadMessages(t)
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			f, err := format.Lookup(c.format, c.opts)
			if err != nil {
				t.Fatalf("Lookup(%q): %v", c.format, err)
			}
			var got bytes.Buffer
			b := format.NewBuilder(f)
			for i := range msgs {
				m := msgs[i].message()
				line := f.Append(nil, m)
				if !json.Valid(line) {
					t.Errorf("%s(%s) is not valid JSON: %s", c.name, msgs[i].Name, line)
				}
				got.Write(line)
				got.WriteByte('\n')
				b.Add(m)
			}
			if body := b.Bytes(); !json.Valid(body) {
				t.Errorf("%s batch body is not valid JSON: %s", c.name, body)
			}
			path := filepath.Join("testdata", "golden", c.name+".jsonl")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			gotLines := strings.Split(got.String(), "\n")
			wantLines := strings.Split(string(want), "\n")
			if len(gotLines) != len(wantLines) {
				t.Fatalf("%s: %d lines, golden has %d", path, len(gotLines), len(wantLines))
			}
			for i := range gotLines {
				if gotLines[i] != wantLines[i] {
					t.Errorf("%s(%s) =\n%s\nwant (%s line %d)\n%s", c.name, msgs[i].Name, gotLines[i], path, i+1, wantLines[i])
				}
			}
		})
	}
}
