// Package config is the bridge's configuration: one typed tree read from the
// YAML file (presence-bridge.yaml) or from the add-on's /data/options.json,
// with defaults in one place and a Validate that reports every problem with
// its key path.
package config

import (
	"fmt"
	"log/slog"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration of presence-bridge (SPEC §3).
type Config struct {
	LogLevel   string     `yaml:"log_level" json:"log_level"`
	HealthAddr string     `yaml:"health_addr" json:"health_addr"`
	Users      []User     `yaml:"users" json:"users"`
	ServiceBus ServiceBus `yaml:"service_bus" json:"service_bus"`
	MQTT       MQTT       `yaml:"mqtt" json:"mqtt"`
	Hue        Hue        `yaml:"hue" json:"hue"`
}

// User is one person whose presence is bridged.
type User struct {
	ID               string `yaml:"id" json:"id"`
	Name             string `yaml:"name" json:"name"`
	Topic            string `yaml:"topic" json:"topic"`
	ConnectionString Secret `yaml:"connection_string" json:"connection_string"`
}

// TopicName is the Service Bus topic of the user's presence messages.
func (u User) TopicName() string {
	if u.Topic != "" {
		return u.Topic
	}
	return u.ID
}

// ServiceBus is where presence messages are read from.
type ServiceBus struct {
	ConnectionString Secret `yaml:"connection_string" json:"connection_string"`
	Subscription     string `yaml:"subscription" json:"subscription"`
	Queue            string `yaml:"queue" json:"queue"`
}

// MQTT is the Home Assistant broker; an empty URL means no Home Assistant.
type MQTT struct {
	URL             string `yaml:"url" json:"url"`
	Username        string `yaml:"username" json:"username"`
	Password        Secret `yaml:"password" json:"password"`
	CAFile          string `yaml:"ca_file" json:"ca_file"`
	ClientID        string `yaml:"client_id" json:"client_id"`
	DiscoveryPrefix string `yaml:"discovery_prefix" json:"discovery_prefix"`
	BaseTopic       string `yaml:"base_topic" json:"base_topic"`
}

// Enabled reports whether a broker is configured.
func (m MQTT) Enabled() bool { return m.URL != "" }

// Hue is the direct drive of Philips Hue groups.
type Hue struct {
	Mode        string      `yaml:"mode" json:"mode"`
	MinInterval Duration    `yaml:"min_interval" json:"min_interval"`
	Bridges     []HueBridge `yaml:"bridges" json:"bridges"`
	Colors      []Color     `yaml:"colors" json:"colors"`
}

// Enabled reports whether any Hue bridge is configured.
func (h Hue) Enabled() bool { return len(h.Bridges) > 0 }

// HueBridge is one Hue bridge on the local network.
type HueBridge struct {
	Host     string     `yaml:"host" json:"host"`
	Username Secret     `yaml:"username" json:"username"`
	Groups   []HueGroup `yaml:"groups" json:"groups"`
}

// HueGroup is a Hue room or zone driven by the presence of some users.
type HueGroup struct {
	Group string   `yaml:"group" json:"group"`
	Users []string `yaml:"users" json:"users"`
}

// Color overrides the lamp state for one availability or activity value.
type Color struct {
	Status     string `yaml:"status" json:"status"`
	Color      string `yaml:"color" json:"color"`
	Brightness int    `yaml:"brightness" json:"brightness"`
	Off        bool   `yaml:"off" json:"off"`
	Effect     string `yaml:"effect" json:"effect"`
}

// Hue modes.
const (
	HueModeAuto   = "auto"
	HueModeAlways = "always"
	HueModeOff    = "off"
)

// Duration is a time.Duration written as Go duration text ("1s", "500ms").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Secret is a string that never prints: String, MarshalText and LogValue give
// "<redacted>" (or "" when empty). Value returns the real text.
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
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// MarshalText hides the secret in JSON and any text encoding.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalYAML hides the secret in YAML output (check-config).
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// LogValue hides the secret from log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

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
