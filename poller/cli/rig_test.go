package cli

import (
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/azurite"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/poller/config"
	"github.com/presence-bridge/presence-bridge/poller/signin"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const (
	clientID     = "00000000-1111-2222-3333-444444444444"
	clientSecret = "client-secret~never-shown-0123"
	apiKey       = "api-key-never-shown-0123456789"
	tenantA      = "72f988bf-0000-0000-0000-00000000000a"
	manageKey    = "bWFuYWdlLWtleS1wb2xsZXItdGVzdHM="
)

var secretKey = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func person(i int, name string) entratest.Person {
	id := presence.UserID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
	return entratest.Person{ObjectID: id, TenantID: tenantA, Name: name, UPN: fmt.Sprintf("p%d@contoso.com", i)}
}

// rig is a poller wired to the fakes: Entra, Graph, the management API,
// and either the Service Bus stand-in or an address where nothing listens.
type rig struct {
	entra *entratest.Server
	graph *graphtest.Server
	mgmt  *sbtest.Management
	sb    *sbtest.Broker
	cfg   *config.Config
	d     *Daemon
	srv   *httptest.Server
	logs  *safebuf.Buffer
	yaml  string            // the configuration, with ${NAME}s
	env   map[string]string // what they expand to
}

type rigOptions struct {
	people   []entratest.Person
	broker   bool          // start the stand-in (integration)
	lifetime time.Duration // access token lifetime (0: 1 h)
	// transport wraps the transport the poller reaches the fakes with.
	transport func(http.RoundTripper) http.RoundTripper
	// notifications turns graph.notifications on: public_url is then the
	// rig's own server, which the fake Graph calls.
	notifications bool
	// appOnly are entra.app_only_tenants; workQueue a session queue the
	// stand-in serves (service_bus.work_queue); tables stores in Azurite
	// (storage.tables) instead of data_dir.
	appOnly   []string
	workQueue string
	tables    bool
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	r := &rig{logs: &safebuf.Buffer{}}
	r.entra = entratest.New(entratest.Options{ClientID: clientID, ClientSecret: clientSecret, People: o.people, TokenLifetime: o.lifetime})
	t.Cleanup(r.entra.Close)
	r.graph = graphtest.New(graphtest.Options{Authorize: r.entra.AccessTokenOwner, ValidationToken: r.entra.ChangeNotificationToken})
	t.Cleanup(r.graph.Close)
	sbConn := "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=" + manageKey + ";UseDevelopmentEmulator=true"
	mo := sbtest.ManagementOptions{ManageKeys: map[string]string{"RootManageSharedAccessKey": manageKey}}
	if o.broker {
		so := sbtest.Options{Keys: map[string]string{"RootManageSharedAccessKey": manageKey}}
		if o.workQueue != "" {
			so.SessionQueues = []string{o.workQueue}
		}
		r.sb = sbtest.Start(t, so)
		sbConn = r.sb.ConnectionStringWithKey("RootManageSharedAccessKey", manageKey)
		mo.Broker = r.sb
	}
	r.mgmt = sbtest.NewManagement(t, mo)
	dataDir := t.TempDir()
	publicURL := "http://127.0.0.1:8080"
	var ln net.Listener
	if o.notifications {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		publicURL = "http://" + ln.Addr().String()
	}
	yaml := fmt.Sprintf(`
log_level: debug
listen: 127.0.0.1:0
public_url: %s
data_dir: %s
secret_key: ${SECRET_KEY}
api_key: ${API_KEY}
entra:
  authority: %s
  client_id: %s
  client_secret: ${CLIENT_SECRET}
graph:
  endpoint: %s
  notifications: %v
  poll_interval: 1s
  reconcile_interval: 1s
  heartbeat: 10s
service_bus:
  namespaces:
    - connection_string: ${SB}
      admin_endpoint: %s
  subscriptions: [home]
`, publicURL, filepath.Join(dataDir, "data"), r.entra.Authority("organizations"), clientID, r.graph.URL(), o.notifications, r.mgmt.URL())
	env := map[string]string{"SECRET_KEY": secretKey, "API_KEY": apiKey, "CLIENT_SECRET": clientSecret, "SB": sbConn}
	if len(o.appOnly) > 0 {
		yaml = strings.Replace(yaml, "  client_secret: ${CLIENT_SECRET}\n", "  client_secret: ${CLIENT_SECRET}\n  app_only_tenants: ["+strings.Join(o.appOnly, ", ")+"]\n", 1)
	}
	if o.workQueue != "" {
		yaml += "  work_queue: " + o.workQueue + "\n"
	}
	if o.tables {
		az := azurite.Start(t)
		yaml += "storage:\n  tables: ${TABLES}\n"
		yaml = strings.Replace(yaml, "data_dir: "+filepath.Join(dataDir, "data"), `data_dir: ""`, 1)
		env["TABLES"] = az.ConnectionString()
	}
	r.yaml, r.env = yaml, env
	cfg, err := config.Parse([]byte(yaml), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = cfg
	logger := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hc := r.entra.Client()
	if o.transport != nil {
		hc = &http.Client{Transport: o.transport(hc.Transport)}
	}
	r.d, err = NewDaemon(DaemonOptions{Config: cfg, Logger: logger, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.d.Store.Close() })
	if ln != nil {
		r.srv = httptest.NewUnstartedServer(r.d.Handler)
		r.srv.Listener.Close()
		r.srv.Listener = ln
		r.srv.Start()
	} else {
		r.srv = httptest.NewServer(r.d.Handler)
	}
	t.Cleanup(r.srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("poller logs:\n%s", r.logs.String())
		}
	})
	return r
}

// client does not follow redirects and keeps no cookies: tests carry the
// sign-in cookie by hand (a jar would drop a Secure cookie over http).
func (r *rig) client() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// start begins a sign-in: the authorize URL and the sealed cookie.
func (r *rig) start(t testing.TB) (string, *http.Cookie) {
	t.Helper()
	resp, err := r.client().Get(r.srv.URL + "/auth/start?login_hint=p1@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("/auth/start answered %d", resp.StatusCode)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == signin.CookieName {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no sign-in cookie")
	}
	return resp.Header.Get("Location"), cookie
}

// end posts the form to /auth/end with the cookie (nil: none).
func (r *rig) end(t testing.TB, form url.Values, cookie *http.Cookie) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, r.srv.URL+"/auth/end", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cookie != nil {
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	resp, err := r.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// signIn runs a whole sign-in of the person and returns the page.
func (r *rig) signIn(t testing.TB, id presence.UserID) (int, string) {
	t.Helper()
	loc, cookie := r.start(t)
	_, form, err := r.entra.SignInURL(loc, id)
	if err != nil {
		t.Fatal(err)
	}
	return r.end(t, form, cookie)
}

// api calls the API with the key.
func (r *rig) api(t testing.TB, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, r.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// noSecrets fails when any secret the fakes issued, or the configured
// ones, appears in text.
func (r *rig) noSecrets(t testing.TB, what, text string) {
	t.Helper()
	for _, s := range append(r.entra.Secrets(), clientSecret, apiKey, manageKey, secretKey) {
		if strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%.12s…)", what, s)
		}
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// mgmtDown makes the management API unreachable.
func (r *rig) mgmtDown() { r.mgmt.Close() }
