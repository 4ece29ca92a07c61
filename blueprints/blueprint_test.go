package blueprints

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/hue"
	"github.com/presence-bridge/presence-bridge/presence"
)

const (
	lightPath = "automation/presence_bridge/presence_light.yaml"
	// lightRawURL is where Home Assistant imports the blueprint from: its
	// source_url and the link in DOCS.md.
	lightRawURL = "https://raw.githubusercontent.com/presence-bridge/presence-bridge/main/blueprints/" + lightPath
)

// inputRef is a scalar tagged !input: Home Assistant replaces it by the
// value of the named input.
type inputRef string

// decodeNode turns a YAML node into plain Go values, keeping !input scalars
// as inputRef. Any other custom tag, an alias or a duplicate key is an
// error: Home Assistant's loader would not read the file the same way.
func decodeNode(n *yaml.Node) (any, error) {
	if n.Tag != "" && strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") &&
		(n.Kind != yaml.ScalarNode || n.Tag != "!input") {
		return nil, fmt.Errorf("line %d: tag %s: only !input (on a scalar) belongs in a blueprint", n.Line, n.Tag)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		return decodeNode(n.Content[0])
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: a key must be a scalar", k.Line)
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
			}
			v, err := decodeNode(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := decodeNode(c)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.ScalarNode:
		if n.Tag == "!input" {
			return inputRef(n.Value), nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("line %d: anchors and aliases are not used in blueprints", n.Line)
}

// blueprintFile is a parsed blueprint.
type blueprintFile struct {
	doc    map[string]any
	root   yaml.Node
	inputs map[string]map[string]any // flattened: sections dissolved
	refs   []inputRef                // every !input, in file order
}

func loadBlueprint(t *testing.T, path string) *blueprintFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bp := &blueprintFile{inputs: map[string]map[string]any{}}
	if err := yaml.Unmarshal(data, &bp.root); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	v, err := decodeNode(&bp.root)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	doc, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: not a mapping", path)
	}
	bp.doc = doc
	meta, _ := doc["blueprint"].(map[string]any)
	if meta == nil {
		t.Fatalf("%s: no blueprint section", path)
	}
	in, _ := meta["input"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(in)) {
		decl, _ := in[name].(map[string]any)
		if sub, isSection := decl["input"].(map[string]any); isSection {
			for _, k := range slices.Sorted(maps.Keys(sub)) {
				if _, dup := bp.inputs[k]; dup {
					t.Errorf("input %q declared twice", k)
				}
				d, _ := sub[k].(map[string]any)
				bp.inputs[k] = d
			}
			continue
		}
		if _, dup := bp.inputs[name]; dup {
			t.Errorf("input %q declared twice", name)
		}
		bp.inputs[name] = decl
	}
	walk(doc, func(v any) {
		if r, ok := v.(inputRef); ok {
			bp.refs = append(bp.refs, r)
		}
	})
	return bp
}

func walk(v any, fn func(any)) {
	fn(v)
	switch n := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(n)) {
			walk(n[k], fn)
		}
	case []any:
		for _, e := range n {
			walk(e, fn)
		}
	}
}

// resolve replaces !input references by the inputs' defaults.
func (bp *blueprintFile) resolve(t *testing.T, v any) any {
	t.Helper()
	switch n := v.(type) {
	case inputRef:
		d, ok := bp.inputs[string(n)]
		if !ok {
			t.Fatalf("!input %s is not declared", n)
		}
		def, ok := d["default"]
		if !ok {
			t.Fatalf("!input %s has no default", n)
		}
		return def
	case map[string]any:
		out := map[string]any{}
		for k, e := range n {
			out[k] = bp.resolve(t, e)
		}
		return out
	case []any:
		out := make([]any, len(n))
		for i, e := range n {
			out[i] = bp.resolve(t, e)
		}
		return out
	}
	return v
}

func (bp *blueprintFile) variables(t *testing.T) map[string]any {
	t.Helper()
	vars, ok := bp.doc["variables"].(map[string]any)
	if !ok {
		t.Fatal("no variables")
	}
	return vars
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func checkKeys(t *testing.T, where string, m map[string]any, allowed ...string) {
	t.Helper()
	for _, k := range sortedKeys(m) {
		if !slices.Contains(allowed, k) {
			t.Errorf("%s: unknown key %q (allowed: %s)", where, k, strings.Join(allowed, ", "))
		}
	}
}

func TestBlueprintMetadata(t *testing.T) {
	bp := loadBlueprint(t, lightPath)
	checkKeys(t, "top level", bp.doc, "blueprint", "mode", "max_exceeded", "triggers", "conditions", "variables", "actions")
	meta := bp.doc["blueprint"].(map[string]any)
	checkKeys(t, "blueprint", meta, "name", "description", "domain", "source_url", "author", "homeassistant", "input")
	if meta["name"] != "Teams presence light" {
		t.Errorf("name = %v", meta["name"])
	}
	if meta["domain"] != "automation" {
		t.Errorf("domain = %v, want automation", meta["domain"])
	}
	if meta["source_url"] != lightRawURL {
		t.Errorf("source_url = %v, want %s", meta["source_url"], lightRawURL)
	}
	if d, _ := meta["description"].(string); len(d) < 200 {
		t.Errorf("description too short to explain the blueprint: %q", d)
	}
	ha, _ := meta["homeassistant"].(map[string]any)
	// Input sections need 2024.6, the plural triggers/actions keys 2024.10.
	v, _ := ha["min_version"].(string)
	var major, minor, patch int
	if n, err := fmt.Sscanf(v, "%d.%d.%d", &major, &minor, &patch); err != nil || n != 3 ||
		!regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(v) || major*100+minor < 2024*100+10 {
		t.Errorf("homeassistant.min_version = %#v, want x.y.z, at least 2024.10.0", ha["min_version"])
	}
	in := meta["input"].(map[string]any)
	for _, name := range sortedKeys(in) {
		decl, ok := in[name].(map[string]any)
		if !ok {
			t.Errorf("input %s: want a mapping", name)
			continue
		}
		if _, isSection := decl["input"]; isSection {
			checkKeys(t, "section "+name, decl, "name", "icon", "description", "collapsed", "input")
			if c, ok := decl["collapsed"]; ok {
				if _, isBool := c.(bool); !isBool {
					t.Errorf("section %s: collapsed = %#v, want a bool", name, c)
				}
			}
		}
	}
	if bp.doc["mode"] != "restart" {
		t.Errorf("mode = %v: a newer change must replace a run in progress", bp.doc["mode"])
	}
}

// TestBlueprintYAML11Booleans: Home Assistant's loader is YAML 1.1, where a
// plain off is false (the offline choice "off" would become a bool).
func TestBlueprintYAML11Booleans(t *testing.T) {
	bp := loadBlueprint(t, lightPath)
	yaml11 := map[string]bool{"y": true, "n": true, "yes": true, "no": true, "on": true, "off": true}
	var visit func(n *yaml.Node)
	visit = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode && n.Style == 0 && n.Tag == "!!str" && yaml11[strings.ToLower(n.Value)] {
			t.Errorf("line %d: plain %q is a boolean in YAML 1.1: quote it", n.Line, n.Value)
		}
		for _, c := range n.Content {
			visit(c)
		}
	}
	visit(&bp.root)
}

func TestBlueprintInputs(t *testing.T) {
	bp := loadBlueprint(t, lightPath)
	used := map[string]bool{}
	for _, r := range bp.refs {
		used[string(r)] = true
		if _, ok := bp.inputs[string(r)]; !ok {
			t.Errorf("!input %s is not declared", r)
		}
	}
	if len(bp.inputs) < 10 {
		t.Fatalf("only %d inputs found: the parse is broken", len(bp.inputs))
	}
	var required []string
	for _, name := range slices.Sorted(maps.Keys(bp.inputs)) {
		decl := bp.inputs[name]
		if !used[name] {
			t.Errorf("input %s is declared but never used", name)
		}
		checkKeys(t, "input "+name, decl, "name", "description", "default", "selector")
		if s, _ := decl["name"].(string); s == "" {
			t.Errorf("input %s: no name", name)
		}
		sel, ok := decl["selector"].(map[string]any)
		if !ok {
			t.Errorf("input %s: no selector", name)
			continue
		}
		def, hasDefault := decl["default"]
		if !hasDefault {
			required = append(required, name)
		}
		if err := checkSelector(sel, def, hasDefault); err != nil {
			t.Errorf("input %s: %v", name, err)
		}
	}
	if diff := cmp.Diff([]string{"lights", "people"}, required); diff != "" {
		t.Errorf("inputs without a default (-want +got):\n%s", diff)
	}

	// people: the bridge's enum sensors; lights: lights.
	people := bp.inputs["people"]["selector"].(map[string]any)["entity"].(map[string]any)
	wantPeople := map[string]any{
		"multiple": true,
		"filter":   []any{map[string]any{"integration": "mqtt", "domain": "sensor", "device_class": "enum"}},
	}
	if diff := cmp.Diff(wantPeople, people); diff != "" {
		t.Errorf("people selector (-want +got):\n%s", diff)
	}
	lights := bp.inputs["lights"]["selector"].(map[string]any)["entity"].(map[string]any)
	wantLights := map[string]any{"multiple": true, "filter": []any{map[string]any{"domain": "light"}}}
	if diff := cmp.Diff(wantLights, lights); diff != "" {
		t.Errorf("lights selector (-want +got):\n%s", diff)
	}
}

// selectorTypes are the selectors Home Assistant registers
// (homeassistant/helpers/selector.py).
var selectorTypes = []string{
	"action", "addon", "area", "assist_pipeline", "attribute", "backup_location", "boolean",
	"color_rgb", "color_temp", "condition", "config_entry", "constant", "conversation_agent",
	"country", "date", "datetime", "device", "duration", "entity", "file", "floor", "icon",
	"label", "language", "location", "media", "number", "object", "qr_code", "select", "state",
	"statistic", "target", "template", "text", "theme", "time", "trigger",
}

// checkSelector checks a selector the way Home Assistant's schema for it
// does, for the types this repository uses, and that the default is a value
// the selector accepts.
func checkSelector(sel map[string]any, def any, hasDefault bool) error {
	if len(sel) != 1 {
		return fmt.Errorf("selector: exactly one type, got %v", sortedKeys(sel))
	}
	typ := sortedKeys(sel)[0]
	if !slices.Contains(selectorTypes, typ) {
		return fmt.Errorf("selector type %q is not a Home Assistant selector", typ)
	}
	var cfg map[string]any
	switch c := sel[typ].(type) {
	case nil:
		cfg = map[string]any{}
	case map[string]any:
		cfg = c
	default:
		return fmt.Errorf("selector %s: options must be a mapping, got %#v", typ, c)
	}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	allowed := func(keys ...string) {
		for _, k := range sortedKeys(cfg) {
			if !slices.Contains(append(keys, "read_only"), k) {
				bad("selector %s: unknown option %q", typ, k)
			}
		}
	}
	switch typ {
	case "entity":
		allowed("integration", "domain", "device_class", "exclude_entities", "include_entities", "multiple", "reorder", "filter")
		filters, _ := cfg["filter"].([]any)
		for i, f := range filters {
			fm, ok := f.(map[string]any)
			if !ok {
				bad("entity filter[%d]: want a mapping", i)
				continue
			}
			for _, k := range sortedKeys(fm) {
				if !slices.Contains([]string{"integration", "domain", "device_class", "supported_features"}, k) {
					bad("entity filter[%d]: unknown key %q", i, k)
				}
			}
		}
		if hasDefault {
			if cfg["multiple"] == true {
				if _, ok := def.([]any); !ok {
					bad("default %#v: a multiple entity selector takes a list", def)
				}
			} else if _, ok := def.(string); !ok {
				bad("default %#v: want an entity id", def)
			}
		}
	case "number":
		allowed("min", "max", "step", "unit_of_measurement", "mode", "translation_key")
		lo, hasLo := toFloat(cfg["min"])
		hi, hasHi := toFloat(cfg["max"])
		mode, _ := cfg["mode"].(string)
		if mode != "" && mode != "box" && mode != "slider" {
			bad("number mode %q: want box or slider", mode)
		}
		if mode == "slider" && !(hasLo && hasHi) {
			bad("number: slider mode needs min and max")
		}
		if hasDefault {
			v, ok := toFloat(def)
			switch {
			case !ok:
				bad("default %#v is not a number", def)
			case hasLo && v < lo, hasHi && v > hi:
				bad("default %v outside %v..%v", v, lo, hi)
			}
		}
	case "select":
		allowed("options", "multiple", "custom_value", "mode", "translation_key", "sort")
		if m, ok := cfg["mode"].(string); ok && m != "list" && m != "dropdown" {
			bad("select mode %q: want list or dropdown", m)
		}
		opts, _ := cfg["options"].([]any)
		if len(opts) == 0 {
			bad("select: options are required")
		}
		var values []string
		for i, o := range opts {
			switch ov := o.(type) {
			case string:
				values = append(values, ov)
			case map[string]any:
				v, okV := ov["value"].(string)
				_, okL := ov["label"].(string)
				if !okV || !okL || len(ov) != 2 {
					bad("select option %d: want value and label strings, got %#v", i, o)
				}
				values = append(values, v)
			default:
				bad("select option %d: %#v", i, o)
			}
		}
		if s, ok := def.(string); hasDefault && (!ok || !slices.Contains(values, s)) {
			bad("default %#v is not one of %v", def, values)
		}
	case "color_rgb":
		allowed()
		if hasDefault {
			l, ok := def.([]any)
			if !ok || len(l) != 3 {
				bad("default %#v: want [r, g, b]", def)
				break
			}
			for _, c := range l {
				if n, ok := c.(int); !ok || n < 0 || n > 255 {
					bad("default %#v: components are 0-255 integers", def)
				}
			}
		}
	case "boolean":
		allowed()
		if _, ok := def.(bool); hasDefault && !ok {
			bad("default %#v is not a bool", def)
		}
	default:
		bad("selector %s: no rules in this test yet; add them", typ)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// TestBlueprintTrigger: one state trigger on the people's sensors with no
// from, to or attribute, so it fires on unavailable and on attribute
// changes (an activity change arrives as a new observed_at).
func TestBlueprintTrigger(t *testing.T) {
	bp := loadBlueprint(t, lightPath)
	triggers, _ := bp.doc["triggers"].([]any)
	if len(triggers) != 1 {
		t.Fatalf("triggers = %#v, want one", bp.doc["triggers"])
	}
	want := map[string]any{"trigger": "state", "entity_id": inputRef("people")}
	if diff := cmp.Diff(want, triggers[0]); diff != "" {
		t.Errorf("trigger (-want +got):\n%s", diff)
	}
}

// A Go model of what the blueprint must do, built on the Hue sink.

// lookOf is the contract of the colour inputs: which look each
// availability shows. The blueprint's availability_look must equal it.
var lookOf = map[presence.Availability]string{
	presence.AvailabilityAvailable:       "available",
	presence.AvailabilityAvailableIdle:   "available",
	presence.AvailabilityAway:            "away",
	presence.AvailabilityBeRightBack:     "away",
	presence.AvailabilityBusy:            "busy",
	presence.AvailabilityBusyIdle:        "busy",
	presence.AvailabilityDoNotDisturb:    "dnd",
	presence.AvailabilityOffline:         "offline",
	presence.AvailabilityPresenceUnknown: "offline",
}

func online(av presence.Availability, ac presence.Activity) bridge.State {
	return bridge.State{Availability: av, Activity: ac, Online: true}
}

func TestBlueprintDecisionTable(t *testing.T) {
	bp := loadBlueprint(t, lightPath)
	vars := bp.variables(t)

	avRank := map[string]int{}
	for _, a := range presence.Availabilities() {
		avRank[a.String()] = hue.Rank(online(a, presence.ActivityPresenceUnknown))
	}
	acRank := map[string]int{}
	for _, c := range presence.Activities() {
		acRank[c.String()] = hue.Rank(online(presence.AvailabilityPresenceUnknown, c))
	}
	if diff := cmp.Diff(avRank, intTable(t, vars, "availability_rank")); diff != "" {
		t.Errorf("availability_rank (-hue.Rank +blueprint):\n%s", diff)
	}
	if diff := cmp.Diff(acRank, intTable(t, vars, "activity_rank")); diff != "" {
		t.Errorf("activity_rank (-hue.Rank +blueprint):\n%s", diff)
	}
	// The template ranks a person by the higher of the two entries.
	for _, a := range presence.Availabilities() {
		for _, c := range presence.Activities() {
			if got, want := max(avRank[a.String()], acRank[c.String()]), hue.Rank(online(a, c)); got != want {
				t.Errorf("%v/%v: max of the entries = %d, hue.Rank = %d", a, c, got, want)
			}
		}
	}

	looks, _ := vars["availability_look"].(map[string]any)
	wantLooks := map[string]any{}
	for a, l := range lookOf {
		wantLooks[a.String()] = l
	}
	if diff := cmp.Diff(wantLooks, looks); diff != "" {
		t.Errorf("availability_look (-contract +blueprint):\n%s", diff)
	}

	// Defaults: each availability's look shows hue.DefaultColor at full
	// brightness, or the lamps go off where the sink turns them off.
	lookInputs, _ := vars["looks"].(map[string]any)
	offlineAction := bp.resolve(t, vars["offline_action"])
	for _, a := range presence.Availabilities() {
		name := lookOf[a]
		l, ok := lookInputs[name].(map[string]any)
		if !ok {
			t.Errorf("looks.%s: missing", name)
			continue
		}
		for _, k := range []string{"color", "brightness"} {
			if _, isRef := l[k].(inputRef); !isRef {
				t.Errorf("looks.%s.%s = %#v: want an !input", name, k, l[k])
			}
		}
		hex := hue.DefaultColor(a)
		if hex == "" {
			if name != "offline" || offlineAction != "off" {
				t.Errorf("%v: the Hue sink turns the lamps off; the blueprint shows look %s with offline_action %v", a, name, offlineAction)
			}
			continue
		}
		r, g, b, err := hue.ParseHex(hex)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"color": []any{int(r), int(g), int(b)}, "brightness": 100}
		if diff := cmp.Diff(want, bp.resolve(t, l)); diff != "" {
			t.Errorf("%v: default look %s (-hue.DefaultColor +blueprint):\n%s", a, name, diff)
		}
	}
	if got := hue.BriFromPercent(100); got != 254 {
		t.Errorf("100 %% is Hue brightness %d, want 254 (the sink's full brightness)", got)
	}

	var inCall []any
	for _, c := range presence.Activities() {
		if c.InCall() {
			inCall = append(inCall, c.String())
		}
	}
	got, _ := vars["in_call_activities"].([]any)
	less := func(a, b any) bool { return fmt.Sprint(a) < fmt.Sprint(b) }
	if diff := cmp.Diff(inCall, got, cmpopts.SortSlices(less)); diff != "" {
		t.Errorf("in_call_activities (-presence.Activity.InCall +blueprint):\n%s", diff)
	}
}

func intTable(t *testing.T, vars map[string]any, name string) map[string]int {
	t.Helper()
	m, ok := vars[name].(map[string]any)
	if !ok {
		t.Fatalf("variables.%s: want a mapping", name)
	}
	out := map[string]int{}
	for k, v := range m {
		n, ok := v.(int)
		if !ok {
			t.Errorf("variables.%s.%s = %#v: want an integer", name, k, v)
		}
		out[k] = n
	}
	return out
}

// TestDiscoveryFitsTheBlueprint: the facts about the bridge's entities the
// blueprint relies on, read from discovery's golden payload.
func TestDiscoveryFitsTheBlueprint(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "discovery", "testdata", "user.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Payload struct {
			StateTopic string `json:"state_topic"`
			Components map[string]struct {
				Platform               string   `json:"platform"`
				DeviceClass            string   `json:"device_class"`
				Options                []string `json:"options"`
				DefaultEntityID        string   `json:"default_entity_id"`
				JSONAttributesTopic    string   `json:"json_attributes_topic"`
				JSONAttributesTemplate string   `json:"json_attributes_template"`
			} `json:"components"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(data, &golden); err != nil {
		t.Fatal(err)
	}
	comps := golden.Payload.Components
	av, ac := comps["availability"], comps["activity"]
	// The people selector's filter: MQTT sensors of device class enum.
	if av.Platform != "sensor" || av.DeviceClass != "enum" || !strings.HasSuffix(av.DefaultEntityID, "_teams_availability") {
		t.Errorf("availability component %+v: the people selector looks for enum sensors", av)
	}
	// The activity sensor is found as the device's sensor whose options
	// include Presenting: exactly one.
	var withPresenting []string
	for key, c := range comps {
		if c.Platform == "sensor" && slices.Contains(c.Options, "Presenting") {
			withPresenting = append(withPresenting, key)
		}
	}
	if diff := cmp.Diff([]string{"activity"}, withPresenting); diff != "" {
		t.Errorf("sensors whose options include Presenting (-want +got):\n%s", diff)
	}
	if ac.Platform != "sensor" {
		t.Errorf("activity component platform %q", ac.Platform)
	}
	// An activity change changes the availability sensor's attributes.
	if av.JSONAttributesTopic != golden.Payload.StateTopic || !strings.Contains(av.JSONAttributesTemplate, "value_json.observed_at") {
		t.Errorf("availability attributes (topic %q, template %q): the blueprint's trigger needs observed_at from the state topic",
			av.JSONAttributesTopic, av.JSONAttributesTemplate)
	}
}

// TestDocsImportLink: DOCS.md links to Home Assistant's import page with
// the blueprint's raw URL.
func TestDocsImportLink(t *testing.T) {
	docs, err := os.ReadFile(filepath.Join("..", "DOCS.md"))
	if err != nil {
		t.Fatal(err)
	}
	link := "https://my.home-assistant.io/redirect/blueprint_import/?blueprint_url=" + url.QueryEscape(lightRawURL)
	if !strings.Contains(string(docs), link) {
		t.Errorf("DOCS.md lacks the import link %s", link)
	}
}
