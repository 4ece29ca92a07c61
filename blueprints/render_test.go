package blueprints

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/hue"
	"github.com/presence-bridge/presence-bridge/presence"
)

// The template tests run the blueprint with Jinja2 (testdata/render_blueprint.py)
// and compare the light calls with a Go model built on the Hue sink.

// python is the interpreter Debian's python3-jinja2 installs for.
const python = "/usr/bin/python3"

const jinjaInstallHint = "apt-get install -y python3-jinja2 python3-yaml"

// requireJinja skips the test in -short mode, and when Jinja2 is missing
// (fails it under CI=true).
func requireJinja(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("renders the blueprint's templates with Jinja2: skipped in -short mode")
	}
	if out, err := exec.Command(python, "-c", "import jinja2, yaml").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("%s cannot import jinja2 and yaml (%v: %s); install them with: %s",
			python, err, bytes.TrimSpace(out), jinjaInstallHint)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

type haState struct {
	State      string         `json:"state"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

type renderCase struct {
	Name    string             `json:"name"`
	Inputs  map[string]any     `json:"inputs"`
	States  map[string]haState `json:"states"`
	Devices map[string]string  `json:"devices"`
	Report  []string           `json:"report"`
}

type renderResult struct {
	Name      string         `json:"name"`
	Variables map[string]any `json:"variables"`
	Calls     []any          `json:"calls"`
	Error     string         `json:"error"`
}

func render(t *testing.T, cases []renderCase) []renderResult {
	t.Helper()
	req, err := json.Marshal(map[string]any{"blueprint": lightPath, "cases": cases})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), python, "testdata/render_blueprint.py")
	cmd.Stdin = bytes.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render_blueprint.py: %v\n%s", err, stderr.String())
	}
	var res []renderResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("render_blueprint.py output: %v", err)
	}
	if len(res) != len(cases) {
		t.Fatalf("%d results for %d cases", len(res), len(cases))
	}
	return res
}

// person is one person as Home Assistant sees them: the states of their
// availability and activity sensors. activity "" means no activity sensor.
type person struct {
	id           string
	availability string
	activity     string
	// entity overrides the availability sensor's entity id (renamed).
	entity string
	// noDevice: the sensors are not linked to a device.
	noDevice bool
}

func (p person) availabilityEntity() string {
	if p.entity != "" {
		return p.entity
	}
	return "sensor." + p.id + "_teams_availability"
}

// state is what the Hue sink would hold for the person: unavailable and
// unknown sensors are a user that is not online.
func (p person) state() bridge.State {
	av, ok := exactAvailability(p.availability)
	if !ok {
		return bridge.State{}
	}
	ac, ok := exactActivity(p.activity)
	if !ok || p.noDevice {
		ac = presence.ActivityPresenceUnknown
	}
	return online(av, ac)
}

func exactAvailability(s string) (presence.Availability, bool) {
	for _, a := range presence.Availabilities() {
		if a.String() == s {
			return a, true
		}
	}
	return 0, false
}

func exactActivity(s string) (presence.Activity, bool) {
	for _, a := range presence.Activities() {
		if a.String() == s {
			return a, true
		}
	}
	return 0, false
}

func names[T fmt.Stringer](vals []T) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = v.String()
	}
	return out
}

// home builds the states and device registry of people as the bridge's
// discovery announces them: per person a device with availability and
// activity enum sensors and two binary sensors.
func home(people []person) (map[string]haState, map[string]string) {
	states := map[string]haState{}
	devices := map[string]string{}
	for _, p := range people {
		dev := "dev_" + p.id
		link := func(entity string) {
			if !p.noDevice {
				devices[entity] = dev
			}
		}
		av := p.availabilityEntity()
		states[av] = haState{State: p.availability, Attributes: map[string]any{
			"options": names(presence.Availabilities()), "device_class": "enum",
			"observed_at": "2026-11-26T20:00:00Z",
		}}
		link(av)
		inCall := "binary_sensor." + p.id + "_teams_in_call"
		states[inCall] = haState{State: "off"}
		link(inCall)
		if p.activity != "" {
			ac := "sensor." + p.id + "_teams_activity"
			if p.entity != "" {
				ac = "sensor." + p.id + "_what_they_do" // renamed too
			}
			states[ac] = haState{State: p.activity, Attributes: map[string]any{
				"options": names(presence.Activities()), "device_class": "enum",
			}}
			link(ac)
		}
		busy := "binary_sensor." + p.id + "_teams_busy"
		states[busy] = haState{State: "off"}
		link(busy)
	}
	return states, devices
}

// settings are the blueprint's colour inputs for a case; nil colors means
// the defaults.
type settings struct {
	colors     map[string][3]int
	brightness map[string]int
	inCall     bool
	offline    string // off, keep or color
}

var lookNames = []string{"available", "away", "busy", "dnd", "in_call", "offline"}

// distinct gives every look its own colour and brightness, so the light
// call tells which look was chosen.
func distinct(offline string) settings {
	s := settings{colors: map[string][3]int{}, brightness: map[string]int{}, inCall: true, offline: offline}
	for i, n := range lookNames {
		s.colors[n] = [3]int{10 * (i + 1), 20 * (i + 1), 30 * (i + 1)}
		s.brightness[n] = 11 * (i + 1)
	}
	return s
}

func (s settings) inputs(people []person, lights []string) map[string]any {
	in := map[string]any{}
	var ents []any
	for _, p := range people {
		ents = append(ents, p.availabilityEntity())
	}
	in["people"] = ents
	var ls []any
	for _, l := range lights {
		ls = append(ls, l)
	}
	in["lights"] = ls
	for n, c := range s.colors {
		in[n+"_color"] = []int{c[0], c[1], c[2]}
	}
	for n, b := range s.brightness {
		in[n+"_brightness"] = b
	}
	if s.inCall {
		in["in_call_enabled"] = true
	}
	if s.offline != "" {
		in["offline_action"] = s.offline
	}
	return in
}

// busiestIndex is the Hue sink's choice: the highest hue.Rank, the first
// on a tie.
func busiestIndex(people []person) int {
	best, bestRank := 0, -1
	for i, p := range people {
		if r := hue.Rank(p.state()); r > bestRank {
			best, bestRank = i, r
		}
	}
	return best
}

// expectCalls is what the lights should get.
func expectCalls(people []person, s settings, lights []string) []any {
	st := people[busiestIndex(people)].state()
	av := st.Availability
	if !st.Online {
		av = presence.AvailabilityPresenceUnknown
	}
	look := lookOf[av]
	if s.inCall && st.Activity.InCall() {
		look = "in_call"
	}
	target := map[string]any{"entity_id": lights}
	on := func(rgb [3]int, pct int) []any {
		return []any{map[string]any{"action": "light.turn_on", "target": target,
			"data": map[string]any{"rgb_color": rgb[:], "brightness_pct": pct}}}
	}
	if look == "offline" {
		switch s.offline {
		case "", "off":
			return []any{map[string]any{"action": "light.turn_off", "target": target, "data": map[string]any{}}}
		case "keep":
			return []any{} // nothing is sent
		}
		return on(s.colors["offline"], s.brightness["offline"])
	}
	if s.colors == nil { // the defaults: the Hue sink's own colours
		r, g, b, err := hue.ParseHex(hue.DefaultColor(av))
		if err != nil {
			panic(fmt.Sprintf("%v: look %s but no default colour", av, look))
		}
		return on([3]int{int(r), int(g), int(b)}, 100)
	}
	return on(s.colors[look], s.brightness[look])
}

// expectBusiest is the busiest variable the blueprint should compute.
func expectBusiest(people []person) map[string]any {
	p := people[busiestIndex(people)]
	st := p.state()
	av, ac := st.Availability, st.Activity
	if !st.Online {
		av, ac = presence.AvailabilityPresenceUnknown, presence.ActivityPresenceUnknown
	}
	return map[string]any{"availability": av.String(), "activity": ac.String(), "rank": hue.Rank(st)}
}

type scenario struct {
	name   string
	people []person
	s      settings
}

func (sc scenario) renderCase(lights []string) renderCase {
	states, devices := home(sc.people)
	return renderCase{
		Name: sc.name, Inputs: sc.s.inputs(sc.people, lights),
		States: states, Devices: devices, Report: []string{"busiest", "look"},
	}
}

// normalize gives expected and rendered values the same JSON types.
func normalize(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func runScenarios(t *testing.T, scenarios []scenario) {
	t.Helper()
	lights := []string{"light.office", "light.office_door"}
	cases := make([]renderCase, len(scenarios))
	for i, sc := range scenarios {
		cases[i] = sc.renderCase(lights)
	}
	results := render(t, cases)
	failures := 0
	for i, sc := range scenarios {
		res := results[i]
		if res.Error != "" {
			t.Errorf("%s: %s", sc.name, res.Error)
			failures++
		} else {
			if diff := cmp.Diff(normalize(t, expectBusiest(sc.people)), normalize(t, res.Variables["busiest"])); diff != "" {
				t.Errorf("%s: busiest (-hue +blueprint):\n%s", sc.name, diff)
				failures++
			}
			if diff := cmp.Diff(normalize(t, expectCalls(sc.people, sc.s, lights)), normalize(t, res.Calls)); diff != "" {
				t.Errorf("%s: light calls (-hue +blueprint):\n%s\nlook: %v", sc.name, diff, res.Variables["look"])
				failures++
			}
		}
		if failures >= 10 {
			t.Fatal("stopping after 10 failures")
		}
	}
}

// One person, every availability × activity, and unavailable or unknown
// sensors, with the default inputs: the Hue sink's default colours.
func TestTemplatesOnePersonDefaults(t *testing.T) {
	requireJinja(t)
	var scs []scenario
	for _, a := range presence.Availabilities() {
		for _, c := range presence.Activities() {
			scs = append(scs, scenario{
				name:   fmt.Sprintf("%v/%v", a, c),
				people: []person{{id: "alex", availability: a.String(), activity: c.String()}},
			})
		}
	}
	for _, s := range []string{"unavailable", "unknown"} {
		scs = append(scs, scenario{name: s, people: []person{{id: "alex", availability: s, activity: s}}})
	}
	runScenarios(t, scs)
}

// representative is a spread of states: every availability, Busy with
// every activity, and a few odd or unavailable ones.
func representative() []person {
	var out []person
	for _, a := range presence.Availabilities() {
		out = append(out, person{availability: a.String(), activity: presence.ActivityPresenceUnknown.String()})
	}
	for _, c := range presence.Activities() {
		if c != presence.ActivityPresenceUnknown {
			out = append(out, person{availability: presence.AvailabilityBusy.String(), activity: c.String()})
		}
	}
	return append(out,
		person{availability: "Offline", activity: "OffWork"},
		person{availability: "Available", activity: "InACall"},
		person{availability: "unavailable", activity: "unavailable"},
	)
}

// Two people on one light, every pair of representative states, every look
// with its own colour: the busiest wins as in the Hue sink, the first on a
// tie.
func TestTemplatesTwoPeople(t *testing.T) {
	requireJinja(t)
	reps := representative()
	if len(reps) != 26 {
		t.Fatalf("%d representative states", len(reps))
	}
	var scs []scenario
	for _, a := range reps {
		for _, b := range reps {
			a.id, b.id = "alex", "sam"
			scs = append(scs, scenario{
				name:   fmt.Sprintf("alex %s/%s, sam %s/%s", a.availability, a.activity, b.availability, b.activity),
				people: []person{a, b},
				s:      distinct("color"),
			})
		}
	}
	runScenarios(t, scs)
}

func TestTemplatesOtherCases(t *testing.T) {
	requireJinja(t)
	p := func(id, av, ac string) person { return person{id: id, availability: av, activity: ac} }
	scs := []scenario{
		{name: "three people, presenting wins", people: []person{
			p("alex", "Busy", "InACall"), p("sam", "Available", "Available"), p("kim", "Busy", "Presenting")}},
		{name: "three people, dnd wins", people: []person{
			p("alex", "Busy", "Presenting"), p("sam", "DoNotDisturb", "DoNotDisturb"), p("kim", "Away", "Away")}},
		{name: "three people, nobody known", people: []person{
			p("alex", "unavailable", "unavailable"), p("sam", "unknown", "unknown"), p("kim", "PresenceUnknown", "PresenceUnknown")}},
		{name: "three people, one left online", people: []person{
			p("alex", "unavailable", "unavailable"), p("sam", "Offline", "OffWork"), p("kim", "Away", "Away")}},
		{name: "offline, off", people: []person{p("alex", "Offline", "Offline")}, s: settings{offline: "off"}},
		{name: "offline, keep", people: []person{p("alex", "Offline", "Offline")}, s: settings{offline: "keep"}},
		{name: "offline, colour", people: []person{p("alex", "Offline", "OffWork")}, s: distinct("color")},
		{name: "unavailable, keep", people: []person{p("alex", "unavailable", "unavailable")}, s: settings{offline: "keep"}},
		{name: "in-call colour off: the availability's", people: []person{p("alex", "Busy", "InAMeeting")}},
		{name: "in-call colour on", people: []person{p("alex", "Busy", "InAMeeting")}, s: distinct("off")},
		{name: "in-call colour on, not in a call", people: []person{p("alex", "Busy", "Busy")}, s: distinct("off")},
		{name: "renamed entities: the activity is found through the device", people: []person{
			{id: "alex", availability: "Busy", activity: "Presenting", entity: "sensor.door_sign"},
			p("sam", "Busy", "InACall")}, s: distinct("off")},
		{name: "no device: availability only", people: []person{
			{id: "alex", availability: "Busy", activity: "Presenting", noDevice: true},
			p("sam", "Busy", "InACall")}, s: distinct("off")},
		{name: "no activity sensor", people: []person{
			{id: "alex", availability: "DoNotDisturb"}, p("sam", "Busy", "Presenting")}, s: distinct("off")},
	}
	runScenarios(t, scs)
}

// A single entity id instead of a list (a YAML-written automation) works.
func TestTemplatesPeopleAsOneEntity(t *testing.T) {
	requireJinja(t)
	people := []person{{id: "alex", availability: "Away", activity: "Away"}}
	states, devices := home(people)
	c := renderCase{
		Name: "one entity", States: states, Devices: devices, Report: []string{"busiest"},
		Inputs: map[string]any{"people": "sensor.alex_teams_availability", "lights": "light.office"},
	}
	res := render(t, []renderCase{c})[0]
	if res.Error != "" {
		t.Fatal(res.Error)
	}
	if diff := cmp.Diff(normalize(t, expectBusiest(people)), normalize(t, res.Variables["busiest"])); diff != "" {
		t.Errorf("busiest (-hue +blueprint):\n%s", diff)
	}
}

// TestDocsExample runs the two-people example of DOCS.md and checks the
// story told under it.
func TestDocsExample(t *testing.T) {
	requireJinja(t)
	docs, err := os.ReadFile(filepath.Join("..", "DOCS.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(alias: Office light shows Teams presence\n.*?)```").FindSubmatch(docs)
	if m == nil {
		t.Fatal("DOCS.md: the office light example is missing")
	}
	var auto struct {
		UseBlueprint struct {
			Path  string         `yaml:"path"`
			Input map[string]any `yaml:"input"`
		} `yaml:"use_blueprint"`
	}
	if err := yaml.Unmarshal(m[1], &auto); err != nil {
		t.Fatalf("DOCS.md example: %v", err)
	}
	if auto.UseBlueprint.Path != "presence-bridge/presence_light.yaml" {
		t.Errorf("path %q: Home Assistant's import saves the blueprint as presence-bridge/presence_light.yaml", auto.UseBlueprint.Path)
	}
	on := func(rgb ...int) []any {
		return []any{map[string]any{"action": "light.turn_on", "target": map[string]any{"entity_id": []any{"light.office"}},
			"data": map[string]any{"rgb_color": rgb, "brightness_pct": 100}}}
	}
	off := []any{map[string]any{"action": "light.turn_off", "target": map[string]any{"entity_id": []any{"light.office"}}, "data": map[string]any{}}}
	steps := []struct {
		name     string
		alex     [2]string
		sam      [2]string
		wantCall []any
	}{
		{"Alex in a call: purple", [2]string{"Busy", "InACall"}, [2]string{"Available", "Available"}, on(160, 0, 255)},
		{"the call ends: red", [2]string{"Busy", "Busy"}, [2]string{"Available", "Available"}, on(255, 0, 0)},
		{"Alex offline: green for Sam", [2]string{"Offline", "Offline"}, [2]string{"Available", "Available"}, on(0, 255, 0)},
		{"both offline: off", [2]string{"Offline", "OffWork"}, [2]string{"Offline", "Offline"}, off},
	}
	var cases []renderCase
	for _, st := range steps {
		states, devices := home([]person{
			{id: "alex", availability: st.alex[0], activity: st.alex[1]},
			{id: "sam", availability: st.sam[0], activity: st.sam[1]},
		})
		cases = append(cases, renderCase{Name: st.name, Inputs: auto.UseBlueprint.Input, States: states, Devices: devices})
	}
	for i, res := range render(t, cases) {
		if res.Error != "" {
			t.Errorf("%s: %s", steps[i].name, res.Error)
			continue
		}
		if diff := cmp.Diff(normalize(t, steps[i].wantCall), normalize(t, res.Calls)); diff != "" {
			t.Errorf("%s: light calls (-DOCS.md +blueprint):\n%s", steps[i].name, diff)
		}
	}
}
