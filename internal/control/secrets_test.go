package control_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/control"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

const hubRoute = `{"name":"hub","url":"https://hub.example.com/devices/[SERIAL]/messages/events?api-version=2021-04-12",` +
	`"auth":{"azure_iot_hub":{"host":"hub.example.com","key_field":"%s"}}}`

// The secret fields are the config's devices.secret_fields and the key field of every route
// with azure_iot_hub, the config file's and the API's, following the API's route writes.
func TestSecretFieldsFollowRoutes(t *testing.T) {
	cfgHub := spec(t, strings.Replace(strings.Replace(hubRoute, "%s", "custom3", 1), `"hub"`, `"cfg-hub"`, 1))
	cfgHub.Resolve(&config.Default().Delivery)
	p := buildWith(t, t.TempDir(), func(o *control.Options) { o.SecretFields = []string{"custom2"} }, cfgHub)
	p.startStore(t)
	ctx := context.Background()
	want := func(s format.Secrets) {
		t.Helper()
		if got := p.c.SecretFields(); got != s {
			t.Errorf("SecretFields() = %v, want %v", got.Names(), s.Names())
		}
		if got := p.sys.Secrets(); got != s {
			t.Errorf("the actors' Secrets() = %v, want %v", got.Names(), s.Names())
		}
	}
	want(format.SecretCustom2 | format.SecretCustom3)
	if _, _, err := p.c.WriteRoute(ctx, control.RouteWrite{Body: []byte(strings.Replace(hubRoute, "%s", "custom1", 1)), Create: true}); err != nil {
		t.Fatal(err)
	}
	want(format.SecretCustom1 | format.SecretCustom2 | format.SecretCustom3)
	// Another key field through a merge patch: custom1 is no longer a key field.
	if _, _, err := p.c.WriteRoute(ctx, control.RouteWrite{Name: "hub", Patch: true,
		Body: []byte(`{"auth":{"azure_iot_hub":{"key_field":"custom2"}}}`)}); err != nil {
		t.Fatal(err)
	}
	want(format.SecretCustom2 | format.SecretCustom3)
	if _, _, err := p.c.WriteRoute(ctx, control.RouteWrite{Name: "hub", Patch: true,
		Body: []byte(`{"auth":{"azure_iot_hub":{"key_field":"custom1"}}}`)}); err != nil {
		t.Fatal(err)
	}
	want(format.SecretCustom1 | format.SecretCustom2 | format.SecretCustom3)
	if _, err := p.c.DeleteRoute(ctx, "hub", "", true); err != nil {
		t.Fatal(err)
	}
	want(format.SecretCustom2 | format.SecretCustom3)
	// A reloaded config without its IoT Hub route: only devices.secret_fields is left.
	if _, err := p.c.Reload(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	want(format.SecretCustom2)
}

// A secret field is write-only, as a device's token is: never in a view, which says it is set;
// a PUT without it keeps it, "" or null clears it; a merge patch likewise.
func TestSecretFieldWriteRules(t *testing.T) {
	p := buildWith(t, t.TempDir(), func(o *control.Options) { o.SecretFields = []string{"custom1", "custom3"} })
	p.startStore(t)
	ctx := context.Background()
	const key = "c2VjcmV0LWtleQ=="
	write := func(patch bool, body string) control.DeviceView {
		t.Helper()
		v, _, err := p.c.WriteDevice(ctx, control.DeviceWrite{ID: "dev1", Body: []byte(body), Patch: patch})
		if err != nil {
			t.Fatalf("write %s = %v", body, err)
		}
		return v
	}
	// check verifies what is stored and every view of the device (the write's answer, Device,
	// Devices): no secret's value, the secret fields set listed, custom2 (not secret) shown.
	check := func(answer control.DeviceView, custom1, custom2, custom3 string) {
		t.Helper()
		d, ok := p.reg.Device("DEV1")
		if !ok || d.Custom1 != custom1 || d.Custom2 != custom2 || d.Custom3 != custom3 {
			t.Fatalf("stored %+v, want custom1 %q, custom2 %q, custom3 %q", d, custom1, custom2, custom3)
		}
		var set []string
		if custom1 != "" {
			set = append(set, "custom1")
		}
		if custom3 != "" {
			set = append(set, "custom3")
		}
		got, _ := p.c.Device("dev1")
		page, _ := p.c.Devices(registry.ListOptions{Limit: 10})
		if len(page) != 1 {
			t.Fatalf("Devices() = %d devices, want 1", len(page))
		}
		for _, v := range []control.DeviceView{answer, got, page[0]} {
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), key) || strings.Contains(string(b), "third") || v.Custom1 != "" || v.Custom3 != "" {
				t.Errorf("view %s shows a secret field", b)
			}
			if v.Custom2 != custom2 || !slices.Equal(v.SecretFieldsSet, set) {
				t.Errorf("view %s: want custom2 %q and secret_fields_set %q", b, custom2, set)
			}
		}
	}
	check(write(false, `{"custom1":"`+key+`","custom2":"plant-7","custom3":"third"}`), key, "plant-7", "third")
	// PUT without the secret fields keeps them; custom2, not secret, is replaced as usual.
	check(write(false, `{"tags":["eu"]}`), key, "", "third")
	check(write(false, `{"custom1":"`+key+`2","custom2":"x"}`), key+"2", "x", "third")
	check(write(false, `{"custom1":null,"custom2":"x"}`), "", "x", "third")
	check(write(false, `{"custom1":"`+key+`","custom3":""}`), key, "", "")
	// A merge patch: what it does not name stays, null clears.
	check(write(true, `{"custom2":"y","custom3":"third"}`), key, "y", "third")
	check(write(true, `{"tags":["us"]}`), key, "y", "third")
	check(write(true, `{"custom3":null}`), key, "y", "")
	check(write(true, `{"custom1":"`+key+`3"}`), key+"3", "y", "")
	if d, _ := p.reg.Device("DEV1"); !slices.Equal(d.Tags, []string{"us"}) {
		t.Errorf("tags %q, want [us]", d.Tags)
	}
}

// An import row that does not name a secret field keeps the device's value, also after an
// earlier row of the same chunk changed it; a row that names it sets or clears it; a field
// that is not secret is the row's, as in a PUT.
func TestSecretFieldImport(t *testing.T) {
	p := buildWith(t, t.TempDir(), func(o *control.Options) { o.SecretFields = []string{"custom1"} })
	p.startStore(t)
	ctx := context.Background()
	all, none := [3]bool{true, true, true}, [3]bool{}
	importRows := func(rows ...func(im *control.Import, line int) error) {
		t.Helper()
		im := p.c.NewImport("")
		for i, add := range rows {
			if err := add(im, i+1); err != nil {
				t.Fatal(err)
			}
		}
		if n, rej, err := im.Finish(ctx); err != nil || n != len(rows) || len(rej) != 0 {
			t.Fatalf("import = %d, %v, %v; want %d rows written", n, rej, err, len(rows))
		}
	}
	row := func(id, c1, c2 string, named [3]bool) func(*control.Import, int) error {
		return func(im *control.Import, line int) error {
			return im.AddNaming(ctx, line, config.Device{ID: id, Custom1: c1, Custom2: c2}, nil, named)
		}
	}
	stored := func(id, c1, c2 string) {
		t.Helper()
		if d, _ := p.reg.Device(id); d.Custom1 != c1 || d.Custom2 != c2 {
			t.Errorf("%s: custom1 %q, custom2 %q; want %q, %q", id, d.Custom1, d.Custom2, c1, c2)
		}
	}
	importRows(row("A", "key-a", "x", all), row("B", "key-b", "y", all))
	stored("A", "key-a", "x")
	importRows(row("A", "", "", none), row("B", "key-b2", "", all), row("B", "", "z", [3]bool{false, true, false}))
	stored("A", "key-a", "")
	stored("B", "key-b2", "z")
	importRows(row("A", "", "", all))
	stored("A", "", "")
	// Add names every field, as it always did.
	im := p.c.NewImport("")
	if err := im.Add(ctx, 1, config.Device{ID: "B"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := im.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	stored("B", "", "")
}
