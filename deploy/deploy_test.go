package deploy

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/presence-bridge/presence-bridge/poller/config"
	"github.com/presence-bridge/presence-bridge/poller/functions"
)

func readJSON(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestHostJSON: the custom handler runs the poller's functions command,
// HTTP requests are proxied as they came, and routes have no /api prefix
// (the seed's /auth/start and /auth/end stay).
func TestHostJSON(t *testing.T) {
	var host struct {
		Version       string `json:"version"`
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string   `json:"defaultExecutablePath"`
				Arguments             []string `json:"arguments"`
			} `json:"description"`
			EnableProxyingHTTPRequest *bool `json:"enableProxyingHttpRequest"`
			EnableForwardingHTTP      *bool `json:"enableForwardingHttpRequest"`
		} `json:"customHandler"`
		Extensions struct {
			HTTP struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
		} `json:"extensions"`
	}
	readJSON(t, "functions/host.json", &host)
	d := host.CustomHandler.Description
	if host.Version != "2.0" || d.DefaultExecutablePath != "presence-poller" || !slices.Equal(d.Arguments, []string{"functions", "-config", "presence-poller.yaml"}) {
		t.Errorf("customHandler %+v", host.CustomHandler)
	}
	if p := host.CustomHandler.EnableProxyingHTTPRequest; p == nil || !*p || host.CustomHandler.EnableForwardingHTTP != nil {
		t.Error("enableProxyingHttpRequest must be true (and the legacy enableForwardingHttpRequest absent)")
	}
	if p := host.Extensions.HTTP.RoutePrefix; p == nil || *p != "" {
		t.Error(`extensions.http.routePrefix must be ""`)
	}
}

type binding struct {
	Type              string   `json:"type"`
	Direction         string   `json:"direction"`
	Name              string   `json:"name"`
	AuthLevel         string   `json:"authLevel"`
	Methods           []string `json:"methods"`
	Route             string   `json:"route"`
	Schedule          string   `json:"schedule"`
	QueueName         string   `json:"queueName"`
	Connection        string   `json:"connection"`
	IsSessionsEnabled bool     `json:"isSessionsEnabled"`
	DataType          string   `json:"dataType"`
}

// TestFunctionFolders: exactly the functions SPEC §9 names, each with the
// trigger, route, auth level and binding the poller expects.
func TestFunctionFolders(t *testing.T) {
	type http struct{ method, route, auth string }
	httpFns := map[string]http{
		"auth-start":    {"get", "auth/start", "anonymous"},
		"auth-end":      {"post", "auth/end", "anonymous"},
		"notifications": {"post", "notifications", "anonymous"},
		"presence-last": {"get", "api/presence/{objectId}", "function"},
		"refresh":       {"post", "api/refresh", "function"},
	}
	entries, err := os.ReadDir("functions")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	want := []string{"auth-end", "auth-start", "notifications", functions.TimerFunction, functions.WorkFunction, "presence-last", "refresh"}
	slices.Sort(want)
	if !slices.Equal(dirs, want) {
		t.Fatalf("function folders %v, want %v", dirs, want)
	}
	for _, dir := range dirs {
		var fn struct{ Bindings []binding }
		readJSON(t, filepath.Join("functions", dir, "function.json"), &fn)
		b := fn.Bindings
		switch dir {
		case functions.TimerFunction:
			if len(b) != 1 || b[0].Type != "timerTrigger" || b[0].Name != "timer" || b[0].Schedule != "0/30 * * * * *" {
				t.Errorf("%s: %+v", dir, b)
			}
		case functions.WorkFunction:
			if len(b) != 1 || b[0].Type != "serviceBusTrigger" || b[0].Name != functions.WorkBinding || !b[0].IsSessionsEnabled ||
				b[0].DataType != "binary" || b[0].QueueName != "%WORK_QUEUE%" || b[0].Connection != "ServiceBusConnection" {
				t.Errorf("%s: %+v", dir, b)
			}
		default:
			h := httpFns[dir]
			if len(b) != 2 || b[0].Type != "httpTrigger" || b[0].Route != h.route || b[0].AuthLevel != h.auth ||
				!slices.Equal(b[0].Methods, []string{h.method}) || b[1].Type != "http" || b[1].Direction != "out" {
				t.Errorf("%s: %+v", dir, b)
			}
		}
	}
}

var (
	bicepResource = regexp.MustCompile(`(?m)^resource (\w+) '([^'@]+)@([^']+)'`)
	bicepParam    = regexp.MustCompile(`(?m)^param (\w+) (\w+)`)
	bicepOutput   = regexp.MustCompile(`(?m)^output (\w+) `)
	bicepSetting  = regexp.MustCompile(`(?m)^\s+name: '([A-Za-z_]+)'\s*$`)
)

type armTemplate struct {
	Parameters map[string]struct {
		Type string `json:"type"`
	} `json:"parameters"`
	Resources []map[string]any `json:"resources"`
	Outputs   map[string]any   `json:"outputs"`
}

// TestBicepAndARMAgree: main.json is main.bicep compiled by hand (there is
// no Bicep CLI here): the same resources in the same order with the same
// API versions, every literal property of each ARM resource present in its
// Bicep block, the same parameters (secure ones secure in both), outputs
// and app settings.
func TestBicepAndARMAgree(t *testing.T) {
	src, err := os.ReadFile("azure/main.bicep")
	if err != nil {
		t.Fatal(err)
	}
	bicep := string(src)
	var arm armTemplate
	readJSON(t, "azure/main.json", &arm)

	decls := bicepResource.FindAllStringSubmatchIndex(bicep, -1)
	if len(decls) != len(arm.Resources) {
		t.Fatalf("main.bicep has %d resources, main.json %d", len(decls), len(arm.Resources))
	}
	for i, d := range decls {
		typ, api := bicep[d[4]:d[5]], bicep[d[6]:d[7]]
		end := len(bicep)
		if i+1 < len(decls) {
			end = decls[i+1][0]
		}
		block := bicep[d[0]:end]
		r := arm.Resources[i]
		if r["type"] != typ || r["apiVersion"] != api {
			t.Errorf("resource %d: bicep %s@%s, json %v@%v", i, typ, api, r["type"], r["apiVersion"])
			continue
		}
		for _, lit := range literals("", r) {
			if !strings.Contains(block, lit) {
				t.Errorf("%s (%s): main.json has %q, main.bicep does not", bicep[d[2]:d[3]], typ, lit)
			}
		}
	}

	var bicepParams []string
	for _, m := range bicepParam.FindAllStringSubmatchIndex(bicep, -1) {
		name := bicep[m[2]:m[3]]
		bicepParams = append(bicepParams, name)
		secure := strings.HasSuffix(strings.TrimSpace(bicep[:m[0]]), "@secure()")
		p, ok := arm.Parameters[name]
		if !ok {
			t.Errorf("parameter %s is in main.bicep only", name)
		} else if secure != (p.Type == "securestring") {
			t.Errorf("parameter %s: secure in one file only", name)
		}
	}
	if len(bicepParams) != len(arm.Parameters) {
		t.Errorf("parameters: bicep %v, json %d", bicepParams, len(arm.Parameters))
	}
	var outs []string
	for _, m := range bicepOutput.FindAllStringSubmatch(bicep, -1) {
		outs = append(outs, m[1])
		if _, ok := arm.Outputs[m[1]]; !ok {
			t.Errorf("output %s is in main.bicep only", m[1])
		}
	}
	if len(outs) != len(arm.Outputs) {
		t.Errorf("outputs: bicep %v, json %d", outs, len(arm.Outputs))
	}
	if b, j := bicepSettings(bicep), armSettings(t, arm); !slices.Equal(b, j) {
		t.Errorf("app settings differ:\nbicep %v\njson  %v", b, j)
	}
}

// literals renders the constant scalars of an ARM resource (not its
// expressions, type or apiVersion) the way Bicep writes them: key: 'text',
// key: true, key: 42.
func literals(key string, v any) []string {
	switch v := v.(type) {
	case map[string]any:
		var out []string
		for k, x := range v {
			if key == "" && (k == "type" || k == "apiVersion" || k == "name" || k == "dependsOn" || k == "scope") {
				continue
			}
			out = append(out, literals(k, x)...)
		}
		return out
	case []any:
		var out []string
		for _, x := range v {
			if _, isMap := x.(map[string]any); isMap {
				out = append(out, literals("", x)...)
			}
		}
		return out
	case string:
		if strings.HasPrefix(v, "[") || key == "" {
			return nil
		}
		return []string{fmt.Sprintf("%s: '%s'", key, v)}
	case bool, float64:
		return []string{fmt.Sprintf("%s: %v", key, v)}
	}
	return nil
}

func bicepSettings(bicep string) []string {
	i := strings.Index(bicep, "appSettings: [")
	j := strings.Index(bicep[i:], "\n      ]")
	var out []string
	for _, m := range bicepSetting.FindAllStringSubmatch(bicep[i:i+j], -1) {
		out = append(out, m[1])
	}
	return out
}

func armSettings(t *testing.T, arm armTemplate) []string {
	t.Helper()
	for _, r := range arm.Resources {
		if r["type"] != "Microsoft.Web/sites" {
			continue
		}
		b, _ := json.Marshal(r["properties"])
		var p struct {
			SiteConfig struct {
				AppSettings []struct{ Name string } `json:"appSettings"`
			} `json:"siteConfig"`
		}
		_ = json.Unmarshal(b, &p)
		var out []string
		for _, s := range p.SiteConfig.AppSettings {
			out = append(out, s.Name)
		}
		return out
	}
	t.Fatal("main.json has no function app")
	return nil
}

// TestConfigTemplate: functions/presence-poller.yaml is valid with the
// app settings main.bicep sets (Key Vault references resolved to values of
// the right shape), and every ${NAME} it uses is one of them.
func TestConfigTemplate(t *testing.T) {
	src, _ := os.ReadFile("azure/main.bicep")
	settings := bicepSettings(string(src))
	values := map[string]string{
		"LOG_LEVEL": "info", "PUBLIC_URL": "https://presence-poller-abc.azurewebsites.net", "ENTRA_CLIENT_ID": "00000000-1111-2222-3333-444444444444",
		"ENTRA_AUTHORITY": "https://login.microsoftonline.com/organizations", "ENTRA_MANAGED_IDENTITY": "system", "HEARTBEAT": "15m",
		"POLLER_SECRET_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "POLLER_API_KEY": "api-key-0123456789abcdef",
		"SERVICE_BUS_CONNECTION_STRING": "Endpoint=sb://presence-sb-abc.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=a2V5",
		"TABLES_CONNECTION_STRING":      "DefaultEndpointsProtocol=https;AccountName=presenceabc;AccountKey=a2V5;EndpointSuffix=core.windows.net",
		"WORK_QUEUE":                    "presence-work",
	}
	lookup := func(k string) (string, bool) {
		if !slices.Contains(settings, k) {
			t.Errorf("presence-poller.yaml uses ${%s}, which main.bicep does not set", k)
			return "", false
		}
		v, ok := values[k]
		return v, ok
	}
	cfg, err := config.Load("functions/presence-poller.yaml", lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Tables == "" || cfg.ServiceBus.WorkQueue != "presence-work" || cfg.Entra.ManagedIdentity != "system" {
		t.Errorf("the template does not select Table Storage, the work queue and the managed identity: %+v", cfg)
	}
}

// TestNoAddOnManifestNames: the Home Assistant Supervisor reads every
// config.{yaml,yml,json} outside dot-folders as an add-on manifest, and
// build.{yaml,yml,json} as its build file: only the root config.yaml may
// carry such a name.
func TestNoAddOnManifestNames(t *testing.T) {
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "rootfs" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		base, ext := strings.TrimSuffix(d.Name(), filepath.Ext(d.Name())), filepath.Ext(d.Name())
		if (base == "config" || base == "build") && (ext == ".yaml" || ext == ".yml" || ext == ".json") && path != filepath.Join(root, "config.yaml") {
			t.Errorf("%s: the Supervisor would read it as an add-on's manifest or build file; rename it", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
