package yamlconf

import (
	"fmt"
	"log/slog"
	"time"

	"gopkg.in/yaml.v3"
)

// Secret is a string that never prints: String, MarshalText, MarshalYAML and
// LogValue give "<redacted>" (or "" when empty). Value returns the real text.
type Secret string

// Value returns the secret's text.
func (s Secret) Value() string { return string(s) }

const redacted = "<redacted>"

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString hides the secret from %#v too.
func (s Secret) GoString() string { return `Secret("` + s.String() + `")` }

// MarshalText hides the secret in JSON and any text encoding.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalYAML hides the secret in YAML output (check-config).
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// LogValue hides the secret from log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Duration is a time.Duration written as Go duration text ("1s", "500ms").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String prints d as Go duration text.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as Go duration text.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalYAML writes d as Go duration text.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalText reads Go duration text ("1s").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like 1s or 500ms)", b)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML reads Go duration text.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error { return d.UnmarshalText([]byte(n.Value)) }
