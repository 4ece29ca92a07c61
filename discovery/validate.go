package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Validate checks a device-based discovery message against Home Assistant's
// rules (its MQTT integration's discovery schema: homeassistant/components/
// mqtt/abbreviations.py, discovery.py and the platforms' PLATFORM_SCHEMA in
// github.com/home-assistant/core, and the MQTT discovery documentation at
// https://www.home-assistant.io/integrations/mqtt/) before it is published: Home Assistant drops a bad
// payload silently, or rejects the whole device for one unknown device key.
// It checks the marshalled JSON, so a misspelt struct tag fails here too.
//
// published maps a component key to the states the bridge may publish for
// it; each must be among that component's options. Every problem is
// reported, joined, each prefixed with its key path.
func Validate(topic string, payload []byte, published map[string][]string) error {
	v := &validator{published: published}
	v.topic(topic)
	var root map[string]any
	if err := json.Unmarshal(payload, &root); err != nil {
		v.addf("", "payload is not a JSON object: %v", err)
		return v.err()
	}
	v.keys("", root, rootKeys)
	v.device(root["device"])
	v.origin(root["origin"])
	v.availability("", root)
	v.topicKeys("", root)
	inherited, _ := root["state_topic"].(string)
	comps, ok := root["components"].(map[string]any)
	if !ok || len(comps) == 0 {
		v.addf("components", "required, at least one component")
	}
	uniq := make(map[string]string)
	for _, key := range slices.Sorted(maps.Keys(comps)) {
		v.component(key, comps[key], inherited, uniq)
	}
	return v.err()
}

var (
	// Discovery topic: <prefix>/device/<object_id>/config.
	objectIDRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	entityIDRe = regexp.MustCompile(`^([a-z_]+)\.([a-z0-9_]+)$`)
)

var (
	rootKeys = set("device", "origin", "components", "state_topic", "command_topic",
		"availability_topic", "availability", "availability_mode", "payload_available",
		"payload_not_available", "qos", "encoding", "message_expiry_interval")
	deviceKeys = set("identifiers", "connections", "manufacturer", "model", "model_id", "name",
		"hw_version", "sw_version", "serial_number", "via_device", "suggested_area", "configuration_url")
	originKeys       = set("name", "sw_version", "support_url")
	availabilityKeys = set("topic", "payload_available", "payload_not_available", "value_template")
	// Keys each platform understands (a subset of Home Assistant's, the ones
	// this bridge may use). Home Assistant ignores unknown component keys
	// silently; refusing them here catches typos.
	commonKeys = []string{"platform", "name", "unique_id", "default_entity_id", "icon",
		"entity_category", "enabled_by_default", "availability_topic", "availability",
		"availability_mode", "payload_available", "payload_not_available", "qos",
		"json_attributes_topic", "json_attributes_template", "device_class", "state_topic",
		"value_template"}
	platformKeys = map[string]map[string]bool{
		platformSensor:       set(append(commonKeys, "options", "state_class", "unit_of_measurement", "expire_after", "force_update")...),
		platformBinarySensor: set(append(commonKeys, "payload_on", "payload_off", "expire_after", "force_update", "off_delay")...),
		platformSelect:       set(append(commonKeys, "options", "command_topic", "command_template", "retain", "optimistic")...),
		platformButton: set("platform", "name", "unique_id", "default_entity_id", "icon", "entity_category",
			"enabled_by_default", "availability_topic", "availability", "availability_mode", "payload_available",
			"payload_not_available", "qos", "json_attributes_topic", "json_attributes_template", "device_class",
			"command_topic", "command_template", "payload_press", "retain"),
	}
	topicKeyNames = []string{"state_topic", "command_topic", "availability_topic", "json_attributes_topic"}
)

type validator struct {
	published map[string][]string
	errs      []error
}

func (v *validator) addf(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	v.errs = append(v.errs, errors.New(msg))
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid discovery payload: %w", errors.Join(v.errs...))
}

func (v *validator) topic(topic string) {
	parts := strings.Split(topic, "/")
	n := len(parts)
	if n < 4 || parts[n-3] != "device" || parts[n-1] != "config" || slices.Contains(parts[:n-3], "") {
		v.addf("topic", "%q is not <prefix>/device/<object_id>/config", topic)
		return
	}
	if !objectIDRe.MatchString(parts[n-2]) {
		v.addf("topic", "object id %q has characters outside [a-zA-Z0-9_-]", parts[n-2])
	}
}

func (v *validator) keys(path string, m map[string]any, allowed map[string]bool) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !allowed[k] {
			v.addf(join(path, k), "unknown key")
		}
	}
}

func (v *validator) device(d any) {
	m, ok := d.(map[string]any)
	if !ok {
		v.addf("device", "required object")
		return
	}
	v.keys("device", m, deviceKeys)
	if !nonEmptyList(m["identifiers"]) && !nonEmptyList(m["connections"]) {
		v.addf("device", "needs identifiers or connections")
	}
	if name, _ := m["name"].(string); name == "" {
		v.addf("device.name", "required")
	}
	if raw, ok := m["configuration_url"]; ok {
		s, _ := raw.(string)
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "homeassistant") {
			v.addf("device.configuration_url", "%q is not an http(s) or homeassistant:// URL", s)
		}
	}
}

func (v *validator) origin(o any) {
	m, ok := o.(map[string]any)
	if !ok {
		v.addf("origin", "required object")
		return
	}
	v.keys("origin", m, originKeys)
	if name, _ := m["name"].(string); name == "" {
		v.addf("origin.name", "required")
	}
}

// availability: a topic or a list, never both; a known mode.
func (v *validator) availability(path string, m map[string]any) {
	_, hasTopic := m["availability_topic"]
	list, hasList := m["availability"]
	if hasTopic && hasList {
		v.addf(path, "availability_topic and availability are exclusive")
	}
	if hasList {
		items, ok := list.([]any)
		if !ok || len(items) == 0 {
			v.addf(join(path, "availability"), "must be a non-empty list")
		}
		for i, it := range items {
			p := fmt.Sprintf("%s[%d]", join(path, "availability"), i)
			im, ok := it.(map[string]any)
			if !ok {
				v.addf(p, "must be an object")
				continue
			}
			v.keys(p, im, availabilityKeys)
			v.mqttTopic(join(p, "topic"), im["topic"], true)
		}
	}
	if mode, ok := m["availability_mode"]; ok {
		if s, _ := mode.(string); s != "latest" && s != "any" && s != "all" {
			v.addf(join(path, "availability_mode"), "%v is not latest, any or all", mode)
		}
	}
}

func (v *validator) topicKeys(path string, m map[string]any) {
	for _, k := range topicKeyNames {
		if t, ok := m[k]; ok {
			v.mqttTopic(join(path, k), t, true)
		}
	}
}

// mqttTopic checks a topic the bridge publishes to or Home Assistant
// subscribes to: non-empty UTF-8 without wildcards.
func (v *validator) mqttTopic(path string, t any, required bool) {
	s, ok := t.(string)
	switch {
	case !ok || s == "":
		if required {
			v.addf(path, "must be a non-empty topic")
		}
	case !utf8.ValidString(s) || strings.ContainsAny(s, "+#\x00"):
		v.addf(path, "%q is not a valid topic name", s)
	case len(s) > 65535:
		v.addf(path, "topic longer than 65535 bytes")
	}
}

func (v *validator) component(key string, c any, inheritedState string, uniq map[string]string) {
	path := "components." + key
	m, ok := c.(map[string]any)
	if !ok {
		v.addf(path, "must be an object")
		return
	}
	platform, _ := m["platform"].(string)
	allowed, known := platformKeys[platform]
	if !known {
		v.addf(join(path, "platform"), "%q is not one of sensor, binary_sensor, select, button", platform)
		return
	}
	v.keys(path, m, allowed)
	uid, _ := m["unique_id"].(string)
	if uid == "" {
		v.addf(join(path, "unique_id"), "required")
	} else if other, dup := uniq[uid]; dup {
		v.addf(join(path, "unique_id"), "%q already used by %s", uid, other)
	} else {
		uniq[uid] = key
	}
	id, _ := m["default_entity_id"].(string)
	if sm := entityIDRe.FindStringSubmatch(id); sm == nil {
		v.addf(join(path, "default_entity_id"), "%q is not <domain>.<object_id>", id)
	} else if sm[1] != platform {
		v.addf(join(path, "default_entity_id"), "domain %q differs from platform %q", sm[1], platform)
	}
	v.availability(path, m)
	v.topicKeys(path, m)
	if _, own := m["state_topic"]; !own && inheritedState == "" && platform != platformSelect && platform != platformButton {
		v.addf(join(path, "state_topic"), "required")
	}
	options, hasOptions := m["options"]
	if platform == platformButton {
		if _, ok := m["command_topic"]; !ok {
			v.addf(join(path, "command_topic"), "required")
		}
	}
	if platform == platformSelect {
		if _, ok := m["command_topic"]; !ok {
			v.addf(join(path, "command_topic"), "required")
		}
		if !hasOptions {
			v.addf(join(path, "options"), "required")
		}
	}
	if m["device_class"] == "enum" {
		if !hasOptions {
			v.addf(join(path, "options"), "required with device_class enum")
		}
		for _, k := range []string{"state_class", "unit_of_measurement"} {
			if _, ok := m[k]; ok {
				v.addf(join(path, k), "not allowed with device_class enum")
			}
		}
	}
	if hasOptions {
		v.options(join(path, "options"), options, v.published[key])
	}
}

func (v *validator) options(path string, raw any, want []string) {
	list, ok := raw.([]any)
	if !ok || len(list) == 0 {
		v.addf(path, "must be a non-empty list")
		return
	}
	have := make(map[string]bool, len(list))
	for _, o := range list {
		s, ok := o.(string)
		if !ok || s == "" {
			v.addf(path, "option %v is not a non-empty string", o)
			continue
		}
		have[s] = true
	}
	for _, w := range want {
		if !have[w] {
			v.addf(path, "missing %q, a state the bridge publishes", w)
		}
	}
}

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func nonEmptyList(x any) bool {
	l, ok := x.([]any)
	return ok && len(l) > 0
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
