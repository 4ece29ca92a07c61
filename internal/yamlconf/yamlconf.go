// Package yamlconf is the configuration toolkit both programs share: a
// strict YAML decoder (an unknown key or a value of the wrong shape is an
// error naming its key path), ${NAME} expansion from the environment, a
// collector of problems with key paths, and the Secret and Duration types.
//
// Each program keeps its own schema (a struct tree with yaml tags), its
// defaults and its Validate; this package only reads the file into it.
package yamlconf

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Decode reads a YAML (or JSON) document into dst, a pointer to a struct
// that already holds the defaults: a key the document leaves out (or leaves
// empty) keeps its default. Unknown keys and values of the wrong shape are
// reported together, each with its key path. When lookupEnv is not nil,
// ${NAME} in scalar values is replaced by the environment variable NAME (an
// unset one is an error naming it); an expanded value takes the type of the
// field it fills, so a secret of "~" or "null" stays that text.
func Decode(data []byte, lookupEnv func(string) (string, bool), dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("yamlconf: decode into %T: want a pointer to a struct", dst)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return errors.New("the configuration is empty")
	}
	root := doc.Content[0]
	var p Problems
	w := walker{lookupEnv: lookupEnv, p: &p, expanded: map[*yaml.Node]bool{}}
	w.walk(root, rv.Elem().Type(), "")
	if err := p.Err(); err != nil {
		return err
	}
	if err := root.Decode(dst); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// Problems collects configuration problems, each with its key path.
type Problems []error

// Add records a problem at path ("(top level)" when path is empty).
func (p *Problems) Add(path, format string, args ...any) {
	if path == "" {
		path = "(top level)"
	}
	*p = append(*p, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// Err joins every problem, or returns nil when there is none.
func (p Problems) Err() error { return errors.Join(p...) }

// Join appends key to a key path.
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

var (
	durationType = reflect.TypeFor[Duration]()
	unmarshaler  = reflect.TypeFor[yaml.Unmarshaler]()
)

type walker struct {
	lookupEnv func(string) (string, bool)
	p         *Problems
	// expanded marks scalars that came from ${NAME}: they may be secrets,
	// so an error never quotes them.
	expanded map[*yaml.Node]bool
}

// expand replaces ${NAME} in a scalar and fixes its tag for the field type
// t: text fields take the expansion as text; numbers, booleans and durations
// let the expanded text resolve as YAML would have read it.
func (w walker) expand(n *yaml.Node, t reflect.Type, path string) {
	if w.lookupEnv == nil || n.Kind != yaml.ScalarNode || !strings.Contains(n.Value, "${") {
		return
	}
	w.expanded[n] = true
	n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
		name := ref[2 : len(ref)-1]
		v, ok := w.lookupEnv(name)
		if !ok {
			w.p.Add(path, "environment variable %s is not set", name)
		}
		return v
	})
	if t != nil && t.Kind() == reflect.String {
		n.Tag = "!!str"
		return
	}
	if n.Style == 0 || n.Style == yaml.TaggedStyle {
		n.Tag = ""
	}
}

// walk checks the document against the configuration's types, expanding
// environment references on the way, and reports unknown keys and values of
// the wrong shape, each with its key path.
func (w walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	w.expand(n, t, path)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // an empty value keeps the default
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			w.p.Add(path, "want a duration such as 1s")
			return
		}
		var d Duration
		if err := d.UnmarshalText([]byte(n.Value)); err != nil {
			w.p.Add(path, "%v", err)
		}
	case t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(unmarshaler):
		if n.Kind != yaml.MappingNode {
			w.p.Add(path, "want a mapping of keys, got %s", w.describe(n))
			return
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if seen[key] {
				w.p.Add(Join(path, key), "given twice")
				continue
			}
			seen[key] = true
			f, ok := fieldByTag(t, key)
			if !ok {
				w.p.Add(Join(path, key), "unknown key (known keys: %s)", strings.Join(tags(t), ", "))
				continue
			}
			w.walk(n.Content[i+1], f.Type, Join(path, key))
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.p.Add(path, "want a list, got %s", w.describe(n))
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.p.Add(path, "want text, got %s", w.describe(n))
		}
	case t.Kind() == reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			w.p.Add(path, "want true or false, got %s", w.describe(n))
		}
	case t.Kind() == reflect.Int:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			w.p.Add(path, "want a whole number, got %s", w.describe(n))
		}
	}
}

func (w walker) describe(n *yaml.Node) string {
	if w.expanded[n] {
		return "the value of an environment variable (not shown)"
	}
	return describe(n)
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

// Load reads the file at path and hands it to parse; errors name the file.
func Load[T any](path string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("config: %w", err)
	}
	v, err := parse(data)
	if err != nil {
		return zero, fmt.Errorf("config %s: %w", path, err)
	}
	return v, nil
}
