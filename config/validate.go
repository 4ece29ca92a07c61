package config

import (
	"fmt"
	"github.com/presence-bridge/presence-bridge/internal/yamlconf"
	"github.com/presence-bridge/presence-bridge/servicebus"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/presence-bridge/presence-bridge/presence"
)

// Validate reports every problem of c, each prefixed with its key path
// (hue.bridges[0].groups[1].users[0]: unknown user "Alx"), joined.
func (c *Config) Validate() error {
	var p problems
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		p.Add("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.HealthAddr != "" {
		if err := yamlconf.HostPort(c.HealthAddr, true); err != nil {
			p.Add("health_addr", "%v", err)
		}
	}
	c.validateUsers(&p)
	switch sb, g := c.ServiceBusEnabled(), c.Graph.Enabled(); {
	case sb:
		c.validateServiceBus(&p)
	case !g:
		p.Add("service_bus.connection_string", "required unless graph.client_id is set: configure at least one source, "+
			"service_bus (the cloud poller's topics) or graph (the bridge reads Microsoft Graph itself)")
	}
	c.Graph.validate(&p)
	c.MQTT.validate(&p)
	c.validateHue(&p)
	return p.Err()
}

func (c *Config) validateUsers(p *problems) {
	if len(c.Users) == 0 {
		p.Add("users", "at least one user is required")
	}
	ids := map[presence.UserID]int{}
	topics := map[string]int{} // Service Bus entity names ignore case
	names := map[string]int{}
	slugs := map[string]int{}
	for i, u := range c.Users {
		path := fmt.Sprintf("users[%d]", i)
		dupID := false
		switch {
		case u.ID == "":
			p.Add(path+".id", "required (the user's Entra object id)")
		case !u.ID.Valid():
			p.Add(path+".id", "%q is not a GUID (the user's Entra object id looks like 6f1c2a3b-1111-2222-3333-444455556666)", u.ID)
		default:
			if j, dup := ids[u.ID]; dup {
				p.Add(path+".id", "%s is also users[%d].id", u.ID, j)
				dupID = true
			} else {
				ids[u.ID] = i
			}
		}
		switch {
		case strings.TrimSpace(u.Name) == "":
			p.Add(path+".name", "required (it names the Home Assistant device)")
		case Slug(u.Name) == "":
			p.Add(path+".name", "%q needs at least one letter or digit", u.Name)
		default:
			if j, dup := names[u.Name]; dup {
				p.Add(path+".name", "%q is also users[%d].name", u.Name, j)
			} else if j, dup := slugs[Slug(u.Name)]; dup {
				p.Add(path+".name", "%q and users[%d].name give the same entity id %s", u.Name, j, Slug(u.Name))
			}
			names[u.Name] = i
			slugs[Slug(u.Name)] = i
		}
		if u.Topic != "" && !servicebus.ValidEntityName(u.Topic) {
			p.Add(path+".topic", "%q is not a Service Bus entity name (letters, digits, . - _ /)", u.Topic)
		} else if (u.ID.Valid() && !dupID) || u.Topic != "" {
			topic := strings.ToLower(u.TopicName())
			if j, dup := topics[topic]; dup && c.ServiceBus.Queue == "" {
				p.Add(path+".topic", "users[%d] reads the topic %s too; each user needs a topic of their own", j, u.TopicName())
			} else if !dup {
				topics[topic] = i
			}
		}
		if u.ConnectionString != "" {
			if c.ServiceBus.Queue != "" {
				p.Add(path+".connection_string", "a per-user connection string needs per-user subscriptions; with service_bus.queue set, one connection string serves everyone")
			} else if err := parseErr(servicebus.ParseConnectionString(u.ConnectionString.Value())); err != nil {
				p.Add(path+".connection_string", "%v", err)
			}
		}
	}
}

func (c *Config) validateServiceBus(p *problems) {
	sb := c.ServiceBus
	allOwn := len(c.Users) > 0
	for _, u := range c.Users {
		allOwn = allOwn && u.ConnectionString != ""
	}
	switch {
	case sb.ConnectionString != "":
		if err := parseErr(servicebus.ParseConnectionString(sb.ConnectionString.Value())); err != nil {
			p.Add("service_bus.connection_string", "%v", err)
		}
	case sb.Queue != "" || !allOwn:
		p.Add("service_bus.connection_string", "required (a Listen connection string of the namespace or topic)")
	}
	if sb.Queue != "" {
		if !servicebus.ValidEntityName(sb.Queue) {
			p.Add("service_bus.queue", "%q is not a queue or <topic>/Subscriptions/<name> path", sb.Queue)
		}
		return
	}
	if sb.Subscription == "" {
		p.Add("service_bus.subscription", "required unless service_bus.queue is set")
	} else if !servicebus.ValidEntityName(sb.Subscription) || strings.Contains(sb.Subscription, "/") {
		p.Add("service_bus.subscription", "%q is not a subscription name (letters, digits, . - _)", sb.Subscription)
	}
}

// presenceScopes are the Graph permissions the graph source can use.
var presenceScopes = map[string]bool{"presence.read": true, "presence.read.all": true}

func (g Graph) validate(p *problems) {
	if !g.Enabled() {
		for _, k := range []struct{ key, v string }{{"graph.authority", g.Authority}, {"graph.endpoint", g.Endpoint}} {
			if k.v != "" {
				p.Add(k.key, "set, but graph.client_id is empty: the graph source is off without it")
			}
		}
		return
	}
	if !presence.IsGUID(g.ClientID) {
		p.Add("graph.client_id", "%q is not a GUID (the app registration's Application (client) ID)", g.ClientID)
	}
	if g.Authority == "" {
		if g.Tenant == "" || strings.ContainsAny(g.Tenant, "/?#@ ") {
			p.Add("graph.tenant", "%q is not a tenant id or domain (or organizations)", g.Tenant)
		}
	} else if err := checkHTTPS(g.Authority, true); err != nil {
		p.Add("graph.authority", "%v", err)
	}
	if g.Endpoint != "" {
		if err := checkHTTPS(g.Endpoint, false); err != nil {
			p.Add("graph.endpoint", "%v", err)
		}
	}
	if g.PollInterval.Std() < MinPollInterval {
		p.Add("graph.poll_interval", "%s is too short: at least %s", g.PollInterval, MinPollInterval)
	}
	if len(g.Scopes) == 0 {
		p.Add("graph.scopes", "at least one scope is required: Presence.Read.All, or Presence.Read where a tenant blocks it")
	}
	hasPresence := false
	for i, sc := range g.Scopes {
		switch {
		case sc == "" || strings.ContainsAny(sc, " \t\r\n"):
			p.Add(fmt.Sprintf("graph.scopes[%d]", i), "%q is not a scope (one permission name, such as Presence.Read.All)", sc)
		case presenceScopes[strings.ToLower(ScopeName(sc))]:
			hasPresence = true
		}
	}
	if len(g.Scopes) > 0 && !hasPresence {
		p.Add("graph.scopes", "none of %v reads presence: include Presence.Read.All or Presence.Read", g.Scopes)
	}
}

// ScopeName is a Graph scope without the resource prefix
// (https://graph.microsoft.com/Presence.Read → Presence.Read).
func ScopeName(scope string) string {
	if i := strings.LastIndexByte(scope, '/'); i >= 0 {
		return scope[i+1:]
	}
	return scope
}

// checkHTTPS checks an authority or endpoint URL: https, a host, no query;
// an authority also names a tenant (a path segment).
func checkHTTPS(s string, authority bool) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL: %v", yamlconf.Cause(err))
	case u.Scheme != "https":
		return fmt.Errorf("%q: want an https:// URL", s)
	case u.Host == "" || u.User != nil:
		return fmt.Errorf("%q has no host", s)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q: no query or fragment", s)
	case authority && strings.Trim(u.Path, "/") == "":
		return fmt.Errorf("%q names no tenant: want https://<host>/<tenant>", s)
	}
	return nil
}

func (m MQTT) validate(p *problems) {
	if m.URL == "" {
		if m.Username != "" || m.Password != "" || m.CAFile != "" {
			p.Add("mqtt.url", "required when mqtt.username, password or ca_file is set (leave all empty to run without Home Assistant)")
		}
		return
	}
	u, err := url.Parse(m.URL)
	switch {
	case err != nil:
		p.Add("mqtt.url", "not a URL: %v", yamlconf.Cause(err))
	case u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "ws" && u.Scheme != "wss":
		p.Add("mqtt.url", "scheme %q is not one of tcp, ssl, ws, wss (for example tcp://homeassistant.local:1883)", u.Scheme)
	case u.Hostname() == "":
		p.Add("mqtt.url", "%q has no host", m.URL)
	case u.Port() != "":
		if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
			p.Add("mqtt.url", "port %q is not a port number", u.Port())
		}
	}
	if err == nil && u.User != nil {
		p.Add("mqtt.url", "put the user name and password in mqtt.username and mqtt.password, not in the URL")
	}
	if m.Password != "" && m.Username == "" {
		p.Add("mqtt.password", "needs mqtt.username")
	}
	if m.CAFile != "" {
		if _, err := os.Stat(m.CAFile); err != nil {
			p.Add("mqtt.ca_file", "cannot read %s: %v", m.CAFile, yamlconf.Cause(err))
		}
	}
	if strings.ContainsAny(m.ClientID, "+#/") || len(m.ClientID) > 128 {
		p.Add("mqtt.client_id", "%q: at most 128 characters, without + # or /", m.ClientID)
	}
	for _, t := range []struct{ key, v string }{{"mqtt.discovery_prefix", m.DiscoveryPrefix}, {"mqtt.base_topic", m.BaseTopic}} {
		if err := checkTopic(t.v); err != nil {
			p.Add(t.key, "%v", err)
		}
	}
	if m.BaseTopic != "" && Slug(m.BaseTopic) == "" {
		p.Add("mqtt.base_topic", "%q needs at least one letter or digit", m.BaseTopic)
	}
}

func (c *Config) validateHue(p *problems) {
	h := c.Hue
	switch h.Mode {
	case HueModeAuto, HueModeAlways, HueModeOff:
	default:
		p.Add("hue.mode", "%q is not one of auto, always, off", h.Mode)
	}
	if h.MinInterval.Std() < 1e8 {
		p.Add("hue.min_interval", "%s is too short; Hue bridges take about one group command per second (at least 100ms)", h.MinInterval)
	}
	known := map[string]bool{}
	for _, u := range c.Users {
		known[u.Name] = true
		known[string(u.ID)] = true
	}
	hosts := map[string]int{}
	for i, b := range h.Bridges {
		path := fmt.Sprintf("hue.bridges[%d]", i)
		switch {
		case b.Host == "":
			p.Add(path+".host", "required (the Hue bridge's address, for example 192.168.1.20)")
		case strings.Contains(b.Host, "://"):
			p.Add(path+".host", "%q: give host[:port] without a scheme (the local API is plain http)", b.Host)
		default:
			if err := yamlconf.HostPort(b.Host, false); err != nil {
				p.Add(path+".host", "%v", err)
			}
			if j, dup := hosts[b.Host]; dup {
				p.Add(path+".host", "%s is also hue.bridges[%d].host", b.Host, j)
			}
			hosts[b.Host] = i
		}
		if b.Username == "" {
			p.Add(path+".username", "required (run `presence-bridge hue pair -host %s` to get one)", or(b.Host, "HOST"))
		}
		if len(b.Groups) == 0 {
			p.Add(path+".groups", "at least one group is required")
		}
		groups := map[string]int{} // Hue matches names ignoring case
		for j, g := range b.Groups {
			gpath := fmt.Sprintf("%s.groups[%d]", path, j)
			if strings.TrimSpace(g.Group) == "" {
				p.Add(gpath+".group", "required (a Hue room or zone name, or its numeric id; `presence-bridge hue groups` lists them)")
			} else if k, dup := groups[strings.ToLower(g.Group)]; dup {
				p.Add(gpath+".group", "%q is also %s.groups[%d].group; list every user of that group in one entry", g.Group, path, k)
			} else {
				groups[strings.ToLower(g.Group)] = j
			}
			if len(g.Users) == 0 {
				p.Add(gpath+".users", "at least one user is required")
			}
			for k, name := range g.Users {
				if !known[name] && !known[strings.ToLower(name)] {
					p.Add(fmt.Sprintf("%s.users[%d]", gpath, k), "unknown user %q", name)
				}
			}
		}
	}
	statuses := map[string]int{}
	for i, col := range h.Colors {
		path := fmt.Sprintf("hue.colors[%d]", i)
		_, isAvail := presence.ParseAvailability(col.Status)
		_, isAct := presence.ParseActivity(col.Status)
		switch {
		case col.Status == "":
			p.Add(path+".status", "required (an availability or activity value such as Busy or InACall)")
		case !isAvail && !isAct:
			p.Add(path+".status", "%q is not an availability or activity value", col.Status)
		default:
			key := strings.ToLower(col.Status)
			if j, dup := statuses[key]; dup {
				p.Add(path+".status", "%s is also hue.colors[%d].status", col.Status, j)
			}
			statuses[key] = i
		}
		if col.Color != "" {
			if _, err := ParseHexColor(col.Color); err != nil {
				p.Add(path+".color", "%v", err)
			}
		}
		if col.Brightness != 0 && (col.Brightness < 1 || col.Brightness > 100) {
			p.Add(path+".brightness", "%d is not a percentage from 1 to 100", col.Brightness)
		}
		switch col.Effect {
		case "", "none", "colorloop":
		default:
			p.Add(path+".effect", "%q is not one of none, colorloop", col.Effect)
		}
		if col.Off && (col.Color != "" || col.Brightness != 0 || col.Effect != "") {
			p.Add(path+".off", "off: true leaves the lamps off; drop color, brightness and effect")
		}
		if !col.Off && col.Color == "" && col.Brightness == 0 && col.Effect == "" && col.Status != "" {
			p.Add(path, "give color, brightness, effect or off: true")
		}
	}
}

// RGB is a colour from a hex string.
type RGB struct{ R, G, B uint8 }

// ParseHexColor reads "#rrggbb" or "#rgb".
func ParseHexColor(s string) (RGB, error) {
	h, ok := strings.CutPrefix(s, "#")
	if !ok || (len(h) != 6 && len(h) != 3) {
		return RGB{}, fmt.Errorf("%q is not a colour like #ff0000", s)
	}
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return RGB{}, fmt.Errorf("%q is not a colour like #ff0000", s)
	}
	return RGB{uint8(v >> 16), uint8(v >> 8), uint8(v)}, nil
}

// Slug is a name lower-cased with every character outside [a-z0-9_]
// replaced by "_" (Home Assistant entity ids and discovery node ids).
func Slug(name string) string {
	var b strings.Builder
	letters := false
	for _, r := range strings.ToLower(name) {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			b.WriteRune(r)
			letters = true
		} else {
			b.WriteByte('_')
		}
	}
	if !letters {
		return ""
	}
	return b.String()
}

func checkTopic(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("required")
	case strings.ContainsAny(t, "+#"):
		return fmt.Errorf("%q must not contain the MQTT wildcards + or #", t)
	case strings.HasPrefix(t, "/") || strings.HasSuffix(t, "/") || strings.Contains(t, "//"):
		return fmt.Errorf("%q must not start or end with / or contain an empty level", t)
	}
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// parseErr keeps the error of a parse whose result is not needed.
func parseErr[T any](_ T, err error) error { return err }
