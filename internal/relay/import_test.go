package relay_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

// importRows is an NDJSON import of n devices IMP000001.. of account acme, with bad rows at
// the lines of bad (1-based), each bad in another way; it returns the body and the lines.
func importRows(n int) (string, []int) {
	bad := map[int]string{
		7:     `{"id":"IMP000007","imei":"12"}`,                         // not an IMEI
		1000:  `{"id":"IMP001000","colour":"red"}`,                      // unknown field
		2500:  `{"id":"IMP002500",`,                                     // not JSON
		9999:  `{"imei":"356938035643809"}`,                             // no id
		20000: `{"id":"IMP020000","custom1":"a\nb"}`,                    // a line break in a free field
		33333: `{"id":"IMP033333","account":"nobody"}`,                  // no such account
		50000: `{"id":"CFG-DEV"}`,                                       // the config file's
		64000: `{"id":"IMP064000","tags":"cold"}`,                       // tags not a list
		80001: `{"id":"` + strings.Repeat("X", 300) + `"}`,              // identity too long
		99999: `{"id":"IMP099999","imei":"356938035643809"} {"id":"Y"}`, // two values
	}
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if row, ok := bad[i]; ok {
			b.WriteString(row)
		} else {
			fmt.Fprintf(&b, `{"id":"imp%06d","imei":"356938035643809","custom1":"site-%d","tags":["cold","north"],"groups":["fleet-a"],"account":"acme"}`, i, i%97)
		}
		b.WriteByte('\n')
	}
	lines := make([]int, 0, len(bad))
	for l := range bad {
		lines = append(lines, l)
	}
	slices.Sort(lines)
	return b.String(), lines
}

type importAnswer struct {
	Upserted int `json:"upserted"`
	Rejected []struct {
		Line  int    `json:"line"`
		ID    string `json:"id"`
		Error string `json:"error"`
	} `json:"rejected"`
}

func (c *apiClient) importBody(contentType, query, body string) (int, importAnswer, []byte) {
	c.t.Helper()
	long := *c.http // an import of 100,000 rows under the race detector takes longer than the client's 30 s
	long.Timeout = 10 * time.Minute
	cc := *c
	cc.http = &long
	st, raw := cc.raw("POST", "/api/v1/devices:import"+query, contentType, body)
	var a importAnswer
	if st == http.StatusOK {
		if err := json.Unmarshal(raw, &a); err != nil {
			c.t.Fatalf("import answer %s: %v", raw, err)
		}
	}
	return st, a, raw
}

// indexNth is the index of the nth c in s (1-based), -1 if s has fewer.
func indexNth(s string, c byte, n int) int {
	for i := range len(s) {
		if s[i] == c {
			if n--; n == 0 {
				return i
			}
		}
	}
	return -1
}

// rssKiB reads VmRSS and VmHWM of this process (the relay runs in it).
func rssKiB(t *testing.T) (rss, peak string) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?", "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rss = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			peak = strings.TrimSpace(v)
		}
	}
	return rss, peak
}

// 100,000 NDJSON rows in one request, 10 of them bad in ten ways: 99,990 are written, the 10
// are reported with their line numbers and identities, and the devices are there (metadata
// applied to the actors: a GET shows them). A second import of the same rows (under the race
// detector, the first 10,000) updates them (revision 2). The time and this process's RSS (the relay runs in it) are logged.
func TestImportDevices100k(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 devices")
	}
	cfg := testConfig(t, nil)
	cfg.Fleet = []config.Device{{ID: "cfg-dev"}}
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	api.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	body, badLines := importRows(100_000)

	start := time.Now()
	st, a, raw := api.importBody("application/x-ndjson", "", body)
	took := time.Since(start)
	if st != http.StatusOK {
		t.Fatalf("import = %d %s", st, raw)
	}
	rss, peak := rssKiB(t)
	t.Logf("100,000 rows (%d bytes): %v; process RSS %s, peak %s", len(body), took.Round(time.Millisecond), rss, peak)
	if a.Upserted != 99_990 {
		t.Errorf("upserted %d, want 99,990", a.Upserted)
	}
	var lines []int
	for _, rj := range a.Rejected {
		lines = append(lines, rj.Line)
	}
	if !slices.Equal(lines, badLines) {
		t.Errorf("rejected lines %v, want %v", lines, badLines)
	}
	want := map[int]string{7: "imei", 1000: "colour", 2500: "not a device object", 9999: "id: required", 20000: "custom1",
		33333: `no account "nobody"`, 50000: "config file", 64000: "/tags", 80001: "longer than", 99999: "more than one"}
	for _, rj := range a.Rejected {
		if !strings.Contains(rj.Error, want[rj.Line]) {
			t.Errorf("line %d rejected with %q, want it to say %q", rj.Line, rj.Error, want[rj.Line])
		}
	}
	if a.Rejected[0].ID != "IMP000007" || a.Rejected[6].ID != "CFG-DEV" {
		t.Errorf("rejections name %q and %q, want IMP000007 and CFG-DEV", a.Rejected[0].ID, a.Rejected[6].ID)
	}
	for _, id := range []string{"imp000001", "IMP050001", "imp100000"} {
		v := api.must(http.StatusOK, "GET", "/api/v1/devices/"+id, nil)
		if field(v, "account") != "acme" || field(v, "imei") != "356938035643809" || field(v, "meta", "revision") != float64(1) {
			t.Errorf("GET %s = %v", id, v)
		}
	}
	for _, id := range []string{"IMP000007", "IMP033333", "IMP099999"} {
		api.must(http.StatusNotFound, "GET", "/api/v1/devices/"+id, nil)
	}
	if v := api.must(http.StatusOK, "GET", "/api/v1/devices/cfg-dev", nil); field(v, "meta", "source") != "config" {
		t.Errorf("the config file's device after the import: %v", v)
	}

	again, wantUpserted, wantRejected := body, 99_990, 10
	if raceEnabled { // the first 10,000 rows: the updates' path, in a third of a minute less
		again, wantUpserted, wantRejected = body[:indexNth(body, '\n', 10_000)+1], 9_996, 4
	}
	start = time.Now()
	if st, a, raw = api.importBody("application/x-ndjson", "", again); st != http.StatusOK || a.Upserted != wantUpserted || len(a.Rejected) != wantRejected {
		t.Fatalf("second import = %d, %d upserted, %d rejected: %.300s", st, a.Upserted, len(a.Rejected), raw)
	}
	t.Logf("%d of the rows again (updates): %v", wantUpserted+wantRejected, time.Since(start).Round(time.Millisecond))
	if v := api.must(http.StatusOK, "GET", "/api/v1/devices/imp000001", nil); field(v, "meta", "revision") != float64(2) {
		t.Errorf("after a second import: %v, want revision 2", v)
	}
}

// CSV (a header of device fields, ';'-separated lists, quoted fields) and an Azure IoT Hub
// export (the primary key in the field named); an account's key imports into its account
// only; the rights, media types and a header naming no device field are refused.
func TestImportDevicesForms(t *testing.T) {
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "other", "name": "Other"})
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/theirs", map[string]any{"account": "other"})
	dealer := boot.as(boot.must(http.StatusCreated, "POST", "/api/v1/keys", map[string]any{"name": "d", "account": "acme", "preset": "dealer"})["key"].(string))

	csv := "\uFEFFid,imei,tags,groups,custom2\n" +
		"csv-1,356938035643809,cold;north,g1,\"a, b\"\n" +
		"csv-2,,,,\n" +
		"csv-3,12,,,\n" + // not an IMEI
		"csv-4,356938035643809\n" + // too few fields
		"theirs,,,,\n" + // another account's device
		"\"csv-5\",,frozen,,\"multi\nline\"\n" // a line break in a free field: rejected, at its first line
	st, a, raw := dealer.importBody("text/csv", "", csv)
	if st != http.StatusOK || a.Upserted != 2 {
		t.Fatalf("CSV import = %d %s, want 2 upserted", st, raw)
	}
	var got []string
	for _, rj := range a.Rejected {
		got = append(got, fmt.Sprintf("%d %s", rj.Line, rj.ID))
	}
	if want := []string{"4 CSV-3", "5 ", "6 THEIRS", "7 CSV-5"}; !slices.Equal(got, want) {
		t.Errorf("CSV rejected %q, want %q (%s)", got, want, raw)
	}
	v := dealer.must(http.StatusOK, "GET", "/api/v1/devices/csv-1", nil)
	if fmt.Sprint(field(v, "tags")) != "[cold north]" || fmt.Sprint(field(v, "groups")) != "[g1]" || field(v, "custom2") != "a, b" || field(v, "account") != "acme" {
		t.Errorf("CSV device = %v", v)
	}
	if v := boot.must(http.StatusOK, "GET", "/api/v1/devices/theirs", nil); field(v, "account") != "other" {
		t.Errorf("another account's device after an account's import: %v", v)
	}

	azure := `{"deviceId":"hub-1","etag":"AAAA","status":"enabled","authentication":{"symmetricKey":{"primaryKey":"cHJpbWFyeS0x","secondaryKey":"c2Vjb25kYXJ5"},"type":"sas"},"capabilities":{"iotEdge":false}}
{"deviceId":"hub-2","authentication":{"symmetricKey":{"primaryKey":"cHJpbWFyeS0y"},"type":"sas"}}

{"deviceId":"hub-x509","authentication":{"x509Thumbprint":{"primaryThumbprint":"AB"},"type":"selfSigned"}}
`
	st, a, raw = dealer.importBody("application/x-ndjson", "?format=azure&key_field=custom3", azure)
	if st != http.StatusOK || a.Upserted != 2 || len(a.Rejected) != 1 || a.Rejected[0].Line != 4 || a.Rejected[0].ID != "HUB-X509" {
		t.Fatalf("Azure import = %d %s, want 2 upserted, line 4 rejected", st, raw)
	}
	if v := dealer.must(http.StatusOK, "GET", "/api/v1/devices/hub-2", nil); field(v, "custom3") != "cHJpbWFyeS0y" || field(v, "custom1") != nil {
		t.Errorf("Azure device = %v, want its primary key in custom3", v)
	}

	// Refusals: a key without devices:update, a key of another account's rows, the media types.
	reader := boot.as(boot.must(http.StatusCreated, "POST", "/api/v1/keys", map[string]any{"name": "c", "account": "acme", "rights": []string{"devices:create", "devices:read"}})["key"].(string))
	if st, _, raw := reader.importBody("application/x-ndjson", "", `{"id":"x"}`); st != http.StatusForbidden {
		t.Errorf("import without devices:update = %d %s, want 403", st, raw)
	}
	st, a, raw = dealer.importBody("application/x-ndjson", "", `{"id":"x1","account":"other"}`+"\n"+`{"id":"x2"}`)
	if st != http.StatusOK || a.Upserted != 1 || len(a.Rejected) != 1 || !strings.Contains(a.Rejected[0].Error, "/account") {
		t.Errorf("an account's import naming another account = %d %s", st, raw)
	}
	if st, _, raw := dealer.breaking().importBody("text/plain", "", "id\nx\n"); st != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain import = %d %s, want 415", st, raw)
	}
	if st, _, raw := dealer.importBody("text/csv", "", "id,colour\nx,red\n"); st != http.StatusBadRequest || !strings.Contains(string(raw), "colour") {
		t.Errorf("CSV with an unknown column = %d %s, want 400 naming it", st, raw)
	}
	if st, _, raw := dealer.breaking().importBody("text/csv", "?format=ndjson", "id\nx\n"); st != http.StatusUnsupportedMediaType {
		t.Errorf("format=ndjson as text/csv = %d %s, want 415", st, raw)
	}
}

// procStatus reads the kB values of /proc/<pid>/status fields.
func procStatus(b *testing.B, pid int, fields ...string) []float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	out := make([]float64, len(fields))
	for _, l := range strings.Split(string(raw), "\n") {
		for i, f := range fields {
			if v, ok := strings.CutPrefix(l, f+":"); ok {
				_, _ = fmt.Sscanf(strings.TrimSpace(v), "%g", &out[i])
			}
		}
	}
	return out
}

// BenchmarkImport100k imports 100,000 NDJSON devices (10 bad) in one request into the relay
// binary (no race detector) in a process of its own: seconds per import, rows/s, and the
// relay's RSS before, at its peak (VmHWM) and after, and its Go heap in use after, in MiB. The first import creates the devices,
// later ones update them. Run with -benchtime=1x for the creating import alone:
//
//	go test ./internal/relay -run '^$' -bench Import100k -benchtime=1x
func BenchmarkImport100k(b *testing.B) {
	dir := b.TempDir()
	admin := relaytest.FreeAddr(b)
	path := filepath.Join(dir, "fleetrelay.yaml")
	yaml := fmt.Sprintf("data_dir: %s\nlog:\n  level: warn\ndevices:\n  native:\n    tcp: 127.0.0.1:0\n    udp: \"\"\nadmin:\n  listen: %s\n",
		filepath.Join(dir, "data"), admin)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	p := relaytest.StartProcess(b, relaytest.Binary(b, false), admin, "-config", path)
	key, err := os.ReadFile(filepath.Join(dir, "data", "admin.key"))
	if err != nil {
		b.Fatal(err)
	}
	post := func(ct, path, body string) (int, []byte) {
		req, _ := http.NewRequest("POST", "http://"+admin+path, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	if st, raw := post("application/json", "/api/v1/accounts", `{"id":"acme","name":"Acme"}`); st != http.StatusCreated {
		b.Fatalf("create account = %d %s", st, raw)
	}
	body, _ := importRows(100_000)
	idle := procStatus(b, p.Cmd.Process.Pid, "VmRSS")[0]
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		if st, raw := post("application/x-ndjson", "/api/v1/devices:import", body); st != http.StatusOK || !strings.Contains(string(raw), `"upserted":99991`) { // CFG-DEV is not the config file's here
			b.Fatalf("import = %d %.300s", st, raw)
		}
	}
	b.StopTimer()
	s := procStatus(b, p.Cmd.Process.Pid, "VmRSS", "VmHWM", "RssAnon")
	_, metrics := httpGet(b, "http://"+admin+"/metrics")
	var heap float64
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, "go_memstats_heap_inuse_bytes "); ok {
			_, _ = fmt.Sscanf(v, "%g", &heap)
		}
	}
	b.ReportMetric(heap/(1<<20), "heap-inuse-MiB")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/import")
	b.ReportMetric(100_000*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(idle/1024, "idle-RSS-MiB")
	b.ReportMetric(s[1]/1024, "peak-RSS-MiB")
	b.ReportMetric(s[0]/1024, "after-RSS-MiB")
	b.ReportMetric(s[2]/1024, "after-anon-MiB")
}

// Tokens through the import (devices.auth: token): NDJSON and CSV set them, a row without one
// keeps the device's (a later import of other fields does not lock the device out), null
// removes it; the device with the imported token is welcomed, a wrong one refused; no token
// appears in an answer or a log line.
func TestImportDeviceTokens(t *testing.T) {
	const (
		tokA = "tok-import-a-5c0f9e1d"
		tokB = "tok-import-b-77e2a4c3"
	)
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Devices.Auth = config.AuthToken
	r, logs := startLoggedRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))

	st, a, raw := api.importBody("application/x-ndjson", "", `{"id":"tk-a","token":"`+tokA+`"}`+"\n"+
		`{"id":"tk-n","token":"gone-soon"}`+"\n"+`{"id":"tk-bad","token":5}`+"\n"+`{"id":"tk-long","token":"`+strings.Repeat("x", 256)+`"}`)
	if st != http.StatusOK || a.Upserted != 2 || len(a.Rejected) != 2 || a.Rejected[0].Line != 3 || a.Rejected[1].Line != 4 {
		t.Fatalf("NDJSON import with tokens = %d %s", st, raw)
	}
	st, a, raw = api.importBody("text/csv", "", "id,custom1,token\ntk-b,x,"+tokB+"\ntk-a,y,\n")
	if st != http.StatusOK || a.Upserted != 2 {
		t.Fatalf("CSV import with tokens = %d %s", st, raw)
	}
	// Other fields again, no token: the device keeps it; null removes tk-n's.
	if st, a, raw = api.importBody("application/x-ndjson", "", `{"id":"tk-a","custom1":"z"}`+"\n"+`{"id":"tk-n","token":null}`); st != http.StatusOK || a.Upserted != 2 {
		t.Fatalf("import without tokens = %d %s", st, raw)
	}
	for id, want := range map[string]any{"tk-a": true, "tk-b": true, "tk-n": nil} {
		if v := api.must(http.StatusOK, "GET", "/api/v1/devices/"+id, nil); field(v, "has_token") != want {
			t.Errorf("GET %s = %v, want has_token %v", id, v, want)
		}
	}
	tcp := r.DeviceTCPAddr().String()
	helloRefused(t, r, native.Hello{Serial: "tk-a", Token: tokB})
	helloRefused(t, r, native.Hello{Serial: "tk-n", Token: "gone-soon"})
	d := connect(t, tcp, native.Hello{Serial: "tk-a", Token: tokA}, 1)
	waitRecords(t, sink, "tk-a", send(t, d, "tk-a", 2))
	db := connect(t, tcp, native.Hello{Serial: "TK-B", Token: tokB}, 1)
	waitRecords(t, sink, "TK-B", send(t, db, "TK-B", 1))
	for _, tok := range []string{tokA, tokB, "gone-soon"} {
		if strings.Contains(api.seen.String(), tok) || strings.Contains(logs.String(), tok) {
			t.Errorf("token %q appears in an answer or the log", tok)
		}
	}
}
