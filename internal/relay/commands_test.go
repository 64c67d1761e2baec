package relay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/api/apitest"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// taskEvents is a sensoro endpoint that keeps the task events it receives: the result codes of
// each device's task, in arrival order.
type taskEvents struct {
	mu     sync.Mutex
	events map[string][]int // "<sn>/<taskId>" → result codes
	srv    *httptest.Server
}

func newTaskEvents(t *testing.T) *taskEvents {
	te := &taskEvents{events: map[string][]int{}}
	te.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var p struct {
			SN         string  `json:"sn"`
			Type       string  `json:"type"`
			TaskID     *string `json:"taskId"`
			ResultCode *int    `json:"resultCode"`
		}
		if err := json.Unmarshal(b, &p); err != nil || p.Type != "event" || p.TaskID == nil || p.ResultCode == nil {
			http.Error(w, fmt.Sprintf("not a task event: %s", b), http.StatusBadRequest)
			return
		}
		te.mu.Lock()
		k := p.SN + "/" + *p.TaskID
		te.events[k] = append(te.events[k], *p.ResultCode)
		te.mu.Unlock()
	}))
	t.Cleanup(te.srv.Close)
	return te
}

func (te *taskEvents) codes(sn string, task uint64) []int {
	te.mu.Lock()
	defer te.mu.Unlock()
	return append([]int(nil), te.events[fmt.Sprintf("%s/%d", sn, task)]...)
}

// commandsConfig is a relay whose device port stays across restarts, with a sensoro route to te.
func commandsConfig(t *testing.T, te *taskEvents) *config.Config {
	cfg := testConfig(t, nil)
	cfg.Devices.Native.TCP = relaytest.FreeAddr(t)
	rt := config.DefaultRoute()
	rt.Name, rt.URL, rt.Format, rt.AppID, rt.DeviceType, rt.Body = "events", te.srv.URL+"/sensoro", "sensoro", "123456", "node", config.BodyObject
	rt.Batch.Linger = config.Duration(2 * time.Millisecond)
	cfg.Routes = append(cfg.Routes, rt)
	return cfg
}

// apiTask is a task as the API shows it.
type apiTask struct {
	Device  string          `json:"device"`
	ID      uint64          `json:"task"`
	State   string          `json:"state"`
	Sends   int             `json:"sends"`
	Code    *int            `json:"code"`
	Result  json.RawMessage `json:"result"`
	Payload json.RawMessage `json:"payload"`
}

// tasksOf lists every task of dev through the API, a page of 4 at a time.
func tasksOf(api *apiClient, dev string) []apiTask {
	api.t.Helper()
	var out []apiTask
	cursor := ""
	for {
		path := "/api/v1/devices/" + dev + "/commands?limit=4"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		status, raw := api.raw("GET", path, "", nil)
		if status != http.StatusOK {
			api.t.Fatalf("GET %s = %d %s", path, status, raw)
		}
		var page struct {
			Data []apiTask `json:"data"`
			Next string    `json:"next_cursor"`
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			api.t.Fatal(err)
		}
		out = append(out, page.Data...)
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
}

// results records the RESULTs loadgen's devices write: the code of each task's first execution,
// and how often each task was answered.
type results struct {
	mu      sync.Mutex
	code    map[string]uint8
	answers map[string]int
}

func (rs *results) on(dev string) func(task uint64, code uint8, repeat bool) {
	return func(task uint64, code uint8, repeat bool) {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		k := fmt.Sprintf("%s/%d", dev, task)
		if !repeat {
			rs.code[k] = code
		}
		rs.answers[k]++
	}
}

// The first acceptance point at a size that runs in seconds, through the real relay,
// real sockets and the real admin API: 1,000 commands to 100 devices. 45 devices are connected
// when the first 500 are queued, one reads its COMMANDs and drops the connection without an
// answer, the others are offline; the relay restarts in the middle (queued tasks survive, ids
// go on); the second 500 are queued, then 44 offline devices connect and ten never do. Every
// task of a device that came ends succeeded or failed as the device answered, with its result
// data, and its RESULT reached the route as a task event with the API's task id; the tasks of
// the ten that never came expire with their short ttl. Each device's ids are 1..10.
func TestCommandsEndToEnd(t *testing.T) {
	te := newTaskEvents(t)
	cfg := commandsConfig(t, te)
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	addr := cfg.Devices.Native.TCP

	// 100 devices × 2 rounds × 5 = 1,000 commands. conn devices are connected from the start,
	// device conn reads its COMMANDs and drops the connection, the devices from never on never come.
	const devices, perRound = 100, 5
	const conn, never = 45, 90
	name := func(i int) string { return fmt.Sprintf("CMD%03d", i) }
	for i := range devices {
		api.must(http.StatusCreated, "PUT", "/api/v1/devices/"+name(i), map[string]any{"tags": []string{"cmd"}})
	}
	rs := &results{code: map[string]uint8{}, answers: map[string]int{}}
	loadDevice := func(i int) *loadgen.Device {
		d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: addr, Hello: native.Hello{Serial: name(i)},
			Commands: loadgen.CommandConfig{Delay: time.Millisecond, FailRatio: 0.2, OnResult: rs.on(name(i))}}, 1)
		t.Cleanup(d.Close)
		return d
	}
	dial := func(d *loadgen.Device) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ttl := func(i int) string {
		if i >= never {
			return "1s" // never connects
		}
		return "10m"
	}
	queue := func(round int) {
		t.Helper()
		for i := range devices {
			for j := range perRound {
				v := api.must(http.StatusCreated, "POST", "/api/v1/devices/"+name(i)+"/commands",
					map[string]any{"payload": map[string]any{"op": "setInterval", "interval": 60 + j}, "ttl": ttl(i)})
				if want := uint64(round*perRound + j + 1); v["task"] != float64(want) || v["state"] != "queued" {
					t.Fatalf("task of %s = %v, want id %d queued", name(i), v, want)
				}
			}
		}
	}

	loads := make([]*loadgen.Device, devices)
	for i := range conn {
		loads[i] = loadDevice(i)
		dial(loads[i])
	}
	// The dropping device (conn) reads its COMMANDs and leaves without answering.
	raw := rawConn(t, addr)
	if _, err := raw.Write(native.AppendHello(nil, &native.Hello{Serial: name(conn)})); err != nil {
		t.Fatal(err)
	}
	if typ, body := readOne(t, raw); typ != native.TypeWelcome {
		t.Fatalf("answer to HELLO: %#x %q", typ, body)
	}
	queue(0)
	for j := range perRound {
		typ, body := readOne(t, raw)
		if typ != native.TypeCommand || binary.BigEndian.Uint64(body) != uint64(j+1) {
			t.Fatalf("frame %d to the dropping device (conn): %#x % x, want COMMAND of task %d", j, typ, body, j+1)
		}
		if want := fmt.Sprintf(`{"interval":%d,"op":"setInterval"}`, 60+j); string(body[8:]) != want {
			t.Errorf("COMMAND %d payload %s, want %s", j+1, body[8:], want)
		}
	}
	raw.Close()
	for _, tk := range tasksOf(api, name(conn)) {
		if tk.State != "sent" || tk.Sends != 1 {
			t.Errorf("the dropping device (conn) task %d after the dropped connection: %s, sends %d; want sent once", tk.ID, tk.State, tk.Sends)
		}
	}
	// The connected devices answer theirs.
	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		for i := range conn {
			for _, tk := range tasksOf(api, name(i)) {
				if tk.State != "succeeded" && tk.State != "failed" {
					return fmt.Errorf("%s task %d is %s", name(i), tk.ID, tk.State)
				}
			}
		}
		return nil
	})

	// Restart: queued and sent tasks survive, ids go on.
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	r = startRelay(t, cfg)
	api = newAPI(t, r, api.key)
	for _, tk := range tasksOf(api, name(conn+3)) {
		if tk.State != "queued" {
			t.Errorf("CMD conn+3 task %d after the restart: %s, want queued", tk.ID, tk.State)
		}
	}
	if got := tasksOf(api, name(conn)); len(got) != perRound || got[0].State != "sent" {
		t.Errorf("the dropping device (conn)'s tasks after the restart: %+v, want %d, sent", got, perRound)
	}
	queue(1)
	for i := range conn {
		dial(loads[i])
	}
	for i := conn; i < never; i++ {
		loads[i] = loadDevice(i)
		dial(loads[i])
	}

	checkfor.Check(t, 30*time.Second, 20*time.Millisecond, func() error {
		for i := range devices {
			for _, tk := range tasksOf(api, name(i)) {
				want := "succeeded or failed"
				ok := tk.State == "succeeded" || tk.State == "failed"
				if i >= never {
					want, ok = "expired", tk.State == "expired"
				}
				if !ok {
					return fmt.Errorf("%s task %d is %s, want %s", name(i), tk.ID, tk.State, want)
				}
			}
		}
		return nil
	})
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for i := range devices {
		got := tasksOf(api, name(i))
		if len(got) != 2*perRound {
			t.Fatalf("%s has %d tasks, want %d", name(i), len(got), 2*perRound)
		}
		for j, tk := range got {
			if tk.ID != uint64(j+1) || tk.Device != name(i) {
				t.Errorf("%s task %d is %s/%d: ids must be 1..%d", name(i), j+1, tk.Device, tk.ID, 2*perRound)
			}
			k := fmt.Sprintf("%s/%d", name(i), tk.ID)
			code, answered := rs.code[k]
			if i >= never {
				if answered || tk.Code != nil || len(te.codes(name(i), tk.ID)) != 0 {
					t.Errorf("%s: expired, yet answered (%v) or with a code or an event", k, answered)
				}
				continue
			}
			wantState := map[uint8]string{0: "succeeded", 1: "failed"}[code]
			if !answered || tk.State != wantState || tk.Code == nil || *tk.Code != int(code) {
				t.Errorf("%s = %s code %v; the device answered %v with code %d", k, tk.State, tk.Code, answered, code)
			}
			if want := fmt.Sprintf(`{"task":%d,"repeat":false}`, tk.ID); i != conn && string(tk.Result) != want {
				t.Errorf("%s result %s, want %s", k, tk.Result, want)
			}
		}
	}
	// the dropping device (conn)'s first five tasks went to the dropped connection and again to the new one.
	for _, tk := range tasksOf(api, name(conn))[:perRound] {
		if tk.Sends != 2 {
			t.Errorf("the dropping device (conn) task %d was sent %d times, want 2 (the dropped connection, then the next)", tk.ID, tk.Sends)
		}
	}
	// Every RESULT reached the route as a task event with the API's task id and the code.
	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		for i := range never {
			for task := uint64(1); task <= 2*perRound; task++ {
				k := fmt.Sprintf("%s/%d", name(i), task)
				codes := te.codes(name(i), task)
				if len(codes) == 0 {
					return fmt.Errorf("no task event for %s", k)
				}
				for _, c := range codes {
					if c != int(rs.code[k]) {
						return fmt.Errorf("task event of %s with code %d, the device answered %d", k, c, rs.code[k])
					}
				}
			}
		}
		return nil
	})
}

// The commands endpoints' rights and validation: an account's key commands its account's devices
// only (another account's device, or one not in the registry, is 404); commands:read does not
// create; a payload that is not an object or a bad ttl (beyond commands.max_ttl too) is 422; an
// unknown task is 404; a task without a ttl gets commands.default_ttl.
func TestCommandsAPI(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Commands.DefaultTTL, cfg.Commands.MaxTTL = config.Duration(30*time.Minute), config.Duration(2*time.Hour)
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "other", "name": "Other"})
	key := func(body map[string]any) string {
		t.Helper()
		return boot.must(http.StatusCreated, "POST", "/api/v1/keys", body)["key"].(string)
	}
	acme := boot.as(key(map[string]any{"name": "acme dealer", "account": "acme", "preset": "dealer"}))
	other := boot.as(key(map[string]any{"name": "other dealer", "account": "other", "preset": "dealer"}))
	reader := boot.as(key(map[string]any{"name": "acme reader", "account": "acme", "rights": []string{"commands:read"}}))
	acme.must(http.StatusCreated, "PUT", "/api/v1/devices/d-acme", map[string]any{"tags": []string{"t"}})

	cmd := map[string]any{"payload": map[string]any{"op": "reboot"}, "ttl": "1h"}
	other.must(http.StatusNotFound, "POST", "/api/v1/devices/d-acme/commands", cmd)
	other.must(http.StatusNotFound, "GET", "/api/v1/devices/d-acme/commands", nil)
	reader.must(http.StatusForbidden, "POST", "/api/v1/devices/d-acme/commands", cmd)
	acme.must(http.StatusNotFound, "POST", "/api/v1/devices/nobody/commands", cmd)
	v := acme.must(http.StatusCreated, "POST", "/api/v1/devices/D-ACME/commands", cmd)
	if v["task"] != float64(1) || v["state"] != "queued" || v["device"] != "D-ACME" {
		t.Errorf("created %v, want task 1 of D-ACME, queued", v)
	}
	got := reader.must(http.StatusOK, "GET", "/api/v1/devices/d-acme/commands/1", nil)
	if got["state"] != "queued" || field(got, "payload", "op") != "reboot" || got["sends"] != float64(0) {
		t.Errorf("GET task 1 = %v", got)
	}
	other.must(http.StatusNotFound, "GET", "/api/v1/devices/d-acme/commands/1", nil)
	reader.must(http.StatusNotFound, "GET", "/api/v1/devices/d-acme/commands/2", nil)
	for _, c := range []struct {
		body any
		ptr  string
	}{
		{map[string]any{"payload": []int{1}}, "/payload"},
		{map[string]any{"payload": map[string]any{}, "ttl": "soon"}, "/ttl"},
		{map[string]any{"payload": map[string]any{}, "ttl": "-1s"}, "/ttl"},
		{map[string]any{"payload": map[string]any{}, "ttl": "9000h"}, "/ttl"},
		{map[string]any{"payload": map[string]any{}, "ttl": "3h"}, "/ttl"},
	} {
		st, p := acme.breaking().do("POST", "/api/v1/devices/d-acme/commands", c.body)
		if st != http.StatusUnprocessableEntity || fmt.Sprint(pointers(p)) != "["+c.ptr+"]" {
			t.Errorf("POST %v = %d %v, want 422 at %s", c.body, st, p, c.ptr)
		}
	}
	v = acme.must(http.StatusCreated, "POST", "/api/v1/devices/d-acme/commands", map[string]any{"payload": map[string]any{}})
	created, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(v["created_at"]))
	expires, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(v["expires_at"]))
	if expires.Sub(created) != 30*time.Minute {
		t.Errorf("a task without a ttl = %v, want it to expire commands.default_ttl (30m) after its creation", v)
	}
	if got := tasksOf(acme, "d-acme"); len(got) != 2 {
		t.Errorf("d-acme has %d tasks, want 2 (the invalid ones are not stored)", len(got))
	}
}

// Finished tasks are deleted once commands.retention passed: a task that expired (ttl 1ms) is
// soon answered 404 like a task never created, the metrics count it, and its id is not given
// again, before or after a restart.
func TestCommandsRetention(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Commands.Retention = config.Duration(time.Millisecond)
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/ret-1", map[string]any{})
	post := func(api *apiClient, want uint64) {
		t.Helper()
		v := api.must(http.StatusCreated, "POST", "/api/v1/devices/ret-1/commands", map[string]any{"payload": map[string]any{}, "ttl": "1ms"})
		if v["task"] != float64(want) {
			t.Errorf("created task %v, want %d", v["task"], want)
		}
	}
	post(api, 1)
	_, unknown := api.breaking().do("GET", "/api/v1/devices/ret-1/commands/9", nil)
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		st, p := api.breaking().do("GET", "/api/v1/devices/ret-1/commands/1", nil)
		if st != http.StatusNotFound {
			return fmt.Errorf("GET task 1 = %d %v, want 404 once it expired and its retention passed", st, p)
		}
		if p["detail"] != strings.Replace(fmt.Sprint(unknown["detail"]), `"9"`, `"1"`, 1) || p["status"] != unknown["status"] {
			t.Errorf("GET of a pruned task = %v, want the problem of an unknown one, %v", p, unknown)
		}
		return nil
	})
	if _, body := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics"); !strings.Contains(body, "\nfleetrelay_tasks_pruned_total 1\n") {
		t.Errorf("/metrics does not count the pruned task:\n%s", body)
	}
	post(api, 2)
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	r = startRelay(t, cfg)
	api = newAPI(t, r, api.key)
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if got := tasksOf(api, "ret-1"); len(got) != 0 {
			return fmt.Errorf("ret-1 has %d tasks, want none once task 2 expired and was pruned", len(got))
		}
		return nil
	})
	post(api, 3)
}

// A kill -9 of the relay process while commands flow loses no task: every task the API answered
// is there after the restart, ids go on above every answered one, and the tasks of the devices
// that reconnect are completed.
func TestCommandsKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	dir := t.TempDir()
	tcp, admin := relaytest.FreeAddr(t), relaytest.FreeAddr(t)
	const key = "fr_commands-kill9-test-key-0123456789"
	cfgPath := filepath.Join(dir, "fleetrelay.yaml")
	yaml := fmt.Sprintf("data_dir: %s\nlog:\n  level: warn\ndevices:\n  native:\n    tcp: %s\n    udp: \"\"\nadmin:\n  listen: %s\n  bootstrap_key: %s\n",
		filepath.Join(dir, "data"), tcp, admin, key)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := startProcess(t, cfgPath, admin)
	api := &apiClient{t: t, http: apitest.Client(t), base: "http://" + admin, key: key, seen: &bytes.Buffer{}}

	const devices, commands = 10, 100
	name := func(i int) string { return fmt.Sprintf("K9D%02d", i) }
	for i := range devices {
		api.must(http.StatusCreated, "PUT", "/api/v1/devices/"+name(i), map[string]any{})
	}
	devs := make([]*loadgen.Device, devices/2) // the others stay offline
	dial := func(d *loadgen.Device) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range devs {
		devs[i] = loadgen.NewDevice(loadgen.DeviceConfig{Addr: tcp, Hello: native.Hello{Serial: name(i)},
			Commands: loadgen.CommandConfig{Delay: 5 * time.Millisecond}}, 1)
		t.Cleanup(devs[i].Close)
		dial(devs[i])
	}
	answered := map[string][]uint64{}
	for n := range commands {
		dev := name(n % devices)
		v := api.must(http.StatusCreated, "POST", "/api/v1/devices/"+dev+"/commands", map[string]any{"payload": map[string]any{"n": n}})
		answered[dev] = append(answered[dev], uint64(v["task"].(float64)))
	}
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = proc.Wait()
	startProcess(t, cfgPath, admin)
	for i := range devs {
		dial(devs[i])
	}
	for i := range devices {
		dev := name(i)
		v := api.must(http.StatusCreated, "POST", "/api/v1/devices/"+dev+"/commands", map[string]any{"payload": map[string]any{"after": true}})
		if id := uint64(v["task"].(float64)); id <= slices.Max(answered[dev]) {
			t.Errorf("%s: task %d after the restart, want above %v", dev, id, answered[dev])
		}
	}
	checkfor.Check(t, 30*time.Second, 20*time.Millisecond, func() error {
		for i := range devices {
			got := map[uint64]string{}
			for _, tk := range tasksOf(api, name(i)) {
				got[tk.ID] = tk.State
			}
			for _, id := range answered[name(i)] {
				st, ok := got[id]
				switch {
				case !ok:
					t.Fatalf("%s task %d, answered before the kill, is lost", name(i), id)
				case i < devices/2 && st != "succeeded":
					return fmt.Errorf("%s task %d is %s, want succeeded", name(i), id, st)
				case i >= devices/2 && st != "queued":
					t.Fatalf("%s (offline) task %d is %s, want queued", name(i), id, st)
				}
			}
		}
		return nil
	})
}
