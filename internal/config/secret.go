package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Secret is a credential. In YAML it is written in one of three ways:
//
//	password: s3cret                          # the value itself
//	password: {env: WEBHOOK_PASSWORD}         # an environment variable of the relay's process
//	password: {file: /run/secrets/webhook}    # a file's content, without a trailing newline
//
// The value is read by [Secret.Reveal] when the relay starts, so a missing variable or file is an
// error at start. A Secret never prints its value: String, LogValue and MarshalYAML show only
// where it comes from.
type Secret string

// Secret encodings: the source's prefix, then its argument.
const (
	secretValue = "value:"
	secretEnv   = "env:"
	secretFile  = "file:"
)

// SecretValue, SecretEnv and SecretFile build Secrets in code.
func SecretValue(v string) Secret   { return Secret(secretValue + v) }
func SecretEnv(name string) Secret  { return Secret(secretEnv + name) }
func SecretFile(path string) Secret { return Secret(secretFile + path) }

// IsSet reports whether s was given.
func (s Secret) IsSet() bool { return s != "" }

// Reveal returns the secret's value: the literal, the environment variable's value or the file's
// content (one trailing newline removed). A variable that is unset or empty, or a file that
// cannot be read or is empty, is an error that names it but shows nothing of its content.
func (s Secret) Reveal() (string, error) {
	v := string(s)
	switch {
	case v == "":
		return "", nil
	case strings.HasPrefix(v, secretValue):
		return v[len(secretValue):], nil
	case strings.HasPrefix(v, secretEnv):
		name := v[len(secretEnv):]
		val, ok := os.LookupEnv(name)
		if !ok || val == "" {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		return val, nil
	case strings.HasPrefix(v, secretFile):
		path := v[len(secretFile):]
		b, err := os.ReadFile(path)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return "", fmt.Errorf("secret file %s: %w", path, err)
		}
		val := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if val == "" {
			return "", fmt.Errorf("secret file %s is empty", path)
		}
		return val, nil
	}
	return "", errors.New("malformed secret")
}

// String shows where the secret comes from, never its value.
func (s Secret) String() string {
	v := string(s)
	switch {
	case v == "":
		return ""
	case strings.HasPrefix(v, secretEnv), strings.HasPrefix(v, secretFile):
		return v
	}
	return "[redacted]"
}

// LogValue implements [slog.LogValuer]: the same as String.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// UnmarshalYAML implements [yaml.Unmarshaler].
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == "" {
			return errors.New("invalid secret: empty")
		}
		*s = SecretValue(n.Value)
		return nil
	case yaml.MappingNode:
		if len(n.Content) != 2 || n.Content[1].Kind != yaml.ScalarNode || n.Content[1].Value == "" {
			return errors.New("invalid secret: want a value, {env: NAME} or {file: PATH}")
		}
		switch k, v := n.Content[0].Value, n.Content[1].Value; k {
		case "env":
			*s = SecretEnv(v)
		case "file":
			*s = SecretFile(v)
		default:
			return fmt.Errorf("invalid secret: unknown source %q; want env or file", k)
		}
		return nil
	}
	return fmt.Errorf("invalid secret: want a value, {env: NAME} or {file: PATH}, got %s", kindName(n))
}

// MarshalYAML implements [yaml.Marshaler]: env and file sources as written, a literal value
// as "[redacted]".
func (s Secret) MarshalYAML() (any, error) {
	v := string(s)
	switch {
	case strings.HasPrefix(v, secretEnv):
		return map[string]string{"env": v[len(secretEnv):]}, nil
	case strings.HasPrefix(v, secretFile):
		return map[string]string{"file": v[len(secretFile):]}, nil
	}
	return s.String(), nil
}
