// Package api owns fleetrelay's admin HTTP server (net/http): the health check (/healthz),
// Prometheus metrics (/metrics), the authenticated REST API under /api/v1 with its kit
// (problem+json errors, JSON bodies, cursors, [Server.HandleAPI], [Server.Audit]), its
// security (API keys, rights, Host checks against DNS rebinding, JSON-only writes, the limiter
// of failed authentications), the accounts and keys endpoints, and the OpenAPI document that
// is the API's contract (GET /api/v1/openapi.json).
//
// Other packages add their endpoints with [Server.HandleAPI]; package apitest checks every
// request and response of their tests against the document.
package api
