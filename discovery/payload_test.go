package discovery

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var alex = config.User{ID: "6f1c2a3b-1111-2222-3333-444455556666", Name: "Alex"}

// TestGolden pins every discovery payload the bridge publishes, byte for
// byte: Home Assistant silently drops a misspelt key, only this catches it.
func TestGolden(t *testing.T) {
	tp := newTopics("homeassistant", "presence-bridge")
	for _, tc := range []struct {
		name  string
		topic string
		dc    DeviceConfig
	}{
		{"bridge", tp.bridgeConfig(), bridgeConfig(tp, "1.2.3", true, []string{"service_bus"})},
		{"bridge_without_hue", tp.bridgeConfig(), bridgeConfig(tp, "1.2.3", false, []string{"service_bus"})},
		{"bridge_with_graph", tp.bridgeConfig(), func() DeviceConfig {
			c := bridgeConfig(tp, "1.2.3", false, []string{"service_bus", "graph"})
			addSignIn(&c, tp)
			return c
		}()},
		{"user", tp.userConfig(alex.ID), userConfig(tp, "1.2.3", alex)},
		{"user_other_base", newTopics("ha", "Home/Bridge 2").userConfig(alex.ID),
			userConfig(newTopics("ha", "Home/Bridge 2"), "1.2.3", config.User{ID: alex.ID, Name: "Zoë O'Brien"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.dc)
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(tc.topic, b, published()); err != nil {
				t.Fatalf("golden payload invalid: %v", err)
			}
			// The file holds the topic too, so a topic change shows up here.
			got, err := json.MarshalIndent(struct {
				Topic   string          `json:"topic"`
				Payload json.RawMessage `json:"payload"`
			}{tc.topic, b}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./discovery -run TestGolden -update)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("payload differs from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

func TestStateJSON(t *testing.T) {
	at := time.Date(2026, 11, 26, 20, 0, 0, 123_000_000, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		name string
		st   bridge.State
		want statePayload
	}{
		{"in a call", bridge.State{Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall,
			StatusMessage: "Back at 3", ObservedAt: at, Source: "service_bus"},
			statePayload{"Busy", "InACall", "ON", "ON", "Back at 3", false, "2026-11-26T19:00:00.123Z", "service_bus"}},
		{"available", bridge.State{Availability: presence.AvailabilityAvailable, Activity: presence.ActivityAvailable, OutOfOffice: true, ObservedAt: at},
			statePayload{"Available", "Available", "OFF", "OFF", "", true, "2026-11-26T19:00:00.123Z", ""}},
		{"do not disturb presenting", bridge.State{Availability: presence.AvailabilityDoNotDisturb, Activity: presence.ActivityPresenting},
			statePayload{"DoNotDisturb", "Presenting", "ON", "ON", "", false, "", ""}},
		{"unmappable values", bridge.State{Availability: presence.Availability(200), Activity: presence.Activity(99)},
			statePayload{"PresenceUnknown", "PresenceUnknown", "OFF", "OFF", "", false, "", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got statePayload
			if err := json.Unmarshal(stateJSON(tc.st), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStateKeys pins the state topic's keys (SPEC §4).
func TestStateKeys(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal(stateJSON(bridge.State{}), &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	want := []string{"activity", "availability", "busy", "in_call", "observed_at", "out_of_office", "source", "status_message"}
	if diff := cmp.Diff(want, keys, cmpSorted); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
}

var cmpSorted = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

// Every state the bridge can publish is among the enum options.
func TestStatesWithinOptions(t *testing.T) {
	dc := userConfig(newTopics("homeassistant", "presence-bridge"), "", alex)
	in := func(opts []string, v string) bool {
		for _, o := range opts {
			if o == v {
				return true
			}
		}
		return false
	}
	for a := range presence.Availability(255) {
		for _, act := range []presence.Activity{presence.Activity(a), presence.Activity(255 - a)} {
			var p statePayload
			if err := json.Unmarshal(stateJSON(bridge.State{Availability: presence.Availability(a), Activity: act}), &p); err != nil {
				t.Fatal(err)
			}
			if !in(dc.Components[keyAvailability].Options, p.Availability) || !in(dc.Components[keyActivity].Options, p.Activity) {
				t.Fatalf("state %+v outside options", p)
			}
		}
	}
}

func TestValidateRules(t *testing.T) {
	tp := newTopics("homeassistant", "presence-bridge")
	good := func() map[string]any {
		b, _ := json.Marshal(userConfig(tp, "1", alex))
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m
	}
	goodBridge := func() map[string]any {
		b, _ := json.Marshal(bridgeConfig(tp, "1", true, []string{"service_bus"}))
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m
	}
	comp := func(m map[string]any, key string) map[string]any {
		return m["components"].(map[string]any)[key].(map[string]any)
	}
	topic := tp.userConfig(alex.ID)
	for _, tc := range []struct {
		name   string
		topic  string
		bridge bool
		mutate func(m map[string]any)
		want   string // a fragment of the error; empty: valid
	}{
		{name: "user payload is valid", mutate: func(map[string]any) {}},
		{name: "bridge payload is valid", bridge: true, mutate: func(map[string]any) {}},
		{name: "device required", mutate: func(m map[string]any) { delete(m, "device") }, want: "device: required object"},
		{name: "origin required", mutate: func(m map[string]any) { delete(m, "origin") }, want: "origin: required object"},
		{name: "origin name required", mutate: func(m map[string]any) { delete(m["origin"].(map[string]any), "name") }, want: "origin.name: required"},
		{name: "unknown origin key", mutate: func(m map[string]any) { m["origin"].(map[string]any)["url"] = "x" }, want: "origin.url: unknown key"},
		{name: "components required", mutate: func(m map[string]any) { delete(m, "components") }, want: "components: required"},
		{name: "unknown device key", mutate: func(m map[string]any) { m["device"].(map[string]any)["support_url"] = "https://x" }, want: "device.support_url: unknown key"},
		{name: "device identifiers", mutate: func(m map[string]any) { delete(m["device"].(map[string]any), "identifiers") }, want: "needs identifiers or connections"},
		{name: "device configuration url", mutate: func(m map[string]any) { m["device"].(map[string]any)["configuration_url"] = "ftp://x" }, want: "device.configuration_url"},
		{name: "unknown root key", mutate: func(m map[string]any) { m["stat_topic"] = "a/b" }, want: "stat_topic: unknown key"},
		{name: "misspelt component key", mutate: func(m map[string]any) { comp(m, "availability")["device_lass"] = "enum" }, want: "components.availability.device_lass: unknown key"},
		{name: "unknown platform", mutate: func(m map[string]any) { comp(m, "busy")["platform"] = "light" }, want: "is not one of"},
		{name: "unique_id required", mutate: func(m map[string]any) { delete(comp(m, "busy"), "unique_id") }, want: "components.busy.unique_id: required"},
		{name: "unique_id unique", mutate: func(m map[string]any) { comp(m, "busy")["unique_id"] = comp(m, "in_call")["unique_id"] }, want: "already used"},
		{name: "default_entity_id domain equals platform", mutate: func(m map[string]any) {
			comp(m, "busy")["default_entity_id"] = "sensor.alex_teams_busy"
		}, want: `domain "sensor" differs from platform "binary_sensor"`},
		{name: "default_entity_id form", mutate: func(m map[string]any) { comp(m, "busy")["default_entity_id"] = "alex_teams_busy" }, want: "is not <domain>.<object_id>"},
		{name: "enum options required", mutate: func(m map[string]any) { delete(comp(m, "activity"), "options") }, want: "options: required with device_class enum"},
		{name: "enum options non-empty", mutate: func(m map[string]any) { comp(m, "activity")["options"] = []any{} }, want: "must be a non-empty list"},
		{name: "enum options hold every published state", mutate: func(m map[string]any) {
			comp(m, "availability")["options"] = []any{"Available", "Busy"}
		}, want: `missing "DoNotDisturb"`},
		{name: "enum without state_class", mutate: func(m map[string]any) { comp(m, "activity")["state_class"] = "measurement" }, want: "state_class: not allowed"},
		{name: "enum without unit", mutate: func(m map[string]any) { comp(m, "activity")["unit_of_measurement"] = "x" }, want: "unit_of_measurement: not allowed"},
		{name: "state_topic required", mutate: func(m map[string]any) { delete(m, "state_topic") }, want: "components.activity.state_topic: required"},
		{name: "select command_topic required", bridge: true, mutate: func(m map[string]any) { delete(comp(m, "hue_mode"), "command_topic") }, want: "components.hue_mode.command_topic: required"},
		{name: "select options required", bridge: true, mutate: func(m map[string]any) { delete(comp(m, "hue_mode"), "options") }, want: "components.hue_mode.options: required"},
		{name: "select options hold every mode", bridge: true, mutate: func(m map[string]any) { comp(m, "hue_mode")["options"] = []any{"auto"} }, want: `missing "always"`},
		{name: "availability topic and list exclusive", mutate: func(m map[string]any) { m["availability_topic"] = "a/b" }, want: "exclusive"},
		{name: "availability mode", mutate: func(m map[string]any) { m["availability_mode"] = "every" }, want: "is not latest, any or all"},
		{name: "availability entry topic", mutate: func(m map[string]any) { m["availability"].([]any)[1].(map[string]any)["topic"] = "" }, want: "availability[1].topic: must be a non-empty topic"},
		{name: "no wildcard in topics", mutate: func(m map[string]any) { m["state_topic"] = "presence-bridge/+/state" }, want: "is not a valid topic name"},
		{name: "discovery object id characters", topic: "homeassistant/device/presence_bridge_alex@contoso.com/config", mutate: func(map[string]any) {}, want: "outside [a-zA-Z0-9_-]"},
		{name: "discovery topic shape", topic: "homeassistant/sensor/x/config", mutate: func(map[string]any) {}, want: "is not <prefix>/device/<object_id>/config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tpc := topic
			if tc.bridge {
				m, tpc = goodBridge(), tp.bridgeConfig()
			}
			if tc.topic != "" {
				tpc = tc.topic
			}
			tc.mutate(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			err = Validate(tpc, b, published())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate accepted a payload breaking %q", tc.name)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate: %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidateNotJSON(t *testing.T) {
	for _, p := range []string{"", "[]", "null", "{", `"x"`} {
		if err := Validate("homeassistant/device/x/config", []byte(p), nil); err == nil {
			t.Errorf("Validate(%q) = nil", p)
		}
	}
}

func TestStaleUser(t *testing.T) {
	tp := newTopics("homeassistant", "presence-bridge")
	own := func(id presence.UserID) []byte {
		b, _ := json.Marshal(userConfig(tp, "1", config.User{ID: id, Name: "Old"}))
		return b
	}
	for _, tc := range []struct {
		name    string
		topic   string
		payload []byte
		want    presence.UserID // empty: not ours
	}{
		{"our user", tp.userConfig("gone-1"), own("gone-1"), "gone-1"},
		{"identifier as a string", tp.userConfig("gone-2"), []byte(`{"device":{"identifiers":"presence_bridge_gone-2","via_device":"presence_bridge"}}`), "gone-2"},
		{"the bridge device", tp.bridgeConfig(), []byte(`{"device":{"identifiers":["presence_bridge"]}}`), ""},
		{"other base topic", newTopics("homeassistant", "other").userConfig("gone-1"), own("gone-1"), ""},
		{"foreign device in our topic space", tp.userConfig("zz"), []byte(`{"device":{"identifiers":["zigbee_zz"],"via_device":"presence_bridge"}}`), ""},
		{"foreign via_device", tp.userConfig("zz"), []byte(`{"device":{"identifiers":["presence_bridge_zz"],"via_device":"zigbee2mqtt"}}`), ""},
		{"identifier of another topic", tp.userConfig("a"), own("b"), ""},
		{"not json", tp.userConfig("a"), []byte("{"), ""},
		{"identifiers wrong type", tp.userConfig("a"), []byte(`{"device":{"identifiers":5,"via_device":"presence_bridge"}}`), ""},
		{"empty", tp.userConfig("a"), nil, ""},
		{"other prefix", "ha/device/presence_bridge_a/config", own("a"), ""},
		{"nested object id", "homeassistant/device/presence_bridge_a/b/config", own("a"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, ok := staleUser(tp, tc.topic, tc.payload)
			if ok != (tc.want != "") || id != tc.want {
				t.Fatalf("staleUser = %q, %v; want %q", id, ok, tc.want)
			}
		})
	}
}

func FuzzStaleUser(f *testing.F) {
	tp := newTopics("homeassistant", "presence-bridge")
	b, _ := json.Marshal(userConfig(tp, "1", alex))
	f.Add(tp.userConfig(alex.ID), b)
	f.Add(tp.bridgeConfig(), []byte(`{"device":{"identifiers":"x"}}`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		id, ok := staleUser(tp, topic, payload)
		if ok && (tp.userConfig(id) != topic || !objectIDRe.MatchString(string(id))) {
			t.Fatalf("staleUser(%q) = %q: not the topic's user", topic, id)
		}
	})
}

func FuzzValidate(f *testing.F) {
	tp := newTopics("homeassistant", "presence-bridge")
	b, _ := json.Marshal(userConfig(tp, "1", alex))
	f.Add(tp.userConfig(alex.ID), b)
	f.Add("a/device/b/config", []byte(`{"components":{"x":{"platform":"sensor"}}}`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		_ = Validate(topic, payload, published()) // must not panic
	})
}

func TestRemovalPayload(t *testing.T) {
	tp := newTopics("homeassistant", "presence-bridge")
	withHue, _ := json.Marshal(bridgeConfig(tp, "1", true, []string{"service_bus"}))
	noHue := bridgeConfig(tp, "1", false, []string{"service_bus"})
	noHueJSON, _ := json.Marshal(noHue)
	dm := deviceMessage{topic: tp.bridgeConfig(), payload: noHueJSON, components: map[string]string{"service_bus": platformBinarySensor}}

	got := removalPayload(withHue, dm)
	var m struct {
		Components map[string]map[string]any `json:"components"`
	}
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatalf("removal payload %q: %v", got, err)
	}
	if diff := cmp.Diff(map[string]any{"platform": "select"}, m.Components["hue_mode"]); diff != "" {
		t.Errorf("hue_mode removal (-want +got):\n%s", diff)
	}
	if m.Components["service_bus"]["unique_id"] != "presence_bridge_service_bus" {
		t.Errorf("kept component lost: %v", m.Components["service_bus"])
	}
	if r := removalPayload(noHueJSON, dm); r != nil {
		t.Errorf("nothing removed, got %s", r)
	}
	abbreviated := []byte(`{"cmps":{"old":{"p":"sensor"}}}`)
	if r := removalPayload(abbreviated, dm); !bytes.Contains(r, []byte(`"old":{"platform":"sensor"}`)) {
		t.Errorf("abbreviated removal = %s", r)
	}
}

// TestSignInJSON: the sign-in sensor's state is the instruction while a
// sign-in waits and empty otherwise (through the template: a bare empty
// payload would leave the old code shown), with the parts as attributes.
func TestSignInJSON(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 15, 0, 0, time.UTC)
	waiting := string(signInJSON(SignInState{URL: "https://microsoft.com/devicelogin", Code: "ABCD1234", ExpiresAt: at}))
	want := `{"text":"Open https://microsoft.com/devicelogin and enter the code ABCD1234","url":"https://microsoft.com/devicelogin","code":"ABCD1234","expires_at":"2026-12-03T10:15:00Z","last_result":""}`
	if waiting != want {
		t.Errorf("waiting:\n got %s\nwant %s", waiting, want)
	}
	done := string(signInJSON(SignInState{LastResult: "signed_in", ExpiresAt: at}))
	if done != `{"text":"","url":"","code":"","expires_at":"","last_result":"signed_in"}` {
		t.Errorf("done: %s", done)
	}
}
