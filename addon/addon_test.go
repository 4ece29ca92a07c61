package addon

import (
	"errors"
	"github.com/presence-bridge/presence-bridge/internal/testnet"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/presence-bridge/presence-bridge/config"
)

const (
	alexID  = "6f1c2a3b-1111-2222-3333-444455556666"
	samID   = "0b9e8d7c-aaaa-bbbb-cccc-ddddeeeeffff"
	connStr = "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0"
	samConn = "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=sam;SharedAccessKey=c2Ft;EntityPath=" + samID
)

// minimalOptions is what the Supervisor writes for the manifest's defaults
// plus one user and the connection string (unset optional keys are absent).
const minimalOptions = `{
  "log_level": "info",
  "health_addr": "127.0.0.1:8086",
  "users": [{"id": "` + alexID + `", "name": "Alex"}],
  "service_bus": {"subscription": "home", "connection_string": "` + connStr + `"},
  "mqtt": {"discovery_prefix": "homeassistant", "base_topic": "presence-bridge"},
  "hue": {"mode": "auto", "min_interval": "1s", "bridges": [], "colors": []}
}`

// fullOptions sets every option.
const fullOptions = `{
  "log_level": "debug",
  "health_addr": "127.0.0.1:9000",
  "users": [
    {"id": "` + alexID + `", "name": "Alex", "topic": "alex-presence"},
    {"id": "` + samID + `", "name": "Sam", "connection_string": "` + samConn + `"}
  ],
  "service_bus": {"connection_string": "` + connStr + `", "subscription": "office"},
  "mqtt": {"url": "ssl://broker.example:8883", "username": "bridge", "password": "mqtt-secret", "ca_file": "CAFILE",
           "client_id": "office-bridge", "discovery_prefix": "ha", "base_topic": "office-presence"},
  "hue": {
    "mode": "always", "min_interval": "1500ms",
    "bridges": [{"host": "192.168.1.20", "username": "hue-key",
                 "groups": [{"group": "Office", "users": ["Alex", "` + samID + `"]}]}],
    "colors": [
      {"status": "Busy", "color": "#ff0000", "brightness": 100},
      {"status": "InACall", "effect": "colorloop"},
      {"status": "Offline", "off": true}
    ]
  }
}`

func writeOptions(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "options.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mqttOK(body string) map[string]answer {
	return map[string]answer{"GET /services/mqtt": {200, `{"result":"ok","data":` + body + `}`}}
}

const mosquittoService = `{"addon":"core_mosquitto","host":"core-mosquitto","port":1883,"ssl":false,"protocol":"3.1.1","username":"addons","password":"broker-pw"}`

func TestLoadMinimal(t *testing.T) {
	sup := newFakeSupervisor(t, mqttOK(mosquittoService))
	cfg, err := Load(t.Context(), Options{OptionsPath: writeOptions(t, minimalOptions), SupervisorURL: sup.srv.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.Users = []config.User{{ID: alexID, Name: "Alex"}}
	want.ServiceBus.ConnectionString = connStr
	want.MQTT.URL = "tcp://core-mosquitto:1883"
	want.MQTT.Username = "addons"
	want.MQTT.Password = "broker-pw"
	if diff := cmp.Diff(&want, cfg, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"GET /services/mqtt"}, sup.paths()); diff != "" {
		t.Errorf("supervisor calls (-want +got):\n%s", diff)
	}
}

func TestLoadFull(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sup := newFakeSupervisor(t, mqttOK(mosquittoService))
	opts := strings.Replace(fullOptions, "CAFILE", caFile, 1)
	cfg, err := Load(t.Context(), Options{OptionsPath: writeOptions(t, opts), SupervisorURL: sup.srv.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Config{
		LogLevel:   "debug",
		HealthAddr: "127.0.0.1:9000",
		Users: []config.User{
			{ID: alexID, Name: "Alex", Topic: "alex-presence"},
			{ID: samID, Name: "Sam", ConnectionString: samConn},
		},
		ServiceBus: config.ServiceBus{ConnectionString: connStr, Subscription: "office"},
		Graph:      config.Default().Graph,
		MQTT: config.MQTT{
			URL: "ssl://broker.example:8883", Username: "bridge", Password: "mqtt-secret", CAFile: caFile,
			ClientID: "office-bridge", DiscoveryPrefix: "ha", BaseTopic: "office-presence",
		},
		Hue: config.Hue{
			Mode: "always", MinInterval: config.Duration(1500e6),
			Bridges: []config.HueBridge{{Host: "192.168.1.20", Username: "hue-key",
				Groups: []config.HueGroup{{Group: "Office", Users: []string{"Alex", samID}}}}},
			Colors: []config.Color{
				{Status: "Busy", Color: "#ff0000", Brightness: 100},
				{Status: "InACall", Effect: "colorloop"},
				{Status: "Offline", Off: true},
			},
		},
	}
	if diff := cmp.Diff(want, cfg, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	// A URL in the options wins: the Supervisor is not asked.
	if got := sup.paths(); len(got) != 0 {
		t.Errorf("supervisor was called: %v", got)
	}
}

// TestLoadMQTTLookup covers the Supervisor's answers to GET /services/mqtt.
func TestLoadMQTTLookup(t *testing.T) {
	withHue := strings.Replace(minimalOptions, `"bridges": []`,
		`"bridges": [{"host": "192.168.1.20", "username": "k", "groups": [{"group": "Office", "users": ["Alex"]}]}]`, 1)
	tests := []struct {
		name     string
		options  string
		answer   *answer // nil: Supervisor unreachable
		token    string
		wantURL  string
		wantUser string
		wantErr  error
		wantText []string
	}{
		{
			name: "success", options: minimalOptions,
			answer:  &answer{200, `{"result":"ok","data":` + mosquittoService + `}`},
			wantURL: "tcp://core-mosquitto:1883", wantUser: "addons",
		},
		{
			name: "port as string with ssl", options: minimalOptions,
			answer:  &answer{200, `{"result":"ok","data":{"app":"core_mosquitto","host":"core-mosquitto","port":"8883","ssl":true,"username":"a","password":"b"}}`},
			wantURL: "ssl://core-mosquitto:8883", wantUser: "a",
		},
		{
			name: "400 without hue fails", options: minimalOptions,
			answer:  &answer{400, `{"result":"error","message":"Service not enabled"}`},
			wantErr: ErrServiceNotEnabled, wantText: []string{"Service not enabled", "Mosquitto broker add-on", "mqtt.url"},
		},
		{
			name: "400 with hue runs without home assistant", options: withHue,
			answer:  &answer{400, `{"result":"error","message":"Service not enabled"}`},
			wantURL: "",
		},
		{
			name: "403", options: withHue,
			answer:  &answer{403, `{"result":"error","message":"Forbidden"}`},
			wantErr: ErrForbidden, wantText: []string{"mqtt:want", "HTTP 403"},
		},
		{
			name: "wrong token", options: minimalOptions, token: "nope",
			answer:   &answer{200, `{"result":"ok","data":` + mosquittoService + `}`},
			wantText: []string{"HTTP 401", "Invalid token"},
		},
		{
			name: "unreachable", options: withHue,
			wantErr: ErrUnreachable, wantText: []string{"set mqtt.url"},
		},
		{
			name: "result not ok", options: minimalOptions,
			answer:   &answer{200, `{"result":"error","message":"odd"}`},
			wantText: []string{"odd"},
		},
		{
			name: "garbage data", options: minimalOptions,
			answer:   &answer{200, `{"result":"ok","data":{"host":"h","port":"x"}}`},
			wantText: []string{"bad port"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := "http://" + testnet.ClosedAddr(t)
			if tt.answer != nil {
				sup := newFakeSupervisor(t, map[string]answer{"GET /services/mqtt": *tt.answer})
				url = sup.srv.URL
			}
			token := testToken
			if tt.token != "" {
				token = tt.token
			}
			cfg, err := Load(t.Context(), Options{OptionsPath: writeOptions(t, tt.options), SupervisorURL: url, Token: token})
			if tt.wantErr != nil || tt.wantText != nil {
				if err == nil {
					t.Fatalf("Load succeeded with mqtt %+v", cfg.MQTT)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				for _, s := range tt.wantText {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not say %q", err, s)
					}
				}
				if strings.Contains(err.Error(), "broker-pw") || strings.Contains(err.Error(), "c2VjcmV0") {
					t.Errorf("error leaks a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MQTT.URL != tt.wantURL || cfg.MQTT.Username != tt.wantUser {
				t.Errorf("mqtt url %q user %q, want %q %q", cfg.MQTT.URL, cfg.MQTT.Username, tt.wantURL, tt.wantUser)
			}
			if cfg.MQTT.Enabled() != (tt.wantURL != "") {
				t.Errorf("mqtt enabled = %v", cfg.MQTT.Enabled())
			}
		})
	}
}

// TestLoadUnreadableOptions: the image runs as non-root and the Supervisor
// writes options.json 0600 root: the options then come from the API.
func TestLoadUnreadableOptions(t *testing.T) {
	denied := func(string) ([]byte, error) {
		return nil, &fs.PathError{Op: "open", Path: "/data/options.json", Err: fs.ErrPermission}
	}
	answers := mqttOK(mosquittoService)
	answers["GET /addons/self/options/config"] = answer{200, `{"result":"ok","data":` + minimalOptions + `}`}
	sup := newFakeSupervisor(t, answers)
	cfg, err := Load(t.Context(), Options{SupervisorURL: sup.srv.URL, Token: testToken, readFile: denied})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Users) != 1 || cfg.Users[0].Name != "Alex" || cfg.MQTT.URL != "tcp://core-mosquitto:1883" {
		t.Errorf("config %+v", cfg)
	}
	if diff := cmp.Diff([]string{"GET /addons/self/options/config", "GET /services/mqtt"}, sup.paths()); diff != "" {
		t.Errorf("supervisor calls (-want +got):\n%s", diff)
	}

	// And when the API refuses too, the error says both.
	sup.setAnswer("GET /addons/self/options/config", answer{403, `{"result":"error","message":"Forbidden"}`})
	if _, err := Load(t.Context(), Options{SupervisorURL: sup.srv.URL, Token: testToken, readFile: denied}); err == nil ||
		!strings.Contains(err.Error(), "not readable") || !errors.Is(err, ErrForbidden) {
		t.Errorf("err = %v", err)
	}
}

func TestLoadBadOptions(t *testing.T) {
	sup := newFakeSupervisor(t, mqttOK(mosquittoService))
	tests := []struct {
		name, options, want string
	}{
		{"unknown key", strings.Replace(minimalOptions, `"log_level"`, `"colour": 1, "log_level"`, 1), "colour"},
		{"no users", strings.Replace(minimalOptions, `[{"id": "`+alexID+`", "name": "Alex"}]`, `[]`, 1), "users"},
		{"not json", `{`, "options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(t.Context(), Options{OptionsPath: writeOptions(t, tt.options), SupervisorURL: sup.srv.URL, Token: testToken})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := Load(t.Context(), Options{OptionsPath: filepath.Join(t.TempDir(), "missing.json"), SupervisorURL: sup.srv.URL}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestDetect(t *testing.T) {
	present := writeOptions(t, minimalOptions)
	missing := filepath.Join(t.TempDir(), "options.json")
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}
	tests := []struct {
		name string
		path string
		env  func(string) (string, bool)
		want bool
	}{
		{"token and file", present, env(map[string]string{TokenEnv: "t"}), true},
		{"no token", present, env(nil), false},
		{"empty token", present, env(map[string]string{TokenEnv: ""}), false},
		{"no file", missing, env(map[string]string{TokenEnv: "t"}), false},
		{"nil lookup", present, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Options{OptionsPath: tt.path}).Detect(tt.env); got != tt.want {
				t.Errorf("Detect = %v, want %v", got, tt.want)
			}
		})
	}
}
