// Package apitest checks the admin API against its contract in tests: its HTTP client validates
// every request it sends and every response it gets against the OpenAPI document
// (api.OpenAPI), and fails the test on a mismatch, so the document cannot drift from the
// handlers.
package apitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/fleetrelay/fleetrelay/internal/api"
)

var (
	loadOnce sync.Once
	doc      *openapi3.T
	router   routers.Router
	loadErr  error
)

// Document loads and validates api.OpenAPI (once per process).
func Document() (*openapi3.T, routers.Router, error) {
	loadOnce.Do(func() {
		l := openapi3.NewLoader()
		doc, loadErr = l.LoadFromData(api.OpenAPI)
		if loadErr != nil {
			loadErr = fmt.Errorf("load the OpenAPI document: %w", loadErr)
			return
		}
		if loadErr = doc.Validate(context.Background()); loadErr != nil {
			loadErr = fmt.Errorf("validate the OpenAPI document: %w", loadErr)
			return
		}
		router, loadErr = legacy.NewRouter(doc)
	})
	return doc, router, loadErr
}

// Client returns an HTTP client whose every request and response is validated against the
// OpenAPI document; a mismatch fails t (Errorf: the test goes on and reports them all). An
// operation the document does not have is a mismatch too.
func Client(t testing.TB) *http.Client {
	t.Helper()
	_, rt, err := Document()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 30 * time.Second, Transport: &checker{t: t, next: tr, router: rt}}
}

type invalidKey struct{}

// Invalid marks r as a request that deliberately breaks the document (a test of the server's
// own checks): it is sent unchecked, and its response is still checked.
func Invalid(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), invalidKey{}, true))
}

// checker is the validating RoundTripper.
type checker struct {
	t      testing.TB
	next   http.RoundTripper
	router routers.Router
}

func (c *checker) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	what := req.Method + " " + req.URL.RequestURI()
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		c.t.Errorf("OpenAPI: %s: no such operation in the document: %v", what, err)
		return c.next.RoundTrip(req)
	}
	// Validate a copy: the validator reads the body.
	vreq := req.Clone(req.Context())
	vreq.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	if deliberate, _ := req.Context().Value(invalidKey{}).(bool); deliberate {
		// the request breaks the document on purpose
	} else if err := openapi3filter.ValidateRequest(req.Context(), in); err != nil {
		c.t.Errorf("OpenAPI: request %s does not match the document: %v", what, err)
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	rb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	out.SetBodyBytes(rb)
	if req.Method != http.MethodHead {
		if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
			c.t.Errorf("OpenAPI: response %d to %s does not match the document: %v\nbody: %s", resp.StatusCode, what, err, rb)
		}
	}
	return resp, nil
}
