package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
)

func quoted(msg string) string {
	if msg == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", msg)
}

// printer turns what the broker carries into lines a person can read: what
// Home Assistant would see.
type printer struct {
	mu    sync.Mutex
	out   io.Writer
	users []config.User
	avail map[string]string // last availability shown per user
	flush chan string       // markers of flush, as they arrive
}

// flushTopic carries the printer's own markers.
const flushTopic = "presence-demo/flush"

func (p *printer) linef(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// watch subscribes to what Home Assistant reads, as an MQTT client of the
// broker (any broker: the printer sees what a subscriber sees).
func (p *printer) watch(ctx context.Context, url string) (stop func(), err error) {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("presence-demo-printer").
		SetAutoReconnect(true).SetConnectTimeout(5 * time.Second).
		SetOnConnectHandler(func(c mqtt.Client) {
			c.SubscribeMultiple(map[string]byte{"homeassistant/device/+/config": 1, "presence-bridge/#": 1, flushTopic: 1}, func(_ mqtt.Client, m mqtt.Message) {
				if m.Topic() == flushTopic {
					select {
					case p.flush <- string(m.Payload()):
					default:
					}
					return
				}
				p.show(m.Topic(), m.Payload())
			})
		}))
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("demo: watch the broker: %w", err)
	}
	return func() {
		// Everything the broker routed before this marker is shown
		// (the bridge's goodbye among it), within a second.
		marker := fmt.Sprint(time.Now().UnixNano())
		c.Publish(flushTopic, 1, false, marker)
		deadline := time.After(time.Second)
		for {
			select {
			case got := <-p.flush:
				if got != marker {
					continue
				}
			case <-deadline:
			}
			break
		}
		c.Disconnect(100)
	}, nil
}

func (p *printer) user(id string) (config.User, bool) {
	for _, u := range p.users {
		if string(u.ID) == id {
			return u, true
		}
	}
	return config.User{}, false
}

func (p *printer) show(topic string, payload []byte) {
	parts := strings.Split(topic, "/")
	switch {
	case len(parts) == 4 && parts[0] == "homeassistant" && parts[1] == "device":
		if len(payload) == 0 {
			p.linef("HA         device %s removed", parts[2])
			return
		}
		var dc discovery.DeviceConfig
		if json.Unmarshal(payload, &dc) != nil {
			return
		}
		var ids []string
		for _, c := range dc.Components {
			ids = append(ids, c.DefaultEntityID)
		}
		slices.Sort(ids)
		p.linef("HA         discovered device %q: %s", dc.Device.Name, strings.Join(ids, ", "))
	case len(parts) == 3 && parts[1] == "bridge" && parts[2] == "state":
		// The goodbye and, as the broker closes, the last will both say
		// offline: show it once.
		if p.availabilityChanged("bridge", string(payload)) {
			p.linef("HA         bridge is %s", payload)
		}
	case len(parts) == 3 && parts[1] == "bridge" && parts[2] != "sync":
		if p.availabilityChanged("bridge/"+parts[2], string(payload)) {
			p.linef("HA         bridge %s = %s", parts[2], payload)
		}
	case len(parts) == 3 && parts[2] == "state":
		u, ok := p.user(parts[1])
		var st struct {
			Availability  string `json:"availability"`
			Activity      string `json:"activity"`
			InCall        string `json:"in_call"`
			Busy          string `json:"busy"`
			StatusMessage string `json:"status_message"`
		}
		if !ok || json.Unmarshal(payload, &st) != nil {
			return
		}
		n := config.Slug(u.Name)
		p.linef("HA         sensor.%s_teams_availability=%s  sensor.%s_teams_activity=%s  binary_sensor.%s_teams_in_call=%s  binary_sensor.%s_teams_busy=%s",
			n, st.Availability, n, st.Activity, n, strings.ToLower(st.InCall), n, strings.ToLower(st.Busy))
	case len(parts) == 3 && parts[2] == "availability":
		if u, ok := p.user(parts[1]); ok && len(payload) > 0 && p.availabilityChanged(string(u.ID), string(payload)) {
			p.linef("HA         %s's entities are %s", u.Name, map[string]string{"online": "available", "offline": "unavailable"}[string(payload)])
		}
	}
}

func (p *printer) availabilityChanged(id, v string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := p.avail[id] != v
	p.avail[id] = v
	return changed
}
