package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads the YAML configuration file at path; see [Parse].
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a YAML configuration strictly, applies the defaults, resolves inherited values and
// validates the result. Every problem is reported at once in a [*ValidationError]: first all decoding
// problems (unknown keys, values of the wrong kind), or, when decoding succeeded, all validation
// problems, each annotated with its line. An empty document yields the defaults.
func Parse(data []byte) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, &ValidationError{Problems: []string{syntaxProblem(data, err)}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		msg := "the file must hold a single YAML document"
		if line := secondDocument(data); line > 0 {
			msg += fmt.Sprintf("; another one starts (line %d)", line)
		}
		return nil, &ValidationError{Problems: []string{msg}}
	}

	c := Default()
	if doc.Kind != 0 {
		w := walker{lines: map[string]int{}}
		w.walk(&doc, reflect.TypeFor[Config](), "", false, 0)
		if len(w.problems) > 0 {
			return nil, &ValidationError{Problems: w.problems}
		}
		// The walker has already checked every key and value against the types, so this decode cannot
		// meet an unknown key; any error left is reported as is.
		if err := doc.Decode(c); err != nil {
			return nil, &ValidationError{Problems: []string{strings.TrimPrefix(err.Error(), "yaml: ")}}
		}
		c.Resolve()
		if err := c.Validate(); err != nil {
			var ve *ValidationError
			if errors.As(err, &ve) {
				for i, p := range ve.Problems {
					ve.Problems[i] = w.annotate(p)
				}
			}
			return nil, err
		}
		return c, nil
	}
	c.Resolve()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseRoute decodes one route from JSON (or YAML: JSON is read as the YAML it is) strictly, the
// way [Parse] decodes a route of the file: the same names and the same defaults (absent keys keep
// [DefaultRoute]'s values; the auth sections' defaults are filled), and every unknown key and
// ill-typed value reported at once in a [*ValidationError], each problem "dotted.path: message"
// without a line ("batch.max_messages: expected an integer, got \"x\""). It does not check the
// values ([Route.Check] and internal/route.Compile do) and inherits nothing: a timeout of 0 and an
// absent retry (or retry fields left at 0) take delivery's once [Route.Resolve] is called.
func ParseRoute(data []byte) (Route, error) {
	r := DefaultRoute()
	if err := parseOne(data, &r, "a route"); err != nil {
		return Route{}, err
	}
	r.normalize()
	return r, nil
}

// ParseDevice decodes one device's metadata from JSON (or YAML) strictly, as [ParseRoute] decodes
// a route: every unknown key and ill-typed value at once in a [*ValidationError]. It does not
// check the values ([Device.Check] does).
func ParseDevice(data []byte) (Device, error) {
	var d Device
	if err := parseOne(data, &d, "a device"); err != nil {
		return Device{}, err
	}
	d.Tags, d.Groups = nilIfEmpty(d.Tags), nilIfEmpty(d.Groups)
	return d, nil
}

// parseOne decodes the single document data holds into v after the walker checked it against
// v's type; a problem without a path has a space before its first colon.
func parseOne[T any](data []byte, v *T, what string) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return &ValidationError{Problems: []string{"invalid syntax: " + yamlLinePrefix.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "")}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return &ValidationError{Problems: []string{"more than one value; want " + what}}
	}
	if doc.Kind == 0 {
		return &ValidationError{Problems: []string{"nothing given; want " + what}}
	}
	w := walker{lines: map[string]int{}, noLines: true}
	w.walk(&doc, reflect.TypeFor[T](), "", false, 0)
	if len(w.problems) > 0 {
		return &ValidationError{Problems: w.problems}
	}
	if err := doc.Decode(v); err != nil {
		return &ValidationError{Problems: []string{"invalid value: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	return nil
}

// UnmarshalYAML decodes a route on top of [DefaultRoute], so absent keys keep their defaults.
func (r *Route) UnmarshalYAML(n *yaml.Node) error {
	type plain Route // plain has no UnmarshalYAML method
	v := plain(DefaultRoute())
	if err := n.Decode(&v); err != nil {
		return err
	}
	*r = Route(v)
	return nil
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// walker checks a YAML node tree against the config types before anything is decoded, so that every
// unknown key and every ill-typed value is reported at once with its dotted path and line. It also
// records the line of every path, to annotate validation problems.
type walker struct {
	problems []string
	lines    map[string]int
	noLines  bool // problems without their line (a request body is one line of JSON)
}

func (w *walker) addf(path string, n *yaml.Node, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	if w.noLines {
		w.problems = append(w.problems, msg)
		return
	}
	w.problems = append(w.problems, fmt.Sprintf("%s (line %d)", msg, n.Line))
}

// annotate appends the line of a validation problem's path, or of its nearest ancestor found in the file.
func (w *walker) annotate(problem string) string {
	path, _, ok := strings.Cut(problem, ": ")
	if !ok {
		return problem
	}
	for p := path; p != ""; p = parentPath(p) {
		if line, ok := w.lines[p]; ok {
			return problem + " (line " + strconv.Itoa(line) + ")"
		}
	}
	return problem
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string, nullIsError bool, depth int) {
	if depth > 64 {
		w.addf(path, n, "nested too deeply")
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 1 {
			w.walk(n.Content[0], t, path, nullIsError, depth+1)
		}
		return
	case yaml.AliasNode:
		w.walk(n.Alias, t, path, nullIsError, depth+1)
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		// A key without a value keeps its default.
		if nullIsError {
			w.addf(path, n, "expected %s, got an empty value", typeName(t))
		}
		return
	}
	if t.Kind() != reflect.Struct && reflect.PointerTo(t).Implements(unmarshalerType) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			w.addf(path, n, "%s", yamlErrorText(err))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		w.mapping(n, path, depth, func(key string, k, v *yaml.Node) {
			f, ok := structField(t, key)
			if !ok {
				known := structKeys(t)
				msg := fmt.Sprintf("unknown key; known keys: %s", strings.Join(known, ", "))
				if s := suggest(key, known); s != "" {
					msg = fmt.Sprintf("unknown key; did you mean %s?", s)
				}
				w.addf(join(path, key), k, "%s", msg)
				return
			}
			w.walk(v, f.Type, join(path, key), false, depth+1)
		})
	case reflect.Map:
		w.mapping(n, path, depth, func(key string, _, v *yaml.Node) {
			w.walk(v, t.Elem(), join(path, key), false, depth+1)
		})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.addf(path, n, "expected a list, got %s", kindName(n))
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.lines[p] = item.Line
			w.walk(item, t.Elem(), p, true, depth+1)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.addf(path, n, "expected a string, got %s", kindName(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			w.addf(path, n, "expected true or false, got %s", kindName(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			w.addf(path, n, "expected an integer, got %s", kindName(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			w.addf(path, n, "integer %s out of range", n.Value)
		}
	default:
		// Every config field has one of the kinds above; a new kind needs a case here.
		w.addf(path, n, "internal error: cannot check a value of type %s", t)
	}
}

// mapping checks that n is a mapping with unique string keys and calls fn for each entry, following
// merge keys (<<).
func (w *walker) mapping(n *yaml.Node, path string, depth int, fn func(key string, k, v *yaml.Node)) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		w.addf(path, n, "expected a mapping, got %s", kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				merged = v.Content
			}
			for _, m := range merged {
				if depth > 64 {
					w.addf(path, m, "nested too deeply")
					return
				}
				w.mapping(m, path, depth+1, fn)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.addf(path, k, "expected a key, got %s", kindName(k))
			continue
		}
		key := k.Value
		if first, dup := seen[key]; dup {
			w.addf(join(path, key), k, "duplicate key (first at line %d)", first)
			continue
		}
		seen[key] = k.Line
		w.lines[join(path, key)] = k.Line
		fn(key, k, v)
	}
}

func structField(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if yamlName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func structKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	sort.Strings(keys)
	return keys
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// suggest returns the known key closest to key, if it is a likely typo.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	}
	return "a value"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.ShortTag() == "!!null" {
		return "an empty value"
	}
	return strconv.Quote(n.Value)
}

var yamlLinePrefix = regexp.MustCompile(`^line \d+: `)

// searchBudget bounds the bytes syntaxProblem parses to find a line (a fraction of a second);
// beyond it yaml's own report is kept.
const searchBudget = 8 << 20

// syntaxProblem reports a YAML syntax error with the line at fault. yaml.v3 names the line where
// the enclosing construct began, counted from 0 for parser errors and from 1 for scanner errors (a
// badly indented key deep in a route is reported at the route's "-", a tab at the key before it),
// or no line at all (an unknown anchor). The line is found again from prefixes of the file: the
// fault lies on the first line from which every longer prefix fails with the same message. For a
// construct left open (an unterminated quote or flow list) that is the line where it opens.
func syntaxProblem(data []byte, err error) string {
	text := strings.TrimPrefix(err.Error(), "yaml: ")
	msg := yamlLinePrefix.ReplaceAllString(text, "")
	var ends []int // offset just past each line
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	failsSame := func(lines int) bool {
		var n yaml.Node
		err := yaml.NewDecoder(bytes.NewReader(data[:ends[lines-1]])).Decode(&n)
		return err != nil && yamlLinePrefix.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "") == msg
	}
	budget := searchBudget
	k := len(ends)
	for ; k > 1; k-- {
		if budget -= ends[k-2]; budget < 0 {
			return "YAML syntax: " + text
		}
		if !failsSame(k - 1) {
			break
		}
	}
	if k == 0 {
		return "YAML syntax: " + text
	}
	return fmt.Sprintf("YAML syntax: %s (line %d)", msg, k)
}

// secondDocument returns the line where the file's second YAML document starts, 0 if not found.
func secondDocument(data []byte) int {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var first, second yaml.Node
	if dec.Decode(&first) != nil || dec.Decode(&second) != nil {
		return 0
	}
	return second.Line
}

// yamlErrorText strips the yaml package's prefixes from err, whose line the caller reports itself.
func yamlErrorText(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			msgs[i] = yamlLinePrefix.ReplaceAllString(e, "")
		}
		return strings.Join(msgs, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}
