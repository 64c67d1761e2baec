package api_test

import (
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/api/apitest"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
)

// The document loads and validates (OpenAPI 3.1), and every endpoint the server serves is in
// it, with the same method and path.
func TestOpenAPIDocument(t *testing.T) {
	doc, _, err := apitest.Document()
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	s := api.New("127.0.0.1:0", nil, nil, nil)
	s.RegisterAccounts(nil)
	s.RegisterKeys(nil)
	s.HandleImport(nil)
	s.HandleDeviceLinks(nil, nil, api.LinkOptions{})
	deadletter.Register(s, nil, nil, nil, slog.New(slog.DiscardHandler))
	patterns := s.Patterns()
	for _, want := range []string{"GET /healthz", "GET /api/v1/openapi.json", "POST /api/v1/keys/{id}/rotate",
		"DELETE /api/v1/routes/{name}/dead-letters", "POST /api/v1/devices:import", "POST /api/v1/devicelink/{device}"} {
		if !slices.Contains(patterns, want) {
			t.Errorf("the server does not serve %s: %v", want, patterns)
		}
	}
	for _, p := range patterns {
		method, path, _ := strings.Cut(p, " ")
		item := doc.Paths.Find(path)
		if item == nil || item.GetOperation(method) == nil {
			t.Errorf("the document does not describe %s", p)
		}
	}
}

// The document's route schema has exactly the config file's route keys, recursively: the API
// takes routes in the config file's schema.
func TestOpenAPIRouteSchema(t *testing.T) {
	doc, _, err := apitest.Document()
	if err != nil {
		t.Fatal(err)
	}
	var compare func(path string, typ reflect.Type, s *openapi3.Schema)
	compare = func(path string, typ reflect.Type, s *openapi3.Schema) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[config.Duration]() {
			return
		}
		want := map[string]reflect.Type{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			want[name] = f.Type
		}
		for name, ft := range want {
			p, ok := s.Properties[name]
			if !ok {
				t.Errorf("route schema %s lacks %q", path, name)
				continue
			}
			compare(path+"/"+name, ft, p.Value)
		}
		for name := range s.Properties {
			if _, ok := want[name]; !ok {
				t.Errorf("route schema %s has %q, which config.Route does not", path, name)
			}
		}
	}
	compare("", reflect.TypeFor[config.Route](), doc.Components.Schemas["Route"].Value)
}
