package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var secretPath = regexp.MustCompile(`^(secret_key|api_key|entra\.(client_secret|certificate_password)|service_bus\.namespaces\[\d+\]\.connection_string|storage\.tables|entra|service_bus(\.namespaces(\[\d+\])?)?|storage|\(top level\))$`)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err from the current messages")

const (
	secretKey    = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8w=" // 32 bytes
	apiKey       = "api-key-0123456789-secret"
	clientSecret = "client-secret~0123456789"
	sbKey        = "c2VjcmV0LXNlcnZpY2UtYnVz"
	tablesKey    = "dGFibGVzLWtleS1zZWNyZXQ="
)

var testEnv = func(k string) (string, bool) {
	v, ok := map[string]string{
		"POLLER_SECRET_KEY":     secretKey,
		"POLLER_API_KEY":        apiKey,
		"POLLER_CLIENT_SECRET":  clientSecret,
		"SB_CONNECTION_STRING":  "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=" + sbKey,
		"SB2_CONNECTION_STRING": "Endpoint=sb://fabrikam.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=" + sbKey,
		"TABLES":                "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=" + tablesKey,
	}[k]
	return v, ok
}

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

func TestDefaults(t *testing.T) {
	cfg, err := Load("testdata/good/minimal.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.DataDir != "data" || cfg.Entra.Authority != DefaultAuthority {
		t.Errorf("defaults: listen %q data_dir %q authority %q", cfg.Listen, cfg.DataDir, cfg.Entra.Authority)
	}
	if cfg.Graph.PollInterval.Std() != 30*time.Second || cfg.Graph.Heartbeat.Std() != 15*time.Minute || !cfg.Graph.Notifications {
		t.Errorf("graph defaults: %+v", cfg.Graph)
	}
	if !cfg.ServiceBus.ListenKeys || len(cfg.ServiceBus.Subscriptions) != 1 || cfg.ServiceBus.Subscriptions[0] != "home" {
		t.Errorf("service_bus defaults: %+v", cfg.ServiceBus)
	}
	if got := cfg.RedirectURI(); got != "https://presence.example.com/auth/end" {
		t.Errorf("redirect URI %q", got)
	}
	if len(cfg.Key()) != 32 {
		t.Errorf("key is %d bytes", len(cfg.Key()))
	}
	if got := cfg.Scopes(); len(got) != 1 || got[0] != "Presence.Read.All" {
		t.Errorf("scopes %v", got)
	}
}

func TestFullFile(t *testing.T) {
	cfg, err := Load("testdata/good/full.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PublicURL != "https://presence.example.com" {
		t.Errorf("public_url keeps its trailing slash: %q", cfg.PublicURL)
	}
	if cfg.APIKey.Value() != apiKey || cfg.Entra.ClientSecret.Value() != clientSecret {
		t.Error("secrets not expanded")
	}
	if got := cfg.Scopes(); got[0] != "Presence.Read" {
		t.Errorf("scopes without notifications: %v", got)
	}
}

// TestBadFiles compares every problem with testdata/bad/<name>.err.
func TestBadFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
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
				if err := os.WriteFile(golden, []byte(err.Error()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("%v (run go test -update to create it)", rerr)
			}
			if got := err.Error() + "\n"; got != string(want) {
				t.Errorf("problems differ from %s:\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
			for _, s := range []string{secretKey, apiKey, clientSecret, sbKey, tablesKey} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("an error repeats a secret: %s", err)
				}
			}
		})
	}
}

// TestSecretsNeverPrint: check-config's YAML, JSON, %v, %+v and slog all
// redact every secret.
func TestSecretsNeverPrint(t *testing.T) {
	cfg, err := Load("testdata/good/full.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "cfg", cfg, "key", cfg.SecretKey)
	all := string(y) + string(j) + fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg) + logged.String()
	for _, s := range []string{secretKey, apiKey, clientSecret, sbKey, tablesKey} {
		if strings.Contains(all, s) {
			t.Errorf("secret %q printed", s)
		}
	}
	if !strings.Contains(string(y), "secret_key: <redacted>") {
		t.Errorf("yaml lacks the redacted secret_key:\n%s", y)
	}
}

func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad"} {
		files, _ := filepath.Glob(dir + "/*.yaml")
		for _, file := range files {
			data, _ := os.ReadFile(file)
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, testEnv)
		if err == nil {
			if cfg.Validate() != nil || len(cfg.Key()) != 32 {
				t.Fatal("accepted a configuration that does not validate")
			}
			return
		}
		// A secret field's value never shows in an error, wherever it came
		// from. (A secret expanded into a field that is not secret, such
		// as listen, is the user's text there and may be quoted.)
		for line := range strings.SplitSeq(err.Error(), "\n") {
			path, _, _ := strings.Cut(line, ": ")
			if !secretPath.MatchString(path) {
				continue
			}
			for _, s := range []string{secretKey, apiKey, clientSecret, sbKey, tablesKey} {
				if strings.Contains(line, s) {
					t.Fatalf("an error repeats a secret: %s", line)
				}
			}
		}
	})
}

// TestExampleFile: the example the docs point at is valid.
func TestExampleFile(t *testing.T) {
	if _, err := Load("../../presence-poller.example.yaml", testEnv); err != nil {
		t.Fatal(err)
	}
}
