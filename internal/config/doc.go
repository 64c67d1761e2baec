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
// All three are pure: the same file gives the same answer anywhere. What depends on the machine the
// relay runs on (CPUs, the open-file limit) is a separate step, [Config.CheckMachine], given a
// [Machine] the caller measured; the relay runs it, and reads every secret, when it starts and in
// fleetrelay -check-config.
//
// The comments on the config struct fields are the user documentation; [ExampleYAML] is the fully
// commented reference configuration the README embeds.
package config
