package format_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

// TestSecretNeverRendered renders a device whose custom fields are all set, each in turn (and
// all at once) secret, in every format and in a template that names every custom field both as
// a whole value and inside text: a secret's value is in no body, a field that is not secret
// still is where the format shows custom fields.
func TestSecretNeverRendered(t *testing.T) {
	values := [3]string{"first-SECRET-c2lnbmluZy1rZXk=", "second-SECRET-dG9rZW4=", "third-SECRET-cGFzcw=="}
	cases := goldenCases(t)
	tmpl := `{"c1":"$$custom1","c2":"$$custom2","c3":"$$custom3","text":"k=$$custom1;$$custom2;$$custom3","$$custom1":1}`
	cases = append(cases, struct {
		name   string
		format string
		opts   format.Options
	}{"every custom field", format.NameTemplate, format.Options{Template: tmpl}})
	showsEvery := map[string]bool{"measurement": true, "every custom field": true} // the cases that render all three
	for _, secret := range []format.Secrets{format.SecretCustom1, format.SecretCustom2, format.SecretCustom3,
		format.SecretCustom1 | format.SecretCustom2 | format.SecretCustom3} {
		for _, c := range cases {
			f, err := format.Lookup(c.format, c.opts)
			if err != nil {
				t.Fatalf("Lookup(%q): %v", c.format, err)
			}
			m := &format.Message{Device: "SN1", Serial: "SN1", Custom1: values[0], Custom2: values[1], Custom3: values[2],
				Secret: secret, Seq: 1, ReceivedAt: 1795341600000, Data: []byte(`{"temperature":21.5}`)}
			b := format.NewBuilder(f)
			b.Add(m)
			body := b.Bytes()
			for i, v := range values {
				shown := bytes.Contains(body, []byte(v))
				switch {
				case secret&(1<<i) != 0 && shown:
					t.Errorf("%s with secret %v: body shows custom%d's value: %s", c.name, secret.Names(), i+1, body)
				case secret&(1<<i) == 0 && !shown && showsEvery[c.name]:
					t.Errorf("%s with secret %v: body lacks custom%d, which is not secret: %s", c.name, secret.Names(), i+1, body)
				}
			}
			if m.Custom1 != values[0] || m.Custom2 != values[1] || m.Custom3 != values[2] {
				t.Errorf("%s changed the message's custom fields", c.name)
			}
		}
	}
}

func TestSecretOf(t *testing.T) {
	f := func(name string, want format.Secrets) {
		t.Helper()
		if got := format.SecretOf(name); got != want {
			t.Errorf("SecretOf(%q) = %v, want %v", name, got, want)
		}
	}
	f("custom1", format.SecretCustom1)
	f("custom2", format.SecretCustom2)
	f("custom3", format.SecretCustom3)
	f("Custom1", 0)
	f("token", 0)
	f("", 0)
	if got, want := (format.SecretCustom1 | format.SecretCustom3).Names(), []string{"custom1", "custom3"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	if got := format.Secrets(0).Names(); got != nil {
		t.Errorf("Secrets(0).Names() = %v, want nil", got)
	}
}
