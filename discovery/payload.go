package discovery

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

// The payloads below are Home Assistant's device-based discovery messages.
// JSON tags are Home Assistant's long key names; Validate checks the
// marshalled result, and golden files pin it.

// DeviceConfig is one device-based discovery payload: a device, the program
// that announces it, and its entities ("components").
type DeviceConfig struct {
	Device     Device               `json:"device"`
	Origin     Origin               `json:"origin"`
	Components map[string]Component `json:"components"`
	// Options inherited by every component.
	StateTopic        string              `json:"state_topic,omitempty"`
	AvailabilityTopic string              `json:"availability_topic,omitempty"`
	Availability      []AvailabilityTopic `json:"availability,omitempty"`
	AvailabilityMode  string              `json:"availability_mode,omitempty"`
	QoS               int                 `json:"qos"`
}

// Device is Home Assistant's device registry entry. Home Assistant rejects
// the whole payload when device has a key it does not know.
type Device struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name"`
	Manufacturer string   `json:"manufacturer,omitempty"`
	Model        string   `json:"model,omitempty"`
	SWVersion    string   `json:"sw_version,omitempty"`
	ViaDevice    string   `json:"via_device,omitempty"`
}

// Origin names the program that publishes the discovery payload.
type Origin struct {
	Name       string `json:"name"`
	SWVersion  string `json:"sw_version,omitempty"`
	SupportURL string `json:"support_url,omitempty"`
}

// AvailabilityTopic is one entry of the availability list.
type AvailabilityTopic struct {
	Topic               string `json:"topic"`
	PayloadAvailable    string `json:"payload_available,omitempty"`
	PayloadNotAvailable string `json:"payload_not_available,omitempty"`
}

// Component is one entity of a device.
type Component struct {
	Platform               string   `json:"platform"`
	Name                   string   `json:"name"`
	UniqueID               string   `json:"unique_id"`
	DefaultEntityID        string   `json:"default_entity_id"`
	DeviceClass            string   `json:"device_class,omitempty"`
	EntityCategory         string   `json:"entity_category,omitempty"`
	Icon                   string   `json:"icon,omitempty"`
	Options                []string `json:"options,omitempty"`
	StateTopic             string   `json:"state_topic,omitempty"`
	ValueTemplate          string   `json:"value_template,omitempty"`
	CommandTopic           string   `json:"command_topic,omitempty"`
	PayloadPress           string   `json:"payload_press,omitempty"`
	PayloadOn              string   `json:"payload_on,omitempty"`
	PayloadOff             string   `json:"payload_off,omitempty"`
	JSONAttributesTopic    string   `json:"json_attributes_topic,omitempty"`
	JSONAttributesTemplate string   `json:"json_attributes_template,omitempty"`
}

// Platforms and fixed texts.
const (
	platformSensor       = "sensor"
	platformBinarySensor = "binary_sensor"
	platformSelect       = "select"
	platformButton       = "button"

	payloadOnline  = "online"
	payloadOffline = "offline"
	payloadOn      = "ON"
	payloadOff     = "OFF"

	originName = "presence-bridge"
	supportURL = "https://github.com/presence-bridge/presence-bridge"

	// haStatusTopic is where Home Assistant announces itself (birth and will).
	haStatusTopic = "homeassistant/status"
)

// Component keys of a user's device and of the bridge device.
const (
	keyAvailability = "availability"
	keyActivity     = "activity"
	keyInCall       = "in_call"
	keyBusy         = "busy"
	keyHueMode      = "hue_mode"
	keySignIn       = "graph_sign_in"
	keySignInCode   = "graph_sign_in_code"

	payloadPress = "PRESS"
)

// HueModes are the options of the hue_mode select.
func HueModes() []string {
	return []string{config.HueModeAuto, config.HueModeAlways, config.HueModeOff}
}

// topics names every MQTT topic of one bridge (SPEC §4).
type topics struct {
	prefix string // discovery prefix
	base   string // base topic
	node   string // base topic as an identifier
}

func newTopics(prefix, base string) topics {
	return topics{prefix: prefix, base: base, node: config.Slug(base)}
}

func (t topics) bridgeState() string                  { return t.base + "/bridge/state" }
func (t topics) bridgeConfig() string                 { return t.prefix + "/device/" + t.node + "/config" }
func (t topics) hueMode() string                      { return t.base + "/bridge/hue_mode" }
func (t topics) hueModeSet() string                   { return t.base + "/bridge/hue_mode/set" }
func (t topics) source(name string) string            { return t.base + "/bridge/" + name }
func (t topics) sync() string                         { return t.base + "/bridge/sync" }
func (t topics) signInPress() string                  { return t.base + "/bridge/" + keySignIn + "/press" }
func (t topics) signInCode() string                   { return t.base + "/bridge/" + keySignInCode }
func (t topics) userDevice(id presence.UserID) string { return t.node + "_" + string(id) }
func (t topics) userConfig(id presence.UserID) string {
	return t.prefix + "/device/" + t.userDevice(id) + "/config"
}
func (t topics) userState(id presence.UserID) string { return t.base + "/" + string(id) + "/state" }
func (t topics) userAvailability(id presence.UserID) string {
	return t.base + "/" + string(id) + "/availability"
}
func (t topics) configFilter() string { return t.prefix + "/device/+/config" }

func origin(version string) Origin {
	return Origin{Name: originName, SWVersion: version, SupportURL: supportURL}
}

// bridgeConfig is the discovery payload of the bridge device: its hue_mode
// select (only with Hue) and one connectivity sensor per source.
func bridgeConfig(t topics, version string, hue bool, sources []string) DeviceConfig {
	c := DeviceConfig{
		Device: Device{
			Identifiers:  []string{t.node},
			Name:         "Presence Bridge",
			Manufacturer: "Presence Bridge",
			Model:        "Teams presence bridge",
			SWVersion:    version,
		},
		Origin:            origin(version),
		Components:        make(map[string]Component),
		AvailabilityTopic: t.bridgeState(),
		QoS:               1,
	}
	if hue {
		c.Components[keyHueMode] = Component{
			Platform:        platformSelect,
			Name:            "Hue mode",
			UniqueID:        t.node + "_" + keyHueMode,
			DefaultEntityID: platformSelect + "." + t.node + "_" + keyHueMode,
			EntityCategory:  "config",
			Icon:            "mdi:lightbulb-group",
			Options:         HueModes(),
			StateTopic:      t.hueMode(),
			CommandTopic:    t.hueModeSet(),
		}
	}
	for _, src := range sources {
		c.Components[src] = Component{
			Platform:        platformBinarySensor,
			Name:            sourceName(src),
			UniqueID:        t.node + "_" + src,
			DefaultEntityID: platformBinarySensor + "." + t.node + "_" + src,
			DeviceClass:     "connectivity",
			EntityCategory:  "diagnostic",
			StateTopic:      t.source(src),
		}
	}
	return c
}

// addSignIn gives the bridge device the graph source's sign-in entities
// (SPEC §4): the graph_sign_in button, which starts a device-code sign-in,
// and the diagnostic graph_sign_in_code sensor, whose state is the URL and
// code to enter while a sign-in waits and empty otherwise. The sensor's
// state topic carries JSON (signInPayload): a bare empty payload would
// leave Home Assistant's sensor on the old code (an empty MQTT payload is
// ignored, and an empty retained one deletes the retained message), while
// a template rendering "" empties it.
func addSignIn(c *DeviceConfig, t topics) {
	c.Components[keySignIn] = Component{
		Platform:        platformButton,
		Name:            "Sign in",
		UniqueID:        t.node + "_" + keySignIn,
		DefaultEntityID: platformButton + "." + t.node + "_" + keySignIn,
		EntityCategory:  "config",
		Icon:            "mdi:login",
		CommandTopic:    t.signInPress(),
		PayloadPress:    payloadPress,
	}
	c.Components[keySignInCode] = Component{
		Platform:               platformSensor,
		Name:                   "Sign-in code",
		UniqueID:               t.node + "_" + keySignInCode,
		DefaultEntityID:        platformSensor + "." + t.node + "_" + keySignInCode,
		EntityCategory:         "diagnostic",
		Icon:                   "mdi:account-key",
		StateTopic:             t.signInCode(),
		ValueTemplate:          "{{ value_json.text }}",
		JSONAttributesTopic:    t.signInCode(),
		JSONAttributesTemplate: signInAttributesTemplate,
	}
}

// signInAttributesTemplate picks the sign-in's parts as attributes, for
// cards and automations.
const signInAttributesTemplate = `{{ {"url": value_json.url, "code": value_json.code, "expires_at": value_json.expires_at, "last_result": value_json.last_result} | tojson }}`

// SignInState is what the graph_sign_in_code sensor shows.
type SignInState struct {
	// URL and Code of the sign-in that waits; empty when none waits.
	URL, Code string
	ExpiresAt time.Time
	// LastResult is how the last sign-in ended ("signed_in", "declined",
	// "expired", ...), empty before any.
	LastResult string
}

// signInPayload is the JSON on <base>/bridge/graph_sign_in_code.
type signInPayload struct {
	Text       string `json:"text"`
	URL        string `json:"url"`
	Code       string `json:"code"`
	ExpiresAt  string `json:"expires_at"`
	LastResult string `json:"last_result"`
}

func signInJSON(st SignInState) []byte {
	p := signInPayload{URL: st.URL, Code: st.Code, LastResult: st.LastResult}
	if st.Code != "" {
		p.Text = "Open " + st.URL + " and enter the code " + st.Code
		if len(p.Text) > 255 { // Home Assistant's limit for a state
			p.Text = st.Code
		}
	}
	if !st.ExpiresAt.IsZero() && st.Code != "" {
		p.ExpiresAt = st.ExpiresAt.UTC().Format(time.RFC3339)
	}
	b, _ := json.Marshal(p) // strings only: cannot fail
	return b
}

func sourceName(src string) string {
	switch src {
	case "service_bus":
		return "Service Bus"
	case "graph":
		return "Microsoft Graph"
	}
	return strings.ReplaceAll(src, "_", " ")
}

// attributesTemplate picks the state's extra fields as entity attributes.
const attributesTemplate = `{{ {"status_message": value_json.status_message, "out_of_office": value_json.out_of_office, "observed_at": value_json.observed_at, "source": value_json.source} | tojson }}`

// userConfig is the discovery payload of one user's device.
func userConfig(t topics, version string, u config.User) DeviceConfig {
	name := config.Slug(u.Name) + "_teams_"
	id := t.userDevice(u.ID)
	state := t.userState(u.ID)
	component := func(platform, key, title string) Component {
		return Component{
			Platform:        platform,
			Name:            title,
			UniqueID:        id + "_" + key,
			DefaultEntityID: platform + "." + name + key,
			ValueTemplate:   "{{ value_json." + key + " }}",
		}
	}
	avail := component(platformSensor, keyAvailability, "Availability")
	avail.DeviceClass = "enum"
	avail.Icon = "mdi:account-circle"
	avail.Options = names(presence.Availabilities())
	avail.JSONAttributesTopic = state
	avail.JSONAttributesTemplate = attributesTemplate

	act := component(platformSensor, keyActivity, "Activity")
	act.DeviceClass = "enum"
	act.Icon = "mdi:account-details"
	act.Options = names(presence.Activities())

	inCall := component(platformBinarySensor, keyInCall, "In call")
	inCall.Icon = "mdi:phone-in-talk"
	busy := component(platformBinarySensor, keyBusy, "Busy")
	busy.Icon = "mdi:minus-circle"

	return DeviceConfig{
		Device: Device{
			Identifiers:  []string{id},
			Name:         "Teams – " + u.Name,
			Manufacturer: "Microsoft",
			Model:        "Teams presence",
			ViaDevice:    t.node,
		},
		Origin: origin(version),
		Components: map[string]Component{
			keyAvailability: avail,
			keyActivity:     act,
			keyInCall:       inCall,
			keyBusy:         busy,
		},
		StateTopic: state,
		Availability: []AvailabilityTopic{
			{Topic: t.bridgeState()},
			{Topic: t.userAvailability(u.ID)},
		},
		AvailabilityMode: "all",
		QoS:              1,
	}
}

// published lists, per component key, every state the bridge may publish for
// it; Validate checks each is among the component's options.
func published() map[string][]string {
	return map[string][]string{
		keyAvailability: names(presence.Availabilities()),
		keyActivity:     names(presence.Activities()),
		keyHueMode:      HueModes(),
	}
}

func names[T interface{ String() string }](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.String()
	}
	return out
}

// statePayload is the JSON on <base>/<userId>/state (SPEC §4).
type statePayload struct {
	Availability  string `json:"availability"`
	Activity      string `json:"activity"`
	InCall        string `json:"in_call"`
	Busy          string `json:"busy"`
	StatusMessage string `json:"status_message"`
	OutOfOffice   bool   `json:"out_of_office"`
	ObservedAt    string `json:"observed_at"`
	Source        string `json:"source"`
}

const observedAtLayout = "2006-01-02T15:04:05.000Z07:00"

// stateJSON renders a state. String() maps a value outside the known set to
// PresenceUnknown, so the enum sensors never get a state outside options.
func stateJSON(st bridge.State) []byte {
	p := statePayload{
		Availability:  st.Availability.String(),
		Activity:      st.Activity.String(),
		InCall:        onOff(st.Activity.InCall()),
		Busy:          onOff(st.Availability.Busy()),
		StatusMessage: st.StatusMessage,
		OutOfOffice:   st.OutOfOffice,
		Source:        st.Source,
	}
	if !st.ObservedAt.IsZero() {
		p.ObservedAt = st.ObservedAt.UTC().Format(observedAtLayout)
	}
	b, _ := json.Marshal(p) // strings and bools only: cannot fail
	return b
}

func onOff(on bool) string {
	if on {
		return payloadOn
	}
	return payloadOff
}

func availabilityPayload(online bool) string {
	if online {
		return payloadOnline
	}
	return payloadOffline
}
