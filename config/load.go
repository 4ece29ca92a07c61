package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Default returns the configuration every file starts from: a key the file
// leaves out keeps its value here. This is the one place defaults live.
func Default() Config {
	return Config{
		LogLevel:   "info",
		HealthAddr: "127.0.0.1:8086",
		ServiceBus: ServiceBus{Subscription: "home"},
		MQTT: MQTT{
			ClientID:        "presence-bridge",
			DiscoveryPrefix: "homeassistant",
			BaseTopic:       "presence-bridge",
		},
		Hue: Hue{Mode: HueModeAuto, MinInterval: Duration(1e9)},
	}
}

// Load reads, expands, decodes and validates the YAML file at path.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data, lookupEnv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
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
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, errors.New("the configuration is empty")
	}
	root := doc.Content[0]
	var p problems
	if lookupEnv != nil {
		expandEnv(root, "", lookupEnv, &p)
	}
	checkKeys(root, reflect.TypeFor[Config](), "", &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	cfg := Default()
	if err := root.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// problems collects every configuration problem with its key path.
type problems []error

func (p *problems) add(path, format string, args ...any) {
	if path == "" {
		path = "(top level)"
	}
	*p = append(*p, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (p problems) err() error { return errors.Join(p...) }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${NAME} in every scalar value (never in keys).
func expandEnv(n *yaml.Node, path string, lookupEnv func(string) (string, bool), p *problems) {
	switch n.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := ref[2 : len(ref)-1]
			v, ok := lookupEnv(name)
			if !ok {
				p.add(path, "environment variable %s is not set", name)
			}
			return v
		})
		if n.Style == 0 || n.Style == yaml.TaggedStyle {
			n.Tag = "" // let the expanded text resolve its own type
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandEnv(n.Content[i+1], join(path, n.Content[i].Value), lookupEnv, p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expandEnv(c, fmt.Sprintf("%s[%d]", path, i), lookupEnv, p)
		}
	}
}

var durationType = reflect.TypeFor[Duration]()

// checkKeys walks the document against the configuration's types and reports
// unknown keys and values of the wrong shape, each with its key path.
func checkKeys(n *yaml.Node, t reflect.Type, path string, p *problems) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // an empty value keeps the default
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			p.add(path, "want a duration such as 1s")
			return
		}
		var d Duration
		if err := d.UnmarshalText([]byte(n.Value)); err != nil {
			p.add(path, "%v", err)
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			p.add(path, "want a mapping of keys, got %s", describe(n))
			return
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if seen[key] {
				p.add(join(path, key), "given twice")
				continue
			}
			seen[key] = true
			f, ok := fieldByTag(t, key)
			if !ok {
				p.add(join(path, key), "unknown key (known keys: %s)", strings.Join(tags(t), ", "))
				continue
			}
			checkKeys(n.Content[i+1], f.Type, join(path, key), p)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			p.add(path, "want a list, got %s", describe(n))
			return
		}
		for i, c := range n.Content {
			checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), p)
		}
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			p.add(path, "want text, got %s", describe(n))
		}
	case t.Kind() == reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			p.add(path, "want true or false, got %s", describe(n))
		}
	case t.Kind() == reflect.Int:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			p.add(path, "want a whole number, got %s", describe(n))
		}
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	return fmt.Sprintf("%q", v)
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if yamlName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tags(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	return out
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}
