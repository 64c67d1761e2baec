// Package config owns fleetrelay's configuration: the types that describe it, their defaults, strict
// YAML loading and validation.
//
// Loading follows three steps, in this order and nowhere else:
//
//  1. Strict decode. The YAML is checked against the types before anything is set: an unknown key, a
//     value of the wrong kind, or a size or duration that does not parse is a problem reported with its
//     dotted path and line ("devices.nativ: unknown key (line 3); did you mean native?").
//  2. One defaults pass. Decoding starts from [Default] (and [DefaultRoute] for each route), so a key that
//     is absent, or present without a value, keeps its default; [Config.Resolve] then fills what routes
//     inherit from delivery (timeout, retry).
//  3. One [Config.Validate], which returns every problem at once as a [*ValidationError], each in the form
//     "routes[2].batch.max_bytes: must be > 0".
//
// The comments on the config struct fields are the user documentation; [ExampleYAML] is the fully
// commented reference configuration the README embeds.
package config
