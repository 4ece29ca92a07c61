package discovery

import (
	"encoding/json"
	"strings"

	"github.com/presence-bridge/presence-bridge/presence"
)

// publishConfigs publishes each discovery config whose retained copy on the
// broker differs; components the retained copy has and ours lacks are
// removed first, as Home Assistant requires.
func (s *Sink) publishConfigs(sess *session) {
	for _, dm := range s.configs {
		old, had := sess.retainedConfig(dm.topic)
		if had && string(old) == string(dm.payload) {
			continue
		}
		if had {
			if removal := removalPayload(old, dm); removal != nil {
				sess.conn.Publish(dm.topic, true, removal)
			}
		}
		sess.conn.Publish(dm.topic, true, dm.payload)
		s.log.Debug("discovery config published", "topic", dm.topic)
	}
}

// removalPayload returns the current payload plus each component of old that
// the current one lacks, reduced to its platform; nil when none is gone.
func removalPayload(old []byte, dm deviceMessage) []byte {
	var prev struct {
		Components map[string]struct {
			Platform string `json:"platform"`
			P        string `json:"p"`
		} `json:"components"`
		Cmps map[string]struct {
			Platform string `json:"platform"`
			P        string `json:"p"`
		} `json:"cmps"`
	}
	if json.Unmarshal(old, &prev) != nil {
		return nil
	}
	var cur map[string]any
	if json.Unmarshal(dm.payload, &cur) != nil {
		return nil
	}
	comps, _ := cur["components"].(map[string]any)
	gone := false
	for _, m := range []map[string]struct {
		Platform string `json:"platform"`
		P        string `json:"p"`
	}{prev.Components, prev.Cmps} {
		for k, c := range m {
			if _, keep := dm.components[k]; keep {
				continue
			}
			p := c.Platform
			if p == "" {
				p = c.P
			}
			if p == "" {
				continue
			}
			comps[k] = map[string]string{"platform": p}
			gone = true
		}
	}
	if !gone {
		return nil
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return nil
	}
	return b
}

// sweep clears the retained configs of this bridge's users that are no
// longer configured, with their state and availability topics.
func (s *Sink) sweep(sess *session) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	for topic, payload := range sess.takeRetained() {
		id, ok := staleUser(s.t, topic, payload)
		if !ok {
			continue
		}
		if _, configured := s.users[id]; configured {
			continue
		}
		s.log.Info("removing a user no longer configured from home assistant", "user_id", id)
		sess.conn.Publish(topic, true, []byte{})
		sess.conn.Publish(s.t.userState(id), true, []byte{})
		sess.conn.Publish(s.t.userAvailability(id), true, []byte{})
	}
	filters := []string{s.t.configFilter(), s.t.sync()}
	if s.opts.Mode != nil {
		filters = append(filters, s.t.hueMode()) // restored already
	}
	sess.conn.Unsubscribe(filters...)
}

// staleUser reports whether a retained config is one of this bridge's user
// devices: published at <prefix>/device/<node>_<id>/config, with the device
// identifier <node>_<id> and via_device <node>. It returns the user id.
func staleUser(t topics, topic string, payload []byte) (presence.UserID, bool) {
	rest, ok := strings.CutPrefix(topic, t.prefix+"/device/"+t.node+"_")
	if !ok {
		return "", false
	}
	text, ok := strings.CutSuffix(rest, "/config")
	if !ok || !objectIDRe.MatchString(text) {
		return "", false
	}
	id := presence.UserID(text)
	var p struct {
		Device struct {
			Identifiers json.RawMessage `json:"identifiers"`
			ViaDevice   string          `json:"via_device"`
		} `json:"device"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Device.ViaDevice != t.node {
		return "", false
	}
	var ids []string
	if json.Unmarshal(p.Device.Identifiers, &ids) != nil {
		var one string
		if json.Unmarshal(p.Device.Identifiers, &one) != nil {
			return "", false
		}
		ids = []string{one}
	}
	for _, x := range ids {
		if x == t.userDevice(id) {
			return id, true
		}
	}
	return "", false
}
