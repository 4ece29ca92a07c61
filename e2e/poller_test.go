package e2e

import (
	"context"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

var (
	pollerOnce sync.Once
	pollerBin  string
	pollerErr  error
)

// requirePoller builds presence-poller once, next to the bridge binary
// (TestMain removes that folder).
func requirePoller(tb testing.TB) string {
	tb.Helper()
	requireBinary(tb)
	pollerOnce.Do(func() {
		pollerBin = filepath.Join(filepath.Dir(binary), "presence-poller")
		out, err := exec.Command("go", "build", "-trimpath", "-o", pollerBin, "github.com/presence-bridge/presence-bridge/cmd/presence-poller").CombinedOutput()
		if err != nil {
			pollerErr = fmt.Errorf("build presence-poller: %v\n%s", err, out)
		}
	})
	if pollerErr != nil {
		tb.Fatal(pollerErr)
	}
	return pollerBin
}

// pollerProc is a running presence-poller serve.
type pollerProc struct {
	cmd  *exec.Cmd
	logs *safebuf.Buffer
	done chan struct{}
	code int
	url  string
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startPoller writes the configuration and runs `presence-poller serve`,
// trusting the fakes' certificate, and waits for /healthz.
func startPoller(tb testing.TB, ctx context.Context, cfg, certPEM string, env ...string) *pollerProc {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "presence-poller.yaml")
	certFile := filepath.Join(dir, "fakes.pem")
	for f, content := range map[string]string{path: cfg, certFile: certPEM} {
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	p := &pollerProc{logs: &safebuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(requirePoller(tb), "serve", "-config", path)
	p.cmd.Env = append(os.Environ(), append(env, "SSL_CERT_FILE="+certFile)...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start presence-poller: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("presence-poller output:\n%s", p.logs.String())
		}
	})
	re := regexp.MustCompile(`msg=listening addr=(\S+)`)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindStringSubmatch(p.logs.String()); m != nil {
			p.url = "http://" + m[1]
			return p
		}
		select {
		case <-tick.C:
		case <-p.done:
			tb.Fatalf("presence-poller exited %d:\n%s", p.code, p.logs.String())
		case <-ctx.Done():
			tb.Fatalf("presence-poller did not listen:\n%s", p.logs.String())
		}
	}
}

func (p *pollerProc) stop(tb testing.TB) (int, time.Duration) {
	tb.Helper()
	began := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.code, time.Since(began)
	case <-time.After(wait):
		tb.Fatalf("presence-poller did not exit after SIGTERM:\n%s", p.logs.String())
		return 0, 0
	}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// signIn runs a browser's sign-in against the poller and the fake Entra and
// returns the users entry the page shows.
func signIn(tb testing.TB, ctx context.Context, pollerURL string, entra *entratest.Server, id presence.UserID) bridgeUser {
	tb.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, pollerURL+"/auth/start", nil)
	resp, err := noRedirect.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if resp.StatusCode != http.StatusFound || len(cookies) == 0 {
		tb.Fatalf("/auth/start: %d", resp.StatusCode)
	}
	redirect, form, err := entra.SignInURL(resp.Header.Get("Location"), id)
	if err != nil {
		tb.Fatal(err)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, redirect, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	resp, err = noRedirect.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("/auth/end: %d\n%s", resp.StatusCode, page)
	}
	m := regexp.MustCompile(`(?s)<pre id="users-entry">(.*?)</pre>`).FindSubmatch(page)
	if m == nil {
		tb.Fatalf("no users entry on the page:\n%s", page)
	}
	var users []bridgeUser
	if err := yaml.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &users); err != nil || len(users) != 1 {
		tb.Fatalf("users entry %q: %v", m[1], err)
	}
	return users[0]
}

type bridgeUser struct {
	ID               string `yaml:"id"`
	Name             string `yaml:"name"`
	ConnectionString string `yaml:"connection_string"`
}

// TestPollerToHomeAssistant runs the built presence-poller and
// presence-bridge binaries end to end: a person signs in through the fake
// Entra; the poller creates their topic with a Listen-only key and
// publishes their presence; the bridge, configured with the users entry
// the sign-in page showed, reads the topic with that key and drives Home
// Assistant's state on mosquitto; a presence change in the fake Graph
// reaches MQTT; SIGTERM stops the poller with exit 0 within 5 s.
func TestPollerToHomeAssistant(t *testing.T) {
	requirePoller(t)
	const manageKey = "bWFuYWdlLWtleS1lMmUtdGVzdHM="
	sb := sbtest.Start(t, sbtest.Options{Keys: map[string]string{"RootManageSharedAccessKey": manageKey}})
	mgmt := sbtest.NewManagement(t, sbtest.ManagementOptions{Broker: sb, ManageKeys: map[string]string{"RootManageSharedAccessKey": manageKey}})
	alex := entratest.Person{ObjectID: alexID, TenantID: "72f988bf-0000-0000-0000-000000000000", Name: "Alex Doe", UPN: "alex@contoso.com"}
	const clientID, clientSecret = "00000000-1111-2222-3333-444444444444", "e2e-client-secret-0123456789"
	entra := entratest.New(entratest.Options{ClientID: clientID, ClientSecret: clientSecret, People: []entratest.Person{alex}})
	defer entra.Close()
	graph := graphtest.New(graphtest.Options{Authorize: entra.AccessTokenOwner})
	defer graph.Close()
	graph.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "InACall", StatusMessage: "Back at 3"})
	mq := mosquitto.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*wait)
	defer cancel()

	listen := freeAddr(t)
	p := startPoller(t, ctx, fmt.Sprintf(`
listen: %s
public_url: http://%s
data_dir: %s
secret_key: ${POLLER_SECRET_KEY}
api_key: ${POLLER_API_KEY}
entra:
  authority: %s
  client_id: %s
  client_secret: ${POLLER_CLIENT_SECRET}
graph:
  endpoint: %s
  poll_interval: 1s
  reconcile_interval: 1s
  notifications: false
  heartbeat: 1m
service_bus:
  namespaces:
    - connection_string: ${SB}
      admin_endpoint: %s
  subscriptions: [home]
`, listen, listen, filepath.Join(t.TempDir(), "data"), entra.Authority("organizations"), clientID, graph.URL(), mgmt.URL()),
		string(entra.CertificatePEM()),
		"POLLER_SECRET_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
		"POLLER_API_KEY=e2e-api-key-0123456789",
		"POLLER_CLIENT_SECRET="+clientSecret,
		"SB="+sb.ConnectionStringWithKey("RootManageSharedAccessKey", manageKey))

	user := signIn(t, ctx, p.url, entra, alexID)
	if user.ID != alexID || user.Name != "Alex Doe" || !strings.Contains(user.ConnectionString, "EntityPath="+alexID) {
		t.Fatalf("users entry %+v", user.ID)
	}

	ha := watch(t, mq.URL(), "presence-bridge/#")
	startBridge(t, fmt.Sprintf(`
health_addr: ""
users:
  - id: %s
    name: %q
    connection_string: ${ALEX_SB}
service_bus:
  subscription: home
mqtt:
  url: %s
`, user.ID, user.Name, mq.URL()), "ALEX_SB="+user.ConnectionString)

	ha.waitFor(t, ctx, "alex in a call on MQTT", func(ms []received) bool {
		return has(ms, "presence-bridge/"+alexID+"/state", `"activity":"InACall"`) &&
			has(ms, "presence-bridge/"+alexID+"/state", `"status_message":"Back at 3"`)
	})

	graph.SetPresence(alexID, graphtest.Presence{Availability: "Away", Activity: "Away"})
	ha.waitFor(t, ctx, "alex away on MQTT", func(ms []received) bool {
		return has(ms, "presence-bridge/"+alexID+"/state", `"availability":"Away"`)
	})

	code, took := p.stop(t)
	if code != 0 || took > 5*time.Second {
		t.Errorf("SIGTERM: exit %d after %v, want 0 within 5 s", code, took)
	}
	listenKey, _, _ := strings.Cut(user.ConnectionString[strings.Index(user.ConnectionString, "SharedAccessKey=")+len("SharedAccessKey="):], ";")
	for _, s := range append(entra.Secrets(), manageKey, "e2e-api-key-0123456789", listenKey) {
		if strings.Contains(p.logs.String(), s) {
			t.Errorf("the poller logged a secret (%.12s…)", s)
		}
	}
}
