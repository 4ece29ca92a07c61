package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err from the current messages")

const (
	sbSecret   = "c2VjcmV0LXNlcnZpY2UtYnVz"
	samSecret  = "c2FtLXRvcGljLWtleQ"
	mqttSecret = "hunter2-mqtt"
	hueSecret  = "hue-api-key-0123456789"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

var testEnv = env(map[string]string{
	"SERVICE_BUS_CONNECTION_STRING": "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=" + sbSecret,
	"SAM_KEY":                       samSecret,
	"MQTT_PASSWORD":                 mqttSecret,
	"HUE_USERNAME":                  hueSecret,
})

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	if len(files) == 0 {
		t.Fatal("no good files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f, testEnv); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFullFile(t *testing.T) {
	cfg, err := Load("testdata/good/full.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Users[1].ConnectionString.Value(); !strings.HasSuffix(got, "SharedAccessKey="+samSecret) {
		t.Errorf("per-user connection string not expanded: %q", got)
	}
	if cfg.MQTT.Password.Value() != mqttSecret || cfg.Hue.Bridges[0].Username.Value() != hueSecret {
		t.Error("secrets not expanded")
	}
	if cfg.Hue.MinInterval.Std() != 1500*time.Millisecond || cfg.Hue.Mode != HueModeAlways {
		t.Errorf("hue: %+v", cfg.Hue)
	}
	if got := cfg.Users[1].TopicName(); got != "sam-presence" {
		t.Errorf("topic override: %q", got)
	}
	if got := cfg.Users[0].TopicName(); got != "6f1c2a3b-1111-2222-3333-444455556666" {
		t.Errorf("default topic: %q", got)
	}
	if diff := cmp.Diff([]string{"Alex", "Sam Smith"}, cfg.Hue.Bridges[0].Groups[0].Users); diff != "" {
		t.Error(diff)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Load("testdata/good/minimal.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Users = cfg.Users
	want.ServiceBus.ConnectionString = cfg.ServiceBus.ConnectionString
	if diff := cmp.Diff(want, *cfg); diff != "" {
		t.Errorf("minimal file does not get the defaults (-want +got):\n%s", diff)
	}
	if cfg.MQTT.Enabled() || cfg.Hue.Enabled() {
		t.Error("MQTT or Hue enabled without being configured")
	}
	// An explicit empty value overrides a default (health_addr "" turns it off).
	cfg, err = Parse([]byte("health_addr: \"\"\nusers: [{id: 6f1c2a3b-1111-2222-3333-444455556666, name: A}]\nservice_bus: {connection_string: \"Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v\"}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HealthAddr != "" {
		t.Errorf("health_addr = %q, want it off", cfg.HealthAddr)
	}
}

func TestBadFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) == 0 {
		t.Fatal("no bad files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(data, testEnv)
			if err == nil {
				t.Fatal("accepted")
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			if *update {
				os.WriteFile(golden, []byte(err.Error()+"\n"), 0o644)
			}
			want, _ := os.ReadFile(golden)
			if diff := cmp.Diff(strings.TrimSpace(string(want)), err.Error()); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
			for _, s := range []string{sbSecret, samSecret, mqttSecret, hueSecret, "secretkey123", "hunter2"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error repeats a secret %q", s)
				}
			}
		})
	}
}

func TestFromJSON(t *testing.T) {
	opts := `{
  "log_level": "info", "health_addr": "127.0.0.1:8086",
  "users": [{"id": "6f1c2a3b-1111-2222-3333-444455556666", "name": "Alex", "topic": "", "connection_string": ""}],
  "service_bus": {"connection_string": "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=v", "subscription": "home", "queue": ""},
  "mqtt": {"url": "", "username": "", "password": "", "ca_file": "", "client_id": "presence-bridge", "discovery_prefix": "homeassistant", "base_topic": "presence-bridge"},
  "hue": {"mode": "auto", "min_interval": "1s", "bridges": [], "colors": []}
}`
	cfg, err := FromJSON([]byte(opts))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Users[0].Name != "Alex" || cfg.Hue.MinInterval.Std() != time.Second {
		t.Errorf("decoded %+v", cfg)
	}
	_, err = FromJSON([]byte(`{"users": [{"id": "6f1c2a3b-1111-2222-3333-444455556666", "name": "Alex", "colour": "red"}], "service_bus": {"connection_string": "${X}"}}`))
	want := `users[0].colour: unknown key (known keys: id, name, topic, connection_string)
service_bus.connection_string: has no Endpoint=sb://<namespace>.servicebus.windows.net/`
	if err == nil || !strings.HasPrefix(err.Error(), strings.SplitN(want, "\n", 2)[0]) {
		t.Errorf("err = %v, want unknown key first", err)
	}
}

// TestSecretsNeverPrint proves no secret reaches logs or printed configuration.
func TestSecretsNeverPrint(t *testing.T) {
	cfg, err := Load("testdata/good/full.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	y, _ := yaml.Marshal(cfg)
	out.Write(y)
	j, _ := json.Marshal(cfg)
	out.Write(j)
	fmt.Fprintf(&out, "%v %+v %#v %s", cfg, cfg, cfg, cfg.MQTT.Password)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "cfg", cfg, "password", cfg.MQTT.Password, "hue", cfg.Hue)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "cfg", cfg, "key", cfg.Hue.Bridges[0].Username)
	for _, s := range []string{sbSecret, samSecret, mqttSecret, hueSecret} {
		if strings.Contains(out.String(), s) {
			t.Errorf("secret %q printed:\n%s", s, out.String())
		}
	}
	if !strings.Contains(string(y), "password: <redacted>") {
		t.Errorf("printed configuration does not show redacted secrets:\n%s", y)
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{"Alex": "alex", "Sam Smith": "sam_smith", "presence-bridge": "presence_bridge", "Zoë": "zo_", "!!": "", "Zoë O'Brien": "zo__o_brien", "home/Bridge_2": "home_bridge_2"} {
		if got := Slug(in); got != want {
			t.Errorf("Slug(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseHexColor(t *testing.T) {
	if c, err := ParseHexColor("#F80"); err != nil || c != (RGB{0xff, 0x88, 0}) {
		t.Errorf("#F80: %v %v", c, err)
	}
	for _, bad := range []string{"", "ff0000", "#ff00", "#gg0000", "#ff00001"} {
		if _, err := ParseHexColor(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/good/*.yaml", "testdata/bad/*.yaml"} {
		files, _ := filepath.Glob(dir)
		for _, name := range files {
			data, _ := os.ReadFile(name)
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, testEnv)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a configuration Validate rejects: %v", err)
		}
	})
}

// TestUserIDsAreCanonical: an id typed in upper case is the lower-case id
// everywhere after decoding (file and add-on options), and a group may name
// a user by the id in either case.
func TestUserIDsAreCanonical(t *testing.T) {
	const upper = "6F1C2A3B-1111-2222-3333-444455556666"
	yamlDoc := "users: [{id: " + upper + ", name: Alex}]\nservice_bus: {connection_string: \"Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v\"}\n" +
		"hue: {bridges: [{host: 10.0.0.2, username: k, groups: [{group: Office, users: [" + upper + "]}]}]}\n"
	jsonDoc := `{"users": [{"id": "` + upper + `", "name": "Alex"}], "service_bus": {"connection_string": "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v"}, "hue": {"bridges": [{"host": "10.0.0.2", "username": "k", "groups": [{"group": "Office", "users": ["` + upper + `"]}]}]}}`
	for name, parse := range map[string]func() (*Config, error){
		"yaml":         func() (*Config, error) { return Parse([]byte(yamlDoc), nil) },
		"options.json": func() (*Config, error) { return FromJSON([]byte(jsonDoc)) },
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := parse()
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Users[0].ID; got != "6f1c2a3b-1111-2222-3333-444455556666" {
				t.Errorf("id = %q, want it lower-cased", got)
			}
			if got := cfg.Users[0].TopicName(); got != "6f1c2a3b-1111-2222-3333-444455556666" {
				t.Errorf("topic = %q", got)
			}
		})
	}
}

// TestEnvExpansionKeepsTypes: an expanded value takes the type of the field
// it fills. A secret of "~" or "null" stays that text (YAML would read it as
// null and the secret would silently become empty); numbers and durations
// still come from the environment.
func TestEnvExpansionKeepsTypes(t *testing.T) {
	doc := `users: [{id: 6f1c2a3b-1111-2222-3333-444455556666, name: Alex}]
service_bus: {connection_string: "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v"}
mqtt:
  url: tcp://broker:1883
  username: u
  password: ${P}
  client_id: ${CID}
hue:
  min_interval: ${IV}
  bridges:
    - host: 10.0.0.2
      username: ${HUE}
      groups: [{group: Office, users: [Alex]}]
  colors:
    - status: Busy
      brightness: ${BRI}
`
	for _, secret := range []string{"~", "null", "Null", "true", "0x1F", "  spaced  "} {
		t.Run(fmt.Sprintf("%q", secret), func(t *testing.T) {
			cfg, err := Parse([]byte(doc), env(map[string]string{"P": secret, "HUE": "k" + secret, "CID": "123", "IV": "1500ms", "BRI": "40"}))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.MQTT.Password.Value(); got != secret {
				t.Errorf("password = %q, want %q", got, secret)
			}
			if got := cfg.Hue.Bridges[0].Username.Value(); got != "k"+secret {
				t.Errorf("hue username = %q", got)
			}
			if cfg.MQTT.ClientID != "123" || cfg.Hue.MinInterval.Std() != 1500*time.Millisecond || cfg.Hue.Colors[0].Brightness != 40 {
				t.Errorf("typed values from the environment: client_id %q, min_interval %s, brightness %d", cfg.MQTT.ClientID, cfg.Hue.MinInterval, cfg.Hue.Colors[0].Brightness)
			}
		})
	}
}

// TestAddOnEmptyMQTTURL: Home Assistant's options form sends "" (or blanks)
// for a cleared field; that is "no broker of my own", not a bad URL.
func TestAddOnEmptyMQTTURL(t *testing.T) {
	for _, url := range []string{"", "  "} {
		cfg, err := FromJSON([]byte(`{"users": [{"id": "6f1c2a3b-1111-2222-3333-444455556666", "name": "Alex"}], "service_bus": {"connection_string": "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v"}, "mqtt": {"url": "` + url + `"}}`))
		if err != nil {
			t.Fatalf("url %q: %v", url, err)
		}
		if cfg.MQTT.Enabled() {
			t.Errorf("url %q: mqtt enabled", url)
		}
	}
}

// TestGraphSection: a graph-only configuration is valid and takes SPEC §3's
// defaults; scopes given replace the default list; the authority follows
// the tenant unless given.
func TestGraphSection(t *testing.T) {
	cfg, err := Load("testdata/good/graph-only.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	g := cfg.Graph
	if !g.Enabled() || cfg.ServiceBusEnabled() {
		t.Errorf("graph enabled %v, service bus enabled %v", g.Enabled(), cfg.ServiceBusEnabled())
	}
	if g.PollInterval.Std() != 10*time.Second || g.Tenant != "organizations" {
		t.Errorf("defaults: %+v", g)
	}
	if diff := cmp.Diff([]string{"Presence.Read.All"}, g.Scopes); diff != "" {
		t.Error(diff)
	}
	if got := g.AuthorityURL(); got != "https://login.microsoftonline.com/organizations" || !g.MicrosoftAuthority() {
		t.Errorf("authority %q (microsoft %v)", got, g.MicrosoftAuthority())
	}
	cfg, err = Load("testdata/good/both-sources.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"Presence.Read"}, cfg.Graph.Scopes); diff != "" {
		t.Error(diff)
	}
	if !cfg.ServiceBusEnabled() || cfg.Graph.PollInterval.Std() != 2*time.Second {
		t.Errorf("both sources: %+v", cfg.Graph)
	}
	fake := Graph{Authority: "https://127.0.0.1:8443/organizations/"}
	if fake.AuthorityURL() != "https://127.0.0.1:8443/organizations" || fake.MicrosoftAuthority() {
		t.Errorf("a fake authority is used as given: %q", fake.AuthorityURL())
	}
	if ScopeName("https://graph.microsoft.com/Presence.Read.All") != "Presence.Read.All" {
		t.Error("ScopeName keeps the resource")
	}
}
