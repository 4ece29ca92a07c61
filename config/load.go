package config

import (
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/yamlconf"
)

// Default returns the configuration every file starts from: a key the file
// leaves out keeps its value here. This is the one place defaults live.
func Default() Config {
	return Config{
		LogLevel:   "info",
		HealthAddr: "127.0.0.1:8086",
		ServiceBus: ServiceBus{Subscription: "home"},
		Graph: Graph{
			Tenant:       "organizations",
			PollInterval: Duration(10 * time.Second),
			Scopes:       []string{"Presence.Read.All"},
		},
		MQTT: MQTT{
			DiscoveryPrefix: "homeassistant",
			BaseTopic:       "presence-bridge",
		},
		Hue: Hue{Mode: HueModeAuto, MinInterval: Duration(1e9)},
	}
}

// Load reads, expands, decodes and validates the YAML file at path.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	return yamlconf.Load(path, func(data []byte) (*Config, error) { return Parse(data, lookupEnv) })
}

// Parse decodes a YAML configuration strictly (an unknown key or a value of
// the wrong type is an error naming its key path), replaces ${NAME} in values
// with environment variables (an unset one is an error), applies the defaults
// and validates the result. Every problem found is reported, joined.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parse(data, lookupEnv)
}

// FromJSON decodes the Home Assistant add-on's /data/options.json, which uses
// the same keys as the YAML file, strictly, then applies the defaults and
// validates. No ${NAME} expansion takes place: the Supervisor's values are
// taken as they are.
func FromJSON(data []byte) (*Config, error) {
	return parse(data, nil)
}

func parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	if err := yamlconf.Decode(data, lookupEnv, &cfg); err != nil {
		return nil, err
	}
	cfg.normalize()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// normalize turns what a form may send for a cleared field into the unset
// value: Home Assistant's options form sends "" (or blanks) for an emptied
// text field, and an empty mqtt.url means "no broker of my own".
func (c *Config) normalize() {
	c.MQTT.URL = strings.TrimSpace(c.MQTT.URL)
	c.Graph.ClientID = strings.TrimSpace(c.Graph.ClientID)
	c.Graph.Authority = strings.TrimSpace(c.Graph.Authority)
	c.Graph.Endpoint = strings.TrimSpace(c.Graph.Endpoint)
}

// problems collects every configuration problem with its key path.
type problems = yamlconf.Problems
