// Package config is the bridge's configuration: one typed tree read from the
// YAML file (presence-bridge.yaml) or from the add-on's /data/options.json,
// with defaults in one place and a Validate that reports every problem with
// its key path.
package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/yamlconf"
	"github.com/presence-bridge/presence-bridge/presence"
)

// Config is the whole configuration of presence-bridge (SPEC §3).
type Config struct {
	LogLevel   string `yaml:"log_level" json:"log_level"`
	HealthAddr string `yaml:"health_addr" json:"health_addr"`
	Users      []User `yaml:"users" json:"users"`
	// DataDir keeps what the bridge must remember across restarts (its
	// MQTT client id suffix, later the Graph sign-ins); empty: /data in the
	// add-on, ./data otherwise (see DataDirOrDefault).
	DataDir    string     `yaml:"data_dir" json:"data_dir"`
	ServiceBus ServiceBus `yaml:"service_bus" json:"service_bus"`
	Graph      Graph      `yaml:"graph" json:"graph"`
	MQTT       MQTT       `yaml:"mqtt" json:"mqtt"`
	Hue        Hue        `yaml:"hue" json:"hue"`
}

// User is one person whose presence is bridged.
type User struct {
	// ID is the Entra object id, in canonical (lower-case) form once
	// decoded.
	ID               presence.UserID `yaml:"id" json:"id"`
	Name             string          `yaml:"name" json:"name"`
	Topic            string          `yaml:"topic" json:"topic"`
	ConnectionString Secret          `yaml:"connection_string" json:"connection_string"`
}

// TopicName is the Service Bus topic of the user's presence messages.
func (u User) TopicName() string {
	if u.Topic != "" {
		return u.Topic
	}
	return string(u.ID)
}

// ServiceBus is where presence messages are read from.
type ServiceBus struct {
	ConnectionString Secret `yaml:"connection_string" json:"connection_string"`
	Subscription     string `yaml:"subscription" json:"subscription"`
	Queue            string `yaml:"queue" json:"queue"`
}

// ServiceBusEnabled reports whether the Service Bus source is configured: a
// connection string, a queue, or every user's own connection string.
func (c *Config) ServiceBusEnabled() bool {
	sb := c.ServiceBus
	if sb.ConnectionString != "" || sb.Queue != "" {
		return true
	}
	for _, u := range c.Users {
		if u.ConnectionString != "" {
			return true
		}
	}
	return false
}

// Graph is the bridge's own Microsoft Graph source: people sign in with the
// device-code flow and the bridge reads their presence itself.
type Graph struct {
	// ClientID is the app registration (public client flows allowed); empty
	// turns the source off.
	ClientID string `yaml:"client_id" json:"client_id"`
	// Tenant is a tenant id or domain, or organizations.
	Tenant       string   `yaml:"tenant" json:"tenant"`
	PollInterval Duration `yaml:"poll_interval" json:"poll_interval"`
	// Authority overrides https://login.microsoftonline.com/<tenant>.
	Authority string `yaml:"authority" json:"authority"`
	// Endpoint overrides https://graph.microsoft.com.
	Endpoint string   `yaml:"endpoint" json:"endpoint"`
	Scopes   []string `yaml:"scopes" json:"scopes"`
}

// Enabled reports whether the Graph source is configured.
func (g Graph) Enabled() bool { return g.ClientID != "" }

// DefaultAuthorityHost is Microsoft Entra's sign-in host.
const DefaultAuthorityHost = "https://login.microsoftonline.com"

// MinPollInterval is the shortest graph.poll_interval accepted.
const MinPollInterval = 2 * time.Second

// AuthorityURL is the authority in force: graph.authority, else Microsoft
// Entra's for graph.tenant.
func (g Graph) AuthorityURL() string {
	if g.Authority != "" {
		return strings.TrimRight(g.Authority, "/")
	}
	return DefaultAuthorityHost + "/" + g.Tenant
}

// MicrosoftAuthority reports whether the authority is one of Microsoft's
// cloud sign-in hosts, where MSAL's instance discovery applies; any other
// host (a test's fake) is used as given.
func (g Graph) MicrosoftAuthority() bool {
	u, err := url.Parse(g.AuthorityURL())
	if err != nil {
		return false
	}
	switch strings.ToLower(u.Hostname()) {
	case "login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn",
		"login.chinacloudapi.cn", "login.microsoftonline.de", "login.windows.net", "login.microsoft.com", "sts.windows.net":
		return true
	}
	return false
}

// MQTT is the Home Assistant broker; an empty URL means no Home Assistant.
type MQTT struct {
	URL             string `yaml:"url" json:"url"`
	Username        string `yaml:"username" json:"username"`
	Password        Secret `yaml:"password" json:"password"`
	CAFile          string `yaml:"ca_file" json:"ca_file"`
	ClientID        string `yaml:"client_id" json:"client_id"`
	DiscoveryPrefix string `yaml:"discovery_prefix" json:"discovery_prefix"`
	BaseTopic       string `yaml:"base_topic" json:"base_topic"`
}

// Enabled reports whether a broker is configured.
func (m MQTT) Enabled() bool { return m.URL != "" }

// Hue is the direct drive of Philips Hue groups.
type Hue struct {
	Mode        string      `yaml:"mode" json:"mode"`
	MinInterval Duration    `yaml:"min_interval" json:"min_interval"`
	Bridges     []HueBridge `yaml:"bridges" json:"bridges"`
	Colors      []Color     `yaml:"colors" json:"colors"`
}

// Enabled reports whether any Hue bridge is configured.
func (h Hue) Enabled() bool { return len(h.Bridges) > 0 }

// HueBridge is one Hue bridge on the local network.
type HueBridge struct {
	Host     string     `yaml:"host" json:"host"`
	Username Secret     `yaml:"username" json:"username"`
	Groups   []HueGroup `yaml:"groups" json:"groups"`
}

// HueGroup is a Hue room or zone driven by the presence of some users.
type HueGroup struct {
	Group string   `yaml:"group" json:"group"`
	Users []string `yaml:"users" json:"users"`
}

// Color overrides the lamp state for one availability or activity value.
type Color struct {
	Status     string `yaml:"status" json:"status"`
	Color      string `yaml:"color" json:"color"`
	Brightness int    `yaml:"brightness" json:"brightness"`
	Off        bool   `yaml:"off" json:"off"`
	Effect     string `yaml:"effect" json:"effect"`
}

// Hue modes.
const (
	HueModeAuto   = "auto"
	HueModeAlways = "always"
	HueModeOff    = "off"
)

// Secret is a string that never prints (see yamlconf.Secret).
type Secret = yamlconf.Secret

// Duration is a time.Duration written as Go duration text (see
// yamlconf.Duration).
type Duration = yamlconf.Duration

// DataDirOrDefault is the data directory in force: data_dir, else /data in
// the add-on, else ./data.
func (c *Config) DataDirOrDefault(addOn bool) string {
	switch {
	case c.DataDir != "":
		return c.DataDir
	case addOn:
		return "/data"
	}
	return "data"
}
