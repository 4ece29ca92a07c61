package addon

// Tests of the add-on files at the repository root (config.yaml,
// repository.yaml, translations/en.yaml, CHANGELOG.md, Dockerfile) against
// the Supervisor's rules, and of the add-on options against config.Config.

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"

	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

// repoRoot is the repository root, relative to this package.
const repoRoot = ".."

func readRoot(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func decodeYAML(t *testing.T, name string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(readRoot(t, name), &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// reSchemaElement is the Supervisor's grammar of one option type
// (supervisor/addons/options.py RE_SCHEMA_ELEMENT).
var reSchemaElement = regexp.MustCompile(`^(?:` +
	`bool|email|url|port` +
	`|device(?:\((?:subsystem=[a-z]+)\))?` +
	`|str(?:\((?:\d+)?,(?:\d+)?\))?` +
	`|password(?:\((?:\d+)?,(?:\d+)?\))?` +
	`|int(?:\((?:\d+)?,(?:\d+)?\))?` +
	`|float(?:\((?:[\d.]+)?,(?:[\d.]+)?\))?` +
	`|match\((?:.*)\)` +
	`|list\((?:.+)\)` +
	`)\??$`)

// manifestKeys are the config.yaml keys the Supervisor knows (it silently
// drops others, so a misspelt key would do nothing).
var manifestKeys = []string{
	"name", "version", "slug", "description", "arch", "machine", "url", "startup", "boot",
	"init", "stage", "ports", "ports_description", "watchdog", "webui", "ingress", "ingress_port",
	"ingress_entry", "ingress_stream", "panel_icon", "panel_title", "panel_admin", "homeassistant",
	"host_network", "host_pid", "host_ipc", "host_uts", "host_dbus", "devices", "udev", "tmpfs",
	"map", "environment", "privileged", "apparmor", "full_access", "audio", "video", "gpio", "usb",
	"uart", "devicetree", "kernel_modules", "realtime", "hassio_api", "hassio_role",
	"homeassistant_api", "stdin", "legacy", "docker_api", "auth_api", "services", "discovery",
	"backup_exclude", "backup_pre", "backup_post", "backup", "options", "schema", "image",
	"ulimits", "timeout", "journald", "breaking_versions",
}

func TestManifest(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	for _, k := range []string{"name", "version", "slug", "description"} {
		if s, ok := m[k].(string); !ok || strings.TrimSpace(s) == "" {
			t.Errorf("%s: required string, got %#v", k, m[k])
		}
	}
	for k := range m {
		if !slices.Contains(manifestKeys, k) {
			t.Errorf("unknown manifest key %q (the Supervisor would drop it)", k)
		}
	}
	if m["slug"] != "presence_bridge" {
		t.Errorf("slug = %v, want presence_bridge", m["slug"])
	}
	if v, _ := m["version"].(string); !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(v) {
		t.Errorf("version %#v: want a quoted x.y.z string", m["version"])
	}
	arch, _ := m["arch"].([]any)
	var arches []string
	for _, a := range arch {
		arches = append(arches, fmt.Sprint(a))
	}
	sort.Strings(arches)
	if diff := cmp.Diff([]string{"aarch64", "amd64"}, arches); diff != "" {
		t.Errorf("arch (-want +got): %s (armv7, armhf and i386 are gone from the Supervisor)", diff)
	}
	// The bridge needs the Supervisor's defaults, startup application and
	// boot auto; TestManifestOmitsDefaults keeps them unwritten.
	for _, k := range []string{"startup", "boot"} {
		if v, ok := m[k]; ok {
			t.Errorf("%s = %v: leave it to the default", k, v)
		}
	}
	if m["homeassistant_api"] != true {
		t.Errorf("homeassistant_api = %v: notifications need it", m["homeassistant_api"])
	}
	services, _ := m["services"].([]any)
	reService := regexp.MustCompile(`^(mqtt|mysql):(provide|want|need)$`)
	var hasMQTT bool
	for _, s := range services {
		str, _ := s.(string)
		if !reService.MatchString(str) {
			t.Errorf("services: bad entry %#v", s)
		}
		hasMQTT = hasMQTT || str == "mqtt:want"
	}
	if !hasMQTT {
		t.Errorf("services %v: want mqtt:want (GET /services/mqtt answers 403 without it)", services)
	}
	checkImage(t, m["image"])
	for i, e := range m["map"].([]any) {
		entry, ok := e.(map[string]any)
		if !ok || !slices.Contains([]string{"ssl", "share", "media", "homeassistant_config", "addon_config", "app_config"}, fmt.Sprint(entry["type"])) {
			t.Errorf("map[%d] = %#v", i, e)
		}
	}
	if _, ok := m["options"].(map[string]any); !ok {
		t.Fatal("options: missing")
	}
	if _, ok := m["schema"].(map[string]any); !ok {
		t.Fatal("schema: missing")
	}
}

// releaseImage is the add-on image the release workflow pushes, one per
// arch: the Supervisor pulls it with {arch} replaced, tagged with version.
const releaseImage = "ghcr.io/presence-bridge/{arch}-presence-bridge"

// checkImage: image names every arch's image generically, without a tag
// (the Supervisor refuses one: the tag is always the manifest's version).
func checkImage(t *testing.T, v any) {
	t.Helper()
	image, ok := v.(string)
	if !ok {
		t.Errorf("image = %#v: want %s so that users pull prebuilt images (a fork that builds locally removes it)", v, releaseImage)
		return
	}
	if !strings.Contains(image, "{arch}") {
		t.Errorf("image %q: lacks {arch}, the Supervisor would pull one image for every arch", image)
	}
	if last := image[strings.LastIndex(image, "/")+1:]; strings.ContainsAny(last, ":@") {
		t.Errorf("image %q: no tag or digest here, the Supervisor appends version", image)
	}
	if image != strings.ToLower(image) {
		t.Errorf("image %q: registries want lower case", image)
	}
	if image != releaseImage {
		t.Errorf("image = %q, want %q (what release.yml pushes)", image, releaseImage)
	}
}

// linterDefaults are the manifest keys whose default the add-on linter
// (frenck/action-addon-linter) knows, with that default: it fails a
// manifest that restates one.
var linterDefaults = map[string]any{
	"advanced": false, "apparmor": true, "audio": false, "auth_api": false, "auto_uart": false,
	"backup": "hot", "boot": "auto", "devicetree": false, "docker_api": false, "full_access": false,
	"gpio": false, "hassio_api": false, "hassio_role": "default", "homeassistant": false,
	"homeassistant_api": false, "host_dbus": false, "host_ipc": false, "host_network": false,
	"host_pid": false, "host_uts": false, "ingress": false, "ingress_port": 8099,
	"ingress_stream": false, "init": true, "journald": false, "kernel_modules": false,
	"legacy": false, "options": map[string]any{}, "panel_admin": true, "panel_icon": "mdi:puzzle",
	"realtime": false, "schema": map[string]any{}, "stage": "stable", "startup": "application",
	"stdin": false, "timeout": 10, "tmpfs": false, "uart": false, "udev": false,
	"ulimits": map[string]any{}, "usb": false, "video": false,
}

// TestManifestOmitsDefaults: the add-on linter flags every key that
// restates its default; and the keys it reports as deprecated or obsolete
// are absent.
func TestManifestOmitsDefaults(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if def, ok := linterDefaults[k]; ok && reflect.DeepEqual(m[k], def) {
			t.Errorf("%s: %v is the default; remove it (the add-on linter fails on it)", k, m[k])
		}
	}
	for _, k := range []string{"watchdog", "codenotary", "auto_uart", "advanced", "webui"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s: deprecated or obsolete for the add-on linter", k)
		}
	}
}

// TestNoBuildFile: the Supervisor reads any build.{yaml,yml,json} in the
// repository, dot-folders included, as the add-on's deprecated build file
// (a workflow named build.yml would be one).
func TestNoBuildFile(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		switch strings.ToLower(d.Name()) {
		case "build.yaml", "build.yml", "build.json":
			rel, _ := filepath.Rel(root, path)
			t.Errorf("%s: the Supervisor would read it as the add-on's build file; rename it", filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReleaseWorkflowMatchesManifest: the release workflow builds one
// add-on image per manifest arch, on the right platform, from the tag that
// must equal the manifest's version, and the standalone image adds 32-bit
// ARM.
func TestReleaseWorkflowMatchesManifest(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	wf := decodeYAML(t, ".github/workflows/release.yml")
	on, _ := wf["on"].(map[string]any)
	push, _ := on["push"].(map[string]any)
	if diff := cmp.Diff([]any{"v*"}, push["tags"]); diff != "" {
		t.Errorf("release.yml runs on tags (-want +got):\n%s", diff)
	}
	jobs, _ := wf["jobs"].(map[string]any)
	addon, _ := jobs["addon"].(map[string]any)
	strategy, _ := addon["strategy"].(map[string]any)
	matrix, _ := strategy["matrix"].(map[string]any)
	platformOf := map[string]string{"amd64": "linux/amd64", "aarch64": "linux/arm64"}
	got := map[string]string{}
	for _, e := range matrix["include"].([]any) {
		row := e.(map[string]any)
		got[fmt.Sprint(row["arch"])] = fmt.Sprint(row["platform"])
	}
	want := map[string]string{}
	for _, a := range m["arch"].([]any) {
		want[fmt.Sprint(a)] = platformOf[fmt.Sprint(a)]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("release.yml add-on matrix (-config.yaml arch +workflow):\n%s", diff)
	}
	raw := string(readRoot(t, ".github/workflows/release.yml"))
	for _, s := range []string{
		`"$TAG" != "v$version"`,         // the tag check
		"sed -n 's/^image:",             // the image name comes from config.yaml
		"BUILD_ARCH=${{ matrix.arch }}", // io.hass.arch
		"BUILD_VERSION=${{ needs.manifest.outputs.version }}",
		"platforms: linux/amd64,linux/arm64,linux/arm/v7",
		"docker/setup-qemu-action@", "docker/setup-buildx-action@", "docker/login-action@", "docker/build-push-action@",
	} {
		if !strings.Contains(raw, s) {
			t.Errorf("release.yml lacks %q", s)
		}
	}
	if strings.Contains(raw, fmt.Sprint(m["version"])) {
		t.Errorf("release.yml names version %v: it must come from the tag and config.yaml only", m["version"])
	}
}

func TestRepositoryManifest(t *testing.T) {
	m := decodeYAML(t, "repository.yaml")
	if s, ok := m["name"].(string); !ok || s == "" {
		t.Errorf("name: required, got %#v", m["name"])
	}
	for k, v := range m {
		switch k {
		case "name", "maintainer":
			if _, ok := v.(string); !ok {
				t.Errorf("%s: want a string, got %#v", k, v)
			}
		case "url":
			if s, _ := v.(string); !strings.HasPrefix(s, "https://") {
				t.Errorf("url = %#v", v)
			}
		default:
			t.Errorf("unknown repository.yaml key %q", k)
		}
	}
}

// walkSchema calls fn for every schema leaf with its path and whether it
// sits inside a list (where options cannot give defaults).
func walkSchema(t *testing.T, path string, node any, inList bool, fn func(path, typ string, inList bool)) {
	t.Helper()
	switch n := node.(type) {
	case string:
		fn(path, n, inList)
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(n)) {
			walkSchema(t, join(path, k), n[k], inList, fn)
		}
	case []any:
		if len(n) != 1 {
			t.Errorf("%s: a schema list holds exactly one element type, got %d", path, len(n))
			return
		}
		if _, nested := n[0].([]any); nested {
			t.Errorf("%s: a list may not directly contain a list", path)
			return
		}
		walkSchema(t, path+"[]", n[0], true, fn)
	default:
		t.Errorf("%s: %#v is not a type, dict or list", path, node)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func TestSchemaGrammar(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	leaves := 0
	walkSchema(t, "", m["schema"], false, func(path, typ string, _ bool) {
		leaves++
		if !reSchemaElement.MatchString(typ) {
			t.Errorf("%s: %q is not a Supervisor option type", path, typ)
			return
		}
		base := strings.TrimSuffix(typ, "?")
		switch {
		case strings.HasPrefix(base, "match("):
			if _, err := regexp.Compile(base[len("match(") : len(base)-1]); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		case strings.HasPrefix(base, "list("):
			vals := strings.Split(base[len("list("):len(base)-1], "|")
			seen := map[string]bool{}
			for _, v := range vals {
				if v == "" || seen[v] {
					t.Errorf("%s: empty or repeated value %q", path, v)
				}
				seen[v] = true
			}
		}
	})
	if leaves < 20 {
		t.Errorf("only %d schema leaves: the walk is broken", leaves)
	}
}

// TestOptionalVersusDefaults: "?" makes an option optional only when options
// gives no default, and a required option outside lists needs a default or
// the add-on cannot start ("Missing option").
func TestOptionalVersusDefaults(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	options := m["options"].(map[string]any)
	walkSchema(t, "", m["schema"], false, func(path, typ string, inList bool) {
		if inList {
			return
		}
		_, hasDefault := lookup(options, path)
		optional := strings.HasSuffix(typ, "?")
		switch {
		case optional && hasDefault:
			t.Errorf("%s: %q is optional but options gives a default: drop one", path, typ)
		case !optional && !hasDefault:
			t.Errorf("%s: %q is required but options gives no default: the add-on could not start", path, typ)
		}
	})
	// Dicts and lists must be present in options too.
	var walkContainers func(path string, node any)
	walkContainers = func(path string, node any) {
		switch n := node.(type) {
		case map[string]any:
			if path != "" {
				if _, ok := lookup(options, path); !ok {
					t.Errorf("%s: dict missing from options", path)
				}
			}
			for k, v := range n {
				walkContainers(join(path, k), v)
			}
		case []any:
			if _, ok := lookup(options, path); !ok {
				t.Errorf("%s: list missing from options (give [])", path)
			}
		}
	}
	walkContainers("", m["schema"])
	// And every option has a schema entry.
	var walkOptions func(path string, node any)
	walkOptions = func(path string, node any) {
		if _, ok := lookup(m["schema"].(map[string]any), path); path != "" && !ok {
			t.Errorf("%s: in options but not in the schema", path)
		}
		if n, ok := node.(map[string]any); ok {
			for k, v := range n {
				walkOptions(join(path, k), v)
			}
		}
	}
	walkOptions("", options)
}

func lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		d, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = d[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// TestOptionsMatchSchema validates the default options the way the
// Supervisor does (types, list values, patterns, ranges).
func TestOptionsMatchSchema(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	checkValue(t, "", m["schema"], m["options"])
}

func checkValue(t *testing.T, path string, typ, val any) {
	t.Helper()
	switch ty := typ.(type) {
	case map[string]any:
		d, ok := val.(map[string]any)
		if !ok {
			t.Errorf("%s: want a dict, got %#v", path, val)
			return
		}
		for k, v := range d {
			if sub, ok := ty[k]; ok {
				checkValue(t, join(path, k), sub, v)
			}
		}
	case []any:
		l, ok := val.([]any)
		if !ok {
			t.Errorf("%s: want a list, got %#v", path, val)
			return
		}
		for i, v := range l {
			checkValue(t, fmt.Sprintf("%s[%d]", path, i), ty[0], v)
		}
	case string:
		if err := checkLeaf(strings.TrimSuffix(ty, "?"), val); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}

func checkLeaf(typ string, val any) error {
	s := fmt.Sprint(val)
	switch {
	case typ == "bool":
		if _, ok := val.(bool); !ok {
			return fmt.Errorf("%#v is not a bool", val)
		}
	case strings.HasPrefix(typ, "int"):
		n, ok := val.(int)
		if !ok {
			return fmt.Errorf("%#v is not an int", val)
		}
		if r := regexp.MustCompile(`^int\((\d*),(\d*)\)$`).FindStringSubmatch(typ); r != nil {
			if lo, err := strconv.Atoi(r[1]); err == nil && n < lo {
				return fmt.Errorf("%d < %d", n, lo)
			}
			if hi, err := strconv.Atoi(r[2]); err == nil && n > hi {
				return fmt.Errorf("%d > %d", n, hi)
			}
		}
	case strings.HasPrefix(typ, "list("):
		if !slices.Contains(strings.Split(typ[5:len(typ)-1], "|"), s) {
			return fmt.Errorf("%q is not in %s", s, typ)
		}
	case strings.HasPrefix(typ, "match("):
		// The Supervisor uses re.match: anchored at the start.
		if !regexp.MustCompile(`^(?:` + typ[6:len(typ)-1] + `)`).MatchString(s) {
			return fmt.Errorf("%q does not match %s", s, typ)
		}
	case typ == "str" || typ == "password":
		if _, ok := val.(string); !ok {
			return fmt.Errorf("%#v is not a string", val)
		}
	}
	return nil
}

// TestOptionsDriftConfig: every add-on option is a config.Config field and
// every field an option, with matching types (password for Secret); the
// json and yaml tags agree.
func TestOptionsDriftConfig(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	compareType(t, "", m["schema"], reflect.TypeFor[config.Config]())
}

var (
	secretType   = reflect.TypeFor[config.Secret]()
	durationType = reflect.TypeFor[config.Duration]()
)

func compareType(t *testing.T, path string, schema any, typ reflect.Type) {
	t.Helper()
	switch s := schema.(type) {
	case map[string]any:
		if typ.Kind() != reflect.Struct {
			t.Errorf("%s: schema dict, config %s", path, typ)
			return
		}
		fields := map[string]reflect.Type{}
		for f := range typ.Fields() {
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			yamlName, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || name != yamlName {
				t.Errorf("%s: field %s has json tag %q and yaml tag %q", path, f.Name, name, yamlName)
				continue
			}
			fields[name] = f.Type
		}
		for _, k := range slices.Sorted(maps.Keys(s)) {
			ft, ok := fields[k]
			if !ok {
				t.Errorf("%s: add-on option with no config field", join(path, k))
				continue
			}
			compareType(t, join(path, k), s[k], ft)
		}
		for name := range fields {
			if _, ok := s[name]; !ok {
				t.Errorf("%s: config field with no add-on option", join(path, name))
			}
		}
	case []any:
		if typ.Kind() != reflect.Slice {
			t.Errorf("%s: schema list, config %s", path, typ)
			return
		}
		compareType(t, path+"[]", s[0], typ.Elem())
	case string:
		base := strings.TrimSuffix(s, "?")
		kind := base
		if i := strings.IndexByte(base, '('); i >= 0 {
			kind = base[:i]
		}
		var ok bool
		switch {
		case typ == secretType:
			ok = kind == "password"
		case typ == durationType:
			ok = kind == "match"
		case typ.Kind() == reflect.String:
			ok = slices.Contains([]string{"str", "match", "list", "url", "email"}, kind)
		case typ.Kind() == reflect.Int:
			ok = kind == "int" || kind == "port"
		case typ.Kind() == reflect.Bool:
			ok = kind == "bool"
		case typ.Kind() == reflect.Float64:
			ok = kind == "float"
		}
		if !ok {
			t.Errorf("%s: option type %q does not fit config type %s (secrets are password)", path, s, typ)
		}
	}
}

// TestOptionsDefaultsAgree: the defaults the add-on shows are config's own.
func TestOptionsDefaultsAgree(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	raw, err := json.Marshal(m["options"])
	if err != nil {
		t.Fatal(err)
	}
	var got config.Config
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("options do not decode into config.Config: %v", err)
	}
	if diff := cmp.Diff(config.Default(), got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("options defaults differ from config.Default (-config +options):\n%s", diff)
	}
}

// TestManifestOptionsLoad: the defaults plus one user, as the Supervisor
// would write them, are a valid configuration.
func TestManifestOptionsLoad(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	opts := m["options"].(map[string]any)
	opts["users"] = []any{map[string]any{"id": alexID, "name": "Alex"}}
	opts["service_bus"].(map[string]any)["connection_string"] = connStr
	raw, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.FromJSON(raw)
	if err != nil {
		t.Fatalf("FromJSON: %v", err)
	}
	want := config.Default()
	want.Users = []config.User{{ID: alexID, Name: "Alex"}}
	want.ServiceBus.ConnectionString = connStr
	if diff := cmp.Diff(&want, cfg, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

// TestManifestGraphOnlyLoads: a household without Azure fills in only
// graph.client_id (service_bus keeps its defaults, no connection string):
// a valid configuration with the graph source alone.
func TestManifestGraphOnlyLoads(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	opts := m["options"].(map[string]any)
	opts["users"] = []any{map[string]any{"id": alexID, "name": "Alex"}}
	opts["graph"].(map[string]any)["client_id"] = "7d8e9f00-1111-2222-3333-444455556666"
	raw, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.FromJSON(raw)
	if err != nil {
		t.Fatalf("FromJSON: %v", err)
	}
	if !cfg.Graph.Enabled() || cfg.ServiceBusEnabled() {
		t.Errorf("graph %v, service bus %v: want the graph source alone", cfg.Graph.Enabled(), cfg.ServiceBusEnabled())
	}
}

// TestEnumerations: list(...) options offer exactly what config accepts.
func TestEnumerations(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	schema := m["schema"].(map[string]any)
	listOf := func(path string) []string {
		v, ok := lookup(schema, path)
		if !ok {
			t.Fatalf("%s: not in the schema", path)
		}
		if l, isList := v.([]any); isList {
			v = l[0]
		}
		s := strings.TrimSuffix(fmt.Sprint(v), "?")
		if !strings.HasPrefix(s, "list(") {
			t.Fatalf("%s: %q is not list(...)", path, s)
		}
		vals := strings.Split(s[5:len(s)-1], "|")
		sort.Strings(vals)
		return vals
	}
	var statuses []string
	for _, a := range presence.Availabilities() {
		statuses = append(statuses, a.String())
	}
	for _, a := range presence.Activities() {
		if !slices.Contains(statuses, a.String()) {
			statuses = append(statuses, a.String())
		}
	}
	sort.Strings(statuses)
	colors, _ := lookup(schema, "hue.colors")
	colorSchema := colors.([]any)[0].(map[string]any)
	statusType := strings.TrimSuffix(colorSchema["status"].(string), "?")
	gotStatuses := strings.Split(statusType[5:len(statusType)-1], "|")
	sort.Strings(gotStatuses)
	if diff := cmp.Diff(statuses, gotStatuses); diff != "" {
		t.Errorf("hue.colors[].status (-presence +schema):\n%s", diff)
	}
	modes := []string{config.HueModeAlways, config.HueModeAuto, config.HueModeOff}
	if diff := cmp.Diff(modes, listOf("hue.mode")); diff != "" {
		t.Errorf("hue.mode (-config +schema):\n%s", diff)
	}

	// Every offered log level and effect is accepted by config, and config
	// refuses what the list leaves out.
	base := config.Default()
	base.Users = []config.User{{ID: alexID, Name: "Alex"}}
	base.ServiceBus.ConnectionString = connStr
	for _, lvl := range listOf("log_level") {
		c := base
		c.LogLevel = lvl
		if err := c.Validate(); err != nil {
			t.Errorf("log_level %q: %v", lvl, err)
		}
	}
	c := base
	c.LogLevel = "trace"
	if c.Validate() == nil {
		t.Error("config accepts log_level trace: the schema is too strict")
	}
	effectType := strings.TrimSuffix(colorSchema["effect"].(string), "?")
	for _, eff := range strings.Split(effectType[5:len(effectType)-1], "|") {
		c := base
		c.Hue.Colors = []config.Color{{Status: "Busy", Effect: eff}}
		if err := c.Validate(); err != nil {
			t.Errorf("effect %q: %v", eff, err)
		}
	}
}

// TestYAML11Booleans: the Supervisor reads config.yaml with a YAML 1.1
// parser, where plain on/off/yes/no/y/n are booleans: an unquoted `off:` key
// would become False. yaml.v3 (YAML 1.2) reads them as strings, so look at
// the raw nodes.
func TestYAML11Booleans(t *testing.T) {
	yaml11 := map[string]bool{"y": true, "n": true, "yes": true, "no": true, "on": true, "off": true}
	for _, name := range []string{"config.yaml", "repository.yaml", "translations/en.yaml"} {
		var doc yaml.Node
		if err := yaml.Unmarshal(readRoot(t, name), &doc); err != nil {
			t.Fatal(err)
		}
		var walk func(n *yaml.Node)
		walk = func(n *yaml.Node) {
			if n.Kind == yaml.ScalarNode && n.Style == 0 && n.Tag == "!!str" && yaml11[strings.ToLower(n.Value)] {
				t.Errorf("%s:%d: plain %q is a boolean in YAML 1.1: quote it", name, n.Line, n.Value)
			}
			for _, c := range n.Content {
				walk(c)
			}
		}
		walk(&doc)
	}
}

// TestTranslations: every option has a name and a description, nested
// options under fields, and no translation names a missing option.
func TestTranslations(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	tr := decodeYAML(t, "translations/en.yaml")
	cfg, ok := tr["configuration"].(map[string]any)
	if !ok {
		t.Fatal("translations/en.yaml: no configuration")
	}
	compareTranslations(t, "", m["schema"].(map[string]any), cfg)
}

func compareTranslations(t *testing.T, path string, schema, tr map[string]any) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(schema)) {
		p := join(path, k)
		entry, ok := tr[k].(map[string]any)
		if !ok {
			t.Errorf("%s: no translation", p)
			continue
		}
		for _, f := range []string{"name", "description"} {
			if s, _ := entry[f].(string); strings.TrimSpace(s) == "" {
				t.Errorf("%s: translation has no %s", p, f)
			}
		}
		// The description must explain the option to someone who has not
		// read the README: more than a restated name, no pointer away.
		name, _ := entry["name"].(string)
		desc, _ := entry["description"].(string)
		switch {
		case len(desc) < 25 || strings.EqualFold(strings.Trim(desc, ". "), name):
			t.Errorf("%s: description %q says too little", p, desc)
		case strings.Contains(desc, "README"):
			t.Errorf("%s: description %q sends the reader to the README", p, desc)
		}
		sub := schema[k]
		if l, isList := sub.([]any); isList {
			sub = l[0]
		}
		fields, _ := entry["fields"].(map[string]any)
		if d, isDict := sub.(map[string]any); isDict {
			if fields == nil {
				t.Errorf("%s: translation has no fields", p)
				continue
			}
			compareTranslations(t, p, d, fields)
		} else if fields != nil {
			t.Errorf("%s: translation has fields but the option has none", p)
		}
	}
	for k := range tr {
		if _, ok := schema[k]; !ok {
			t.Errorf("%s: translation of a missing option", join(path, k))
		}
	}
}

// TestOnlyOneManifest: the Supervisor takes every config.{yaml,yml,json}
// outside dot-folders and rootfs for an add-on manifest.
func TestOnlyOneManifest(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "rootfs") {
			return filepath.SkipDir
		}
		switch strings.ToLower(d.Name()) {
		case "config.yaml", "config.yml", "config.json":
			rel, _ := filepath.Rel(root, path)
			found = append(found, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"config.yaml"}, found); diff != "" {
		t.Errorf("add-on manifests (-want +got):\n%s\nrename test data and examples (for example presence-bridge.yaml)", diff)
	}
}

// TestChangelogHasVersion: the version the add-on store shows has an entry.
func TestChangelogHasVersion(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	changelog := string(readRoot(t, "CHANGELOG.md"))
	if !strings.Contains(changelog, "## [Unreleased]") {
		t.Error("CHANGELOG.md: no [Unreleased] section (keep-a-changelog)")
	}
	if want := fmt.Sprintf("## [%s]", m["version"]); !strings.Contains(changelog, want) {
		t.Errorf("CHANGELOG.md: no %q entry for the manifest's version", want)
	}
}

// TestDockerfile checks what the Supervisor and the standalone images rely
// on (no Docker engine runs in the tests, so the build itself is not tried).
func TestDockerfile(t *testing.T) {
	df := string(readRoot(t, "Dockerfile"))
	for _, want := range []string{
		"FROM --platform=$BUILDPLATFORM golang:",
		"CGO_ENABLED=0",
		"-trimpath",
		`-ldflags "-s -w`,
		"TARGETARCH",
		"BUILD_ARCH",
		`io.hass.type="app"`,
		`io.hass.version="${BUILD_VERSION}"`,
		`io.hass.arch="${BUILD_ARCH}"`,
		`HEALTHCHECK`,
		`CMD ["/presence-bridge", "healthcheck"]`,
		"./cmd/presence-bridge",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "0") || strings.HasPrefix(users[len(users)-1][1], "root") {
		t.Errorf("Dockerfile: the runtime must end with a non-root USER, got %v", users)
	}
	ignore := string(readRoot(t, ".dockerignore"))
	for _, want := range []string{".git", ".env"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(ignore) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// TestSchemaAcceptsAClearedMQTTURL: Home Assistant's options form sends ""
// (or blanks) for a cleared text field; the schema must take it (the
// bridge then asks the Supervisor for its broker) and still refuse a URL of
// another scheme.
func TestSchemaAcceptsAClearedMQTTURL(t *testing.T) {
	m := decodeYAML(t, "config.yaml")
	typ := strings.TrimSuffix(m["schema"].(map[string]any)["mqtt"].(map[string]any)["url"].(string), "?")
	for _, ok := range []string{"", " ", "tcp://core-mosquitto:1883", "ssl://broker.lan:8883", "wss://h:443/mqtt"} {
		if err := checkLeaf(typ, ok); err != nil {
			t.Errorf("mqtt.url %q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://broker:1883", "broker:1883", "tcp://a b"} {
		if err := checkLeaf(typ, bad); err == nil {
			t.Errorf("mqtt.url %q accepted", bad)
		}
	}
}
