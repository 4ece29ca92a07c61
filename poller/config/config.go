// Package config is presence-poller's configuration (SPEC §9): one typed
// tree read from presence-poller.yaml with the toolkit the bridge uses too
// (internal/yamlconf: strict keys, key paths in errors, ${NAME} expansion,
// secrets that never print), defaults in one place (Default) and a Validate
// that reports every problem with its key path.
package config

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/yamlconf"
)

// Secret is a string that never prints (see yamlconf.Secret).
type Secret = yamlconf.Secret

// Duration is a time.Duration written as Go duration text.
type Duration = yamlconf.Duration

// Config is the whole configuration of presence-poller.
type Config struct {
	LogLevel   string     `yaml:"log_level" json:"log_level"`
	Listen     string     `yaml:"listen" json:"listen"`
	PublicURL  string     `yaml:"public_url" json:"public_url"`
	DataDir    string     `yaml:"data_dir" json:"data_dir"`
	SecretKey  Secret     `yaml:"secret_key" json:"secret_key"`
	APIKey     Secret     `yaml:"api_key" json:"api_key"`
	Entra      Entra      `yaml:"entra" json:"entra"`
	Graph      Graph      `yaml:"graph" json:"graph"`
	ServiceBus ServiceBus `yaml:"service_bus" json:"service_bus"`
	Storage    Storage    `yaml:"storage" json:"storage"`
}

// Entra is the app registration people sign in to.
type Entra struct {
	Authority           string `yaml:"authority" json:"authority"`
	ClientID            string `yaml:"client_id" json:"client_id"`
	ClientSecret        Secret `yaml:"client_secret" json:"client_secret"`
	CertificateFile     string `yaml:"certificate_file" json:"certificate_file"`
	CertificatePassword Secret `yaml:"certificate_password" json:"certificate_password"`
	// ManagedIdentity makes the host's Azure managed identity the app
	// registration's federated credential (no secret at all): "system",
	// or the client id of a user-assigned identity.
	ManagedIdentity string `yaml:"managed_identity" json:"managed_identity"`
	// ClientAssertionFile is a federated credential read from a file on
	// every use (a token the platform rotates, such as Kubernetes workload
	// identity's).
	ClientAssertionFile string   `yaml:"client_assertion_file" json:"client_assertion_file"`
	AppOnlyTenants      []string `yaml:"app_only_tenants" json:"app_only_tenants"`
}

// Graph is how presence is read.
type Graph struct {
	Endpoint          string   `yaml:"endpoint" json:"endpoint"`
	PollInterval      Duration `yaml:"poll_interval" json:"poll_interval"`
	Notifications     bool     `yaml:"notifications" json:"notifications"`
	ReconcileInterval Duration `yaml:"reconcile_interval" json:"reconcile_interval"`
	Heartbeat         Duration `yaml:"heartbeat" json:"heartbeat"`
}

// ServiceBus is where presence is published.
type ServiceBus struct {
	Namespaces    []Namespace `yaml:"namespaces" json:"namespaces"`
	Subscriptions []string    `yaml:"subscriptions" json:"subscriptions"`
	ListenKeys    bool        `yaml:"listen_keys" json:"listen_keys"`
	WorkQueue     string      `yaml:"work_queue" json:"work_queue"`
}

// Namespace is one Service Bus namespace with a Manage key.
type Namespace struct {
	ConnectionString Secret `yaml:"connection_string" json:"connection_string"`
	AdminEndpoint    string `yaml:"admin_endpoint" json:"admin_endpoint"`
}

// Storage selects the store.
type Storage struct {
	Tables Secret `yaml:"tables" json:"tables"`
}

// DefaultAuthority is Microsoft's multi-tenant sign-in for work and school
// accounts.
const DefaultAuthority = "https://login.microsoftonline.com/organizations"

// Default returns the configuration every file starts from: a key the file
// leaves out keeps its value here. This is the one place defaults live.
func Default() Config {
	return Config{
		LogLevel: "info",
		Listen:   "127.0.0.1:8080",
		DataDir:  "data",
		Entra:    Entra{Authority: DefaultAuthority},
		Graph: Graph{
			Endpoint:          "https://graph.microsoft.com",
			PollInterval:      Duration(30 * time.Second),
			Notifications:     true,
			ReconcileInterval: Duration(5 * time.Minute),
			Heartbeat:         Duration(15 * time.Minute),
		},
		ServiceBus: ServiceBus{Subscriptions: []string{"home"}, ListenKeys: true},
	}
}

// Load reads, expands, decodes and validates the YAML file at path.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	return yamlconf.Load(path, func(data []byte) (*Config, error) { return Parse(data, lookupEnv) })
}

// Parse decodes a YAML configuration strictly, replaces ${NAME} with
// environment variables, applies the defaults and validates the result.
// Every problem found is reported, joined, each with its key path.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	if err := yamlconf.Decode(data, lookupEnv, &cfg); err != nil {
		return nil, err
	}
	cfg.PublicURL = strings.TrimRight(strings.TrimSpace(cfg.PublicURL), "/")
	cfg.Graph.Endpoint = strings.TrimRight(strings.TrimSpace(cfg.Graph.Endpoint), "/")
	cfg.Entra.Authority = strings.TrimRight(strings.TrimSpace(cfg.Entra.Authority), "/")
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Key returns the 32 bytes of secret_key. Validate has checked it.
func (c *Config) Key() []byte {
	k, _ := decodeKey(c.SecretKey.Value())
	return k
}

func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != 32 {
				return nil, fmt.Errorf("decodes to %d bytes, want 32 (make one with: openssl rand -base64 32)", len(k))
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("is not base64 (make one with: openssl rand -base64 32)")
}

// RedirectURI is where Entra sends people back after sign-in.
func (c *Config) RedirectURI() string { return c.PublicURL + "/auth/end" }

// Scopes are the delegated permissions asked at sign-in: Presence.Read.All
// when change notifications are on (they need it), else Presence.Read.
func (c *Config) Scopes() []string {
	if c.Graph.Notifications {
		return []string{"Presence.Read.All"}
	}
	return []string{"Presence.Read"}
}
