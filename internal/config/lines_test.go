package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// Every problem Parse reports names the line at fault: syntax errors (which yaml.v3 reports at the
// enclosing construct, or at none), values of the wrong type, unknown keys and validation
// problems, at every depth, in block and flow style, with tabs, CRLF line ends, anchors and
// merges. want is every problem, path first where there is one, joined with " | ".
func TestProblemLines(t *testing.T) {
	const route = "routes:\n  - name: a\n    url: https://x.example/in\n" // lines 1-3
	for _, c := range []struct {
		name, in, want string
	}{
		// Syntax.
		{"flow list left open", "devices:\n  native:\n    tcp: [a\n", "YAML syntax: did not find expected ',' or ']' (line 3)"},
		{"flow list open after a closed one", "fleet: [{id: a},\n  {id: b}]\nlog: [x\n", "YAML syntax: did not find expected ',' or ']' (line 3)"},
		{"flow mapping left open", "devices:\n  native: {tcp: x\n", "YAML syntax: did not find expected ',' or '}' (line 2)"},
		{"quote left open", "data_dir: ./data\nlog:\n  level: 'info\n", "YAML syntax: found unexpected end of stream (line 3)"},
		{"quote left open on line 1", "data_dir: \"./data\n", "YAML syntax: found unexpected end of stream (line 1)"},
		{"tab indenting a key", "devices:\n  max_connections: 1\n\tevent_loops: 2\n", "YAML syntax: found a tab character that violates indentation (line 3)"},
		{"tab first", "devices:\n\tmax_connections: 1\n", "YAML syntax: found character that cannot start any token (line 2)"},
		{"route key indented too little", route + "   batch: {}\n", "YAML syntax: did not find expected '-' indicator (line 4)"},
		{"route key indented too little, CRLF", strings.ReplaceAll(route+"   batch: {}\n", "\n", "\r\n"), "YAML syntax: did not find expected '-' indicator (line 4)"},
		{"key indented too little", "log:\n  level: info\n format: text\n", "YAML syntax: did not find expected key (line 3)"},
		{"list item in a mapping", "devices:\n  native:\n    tcp: x\n  - y\n", "YAML syntax: did not find expected key (line 4)"},
		{"mapping in a scalar", "data_dir: a\nlog: b\n  level: c\n", "YAML syntax: mapping values are not allowed in this context (line 3)"},
		{"key without colon", "data_dir: a\nlog\nstore: {}\n", "YAML syntax: could not find expected ':' (line 2)"},
		{"unknown anchor", "data_dir: a\nlog: *nothing\n", "YAML syntax: unknown anchor 'nothing' referenced (line 2)"},
		{"second document", "data_dir: a\n\n---\nlog: {}\n", "the file must hold a single YAML document; another one starts (line 3)"},

		// Unknown keys.
		{"unknown top-level key", "data_dir: a\nlogs: {}\n", "logs: unknown key; did you mean log? (line 2)"},
		{"unknown nested key", "devices:\n  native:\n    tcp: :1\n    sctp: :2\n", "devices.native.sctp: unknown key; did you mean tcp? (line 4)"},
		{"unknown route key", route + "    batch:\n      linger: 1s\n      max_mesages: 3\n", "routes[0].batch.max_mesages: unknown key; did you mean max_messages? (line 6)"},
		{"unknown key in the second route", route + "  - name: b\n    url: https://x.example/b\n    retry:\n      max_attempt: 3\n",
			"routes[1].retry.max_attempt: unknown key; did you mean max_attempts? (line 7)"},
		{"unknown key deep in auth", route + "    auth:\n      basic:\n        username: u\n        pasword: x\n",
			"routes[0].auth.basic.pasword: unknown key; did you mean password? (line 7)"},
		{"unknown key in flow style", "routes: [{name: a, url: 'https://x.example',\n  batch: {max_mesages: 3}}]\n",
			"routes[0].batch.max_mesages: unknown key; did you mean max_messages? (line 2)"},
		{"unknown key in a flow route", "routes:\n  - {name: a,\n     url: 'https://x.example',\n     batch: {linger: 1s,\n       max_mesages: 3}}\n",
			"routes[0].batch.max_mesages: unknown key; did you mean max_messages? (line 5)"},
		{"unknown key in a fleet entry", "fleet:\n  - id: a\n  - id: b\n    tag: [x]\n", "fleet[1].tag: unknown key; did you mean tags? (line 4)"},
		{"unknown key in a merged anchor", "routes:\n  - &r\n    name: a\n    url: https://x.example\n    batches: {}\n  - <<: *r\n    name: b\n",
			"routes[0].batches: unknown key; did you mean batch? (line 5) | routes[1].batches: unknown key; did you mean batch? (line 5)"},
		{"unknown key after a tab in a flow mapping", "log: {level: info,\tformt: text}\n", "log.formt: unknown key; did you mean format? (line 1)"},
		{"duplicate key", "log:\n  level: info\n  format: text\n  level: warn\n", "log.level: duplicate key (first at line 2) (line 4)"},

		// Values of the wrong type.
		{"string for an integer", "devices:\n  hello_timeout: 5s\n  max_connections: many\n", `devices.max_connections: expected an integer, got "many" (line 3)`},
		{"list for a string", "data_dir: a\nlog:\n  level: [info]\n", "log.level: expected a string, got a list (line 3)"},
		{"bad list item", route + "    success_codes:\n      - 200\n      - 201\n      - ok\n", `routes[0].success_codes[2]: expected an integer, got "ok" (line 7)`},
		{"bad flow list item", route + "    success_codes: [200,\n      ok]\n", `routes[0].success_codes[1]: expected an integer, got "ok" (line 5)`},
		{"bad nested list item", "fleet:\n  - id: a\n    tags:\n      - x\n      - [y]\n", "fleet[0].tags[1]: expected a string, got a list (line 5)"},
		{"bad duration", route + "    retry:\n      initial_backoff: 10\n",
			`routes[0].retry.initial_backoff: invalid duration "10": want a number with a unit (ms, s, m, h), e.g. 10s (line 5)`},
		{"bad size", "devices:\n  ndjson:\n    max_line: 1 XB\n", `devices.ndjson.max_line: invalid size "1 XB": unknown unit "XB" (use B, KB, MB, GB, KiB, MiB or GiB) (line 3)`},
		{"bad secret", route + "    auth:\n      basic:\n        username: u\n        password: {envv: X}\n",
			`routes[0].auth.basic.password: invalid secret: unknown source "envv"; want env or file (line 7)`},
		{"mapping expected", "devices:\n  native: :5000\n", `devices.native: expected a mapping, got ":5000" (line 2)`},

		// Validation.
		{"invalid value", "data_dir: a\n\nlog:\n  level: loud\n", `log.level: must be one of debug, info, warn, error, got "loud" (line 4)`},
		{"invalid route value", route + "    batch:\n      max_messages: 0\n", "routes[0].batch.max_messages: must be between 1 and 100000, got 0 (line 5)"},
		{"invalid list item", route + "    filter:\n      imeis:\n        - '356938035643809'\n        - '123'\n",
			`routes[0].filter.imeis[1]: "123" is not an IMEI (15 digits) (line 7)`},
		{"invalid fleet field", "fleet:\n  - id: a\n  - id: b\n    imei: '1'\n", `fleet[1].imei: "1" is not an IMEI (15 digits) (line 4)`},
		{"missing required field", route + "    auth:\n      basic:\n        username: u\n", "routes[0].auth.basic.password: required (line 5)"},
		{"missing route url", "routes:\n  - name: a\n    url: https://x.example/a\n  - name: b\n", "routes[1].url: required (line 4)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte(c.in))
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse(%q) = %v, want a *ValidationError", c.in, err)
			}
			if got := strings.Join(ve.Problems, " | "); got != c.want {
				t.Errorf("Parse(%q) problems = %q, want %q", c.in, got, c.want)
			}
		})
	}
}
