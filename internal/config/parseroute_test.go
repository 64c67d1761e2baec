package config_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

func TestParseRoute(t *testing.T) {
	r, err := config.ParseRoute([]byte(`{"name":"a","url":"https://example.com/x","batch":{"linger":"1s"},
		"sign":{"hmac":{"key":"k"}},"retry":{"max_attempts":3}}`))
	if err != nil {
		t.Fatalf("ParseRoute: %v", err)
	}
	if r.Name != "a" || r.Batch.MaxMessages != 500 || time.Duration(r.Batch.Linger) != time.Second || r.Method != "POST" {
		t.Errorf("ParseRoute = %+v, want the defaults under the body's values", r)
	}
	if r.Sign.HMAC.Header != "hash-key" || r.Sign.HMAC.Key != config.SecretValue("k") {
		t.Errorf("sign.hmac = %+v, want its defaults and the literal key", r.Sign.HMAC)
	}
	if r.Timeout != 0 || r.Retry.InitialBackoff != 0 {
		t.Errorf("ParseRoute inherited from delivery: timeout %v, retry %+v", r.Timeout, r.Retry)
	}
	d := config.Default().Delivery
	r.Resolve(&d)
	if r.Timeout != d.Timeout || r.Retry.InitialBackoff != d.Retry.InitialBackoff || r.Retry.MaxAttempts != 3 {
		t.Errorf("Resolve: timeout %v, retry %+v", r.Timeout, r.Retry)
	}
	if got := r.Check("", &d); len(got) != 0 {
		t.Errorf("Check of a resolved route = %q, want none", got)
	}

	f := func(body string, want ...string) {
		t.Helper()
		_, err := config.ParseRoute([]byte(body))
		var ve *config.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("ParseRoute(%q) = %v, want a *ValidationError", body, err)
		}
		if !slices.Equal(ve.Problems, want) {
			t.Errorf("ParseRoute(%q) problems = %q, want %q", body, ve.Problems, want)
		}
	}
	f(`{"name":"a","batch":{"max_messages":"x","linger":5},"nmae":1}`,
		`batch.max_messages: expected an integer, got "x"`,
		`batch.linger: invalid duration "5": want a number with a unit (ms, s, m, h), e.g. 10s`,
		`nmae: unknown key; did you mean name?`)
	f(`[1]`, `expected a mapping, got a list`)
	f(``, `nothing given; want a route`)
}

func TestParseDevice(t *testing.T) {
	d, err := config.ParseDevice([]byte(`{"id":"abc","imei":"356938035643809","tags":[],"custom1":"x"}`))
	if err != nil || d.ID != "abc" || d.IMEI != "356938035643809" || d.Tags != nil || d.Custom1 != "x" {
		t.Fatalf("ParseDevice = %+v, %v", d, err)
	}
	_, err = config.ParseDevice([]byte(`{"tags":"a","custom9":1}`))
	var ve *config.ValidationError
	if !errors.As(err, &ve) || !slices.Equal(ve.Problems, []string{"tags: expected a list, got \"a\"", "custom9: unknown key; did you mean custom1?"}) {
		t.Errorf("ParseDevice of a bad body = %v", err)
	}
	if got := (&config.Device{ID: "x", IMEI: "1", Custom2: "a\nb"}).Check(""); !slices.Equal(got, []string{`.imei: "1" is not an IMEI (15 digits)`, ".custom2: must not contain line breaks or NUL"}) {
		t.Errorf("Check = %q", got)
	}
}
