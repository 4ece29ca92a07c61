package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/graphsource"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const (
	graphClientID = "7d8e9f00-1111-2222-3333-444455556666"
	graphTenant   = "72f988bf-0000-0000-0000-000000000000"
	samID         = "0a1b2c3d-1111-2222-3333-444455556666"
)

var (
	alexPerson = entratest.Person{ObjectID: alexID, TenantID: graphTenant, Name: "Alex", UPN: "alex@contoso.com"}
	samPerson  = entratest.Person{ObjectID: samID, TenantID: graphTenant, Name: "Sam", UPN: "sam@contoso.com"}
)

// graphFakes are a fake Entra (one-second device-code interval) and a
// fake Graph that checks its tokens.
func graphFakes(t *testing.T) (*entratest.Server, *graphtest.Server) {
	t.Helper()
	e := entratest.New(entratest.Options{ClientID: graphClientID, People: []entratest.Person{alexPerson, samPerson}, DeviceCodeInterval: 1})
	t.Cleanup(e.Close)
	g := graphtest.New(graphtest.Options{Authorize: e.AccessTokenOwner, Scopes: e.AccessTokenScopes})
	t.Cleanup(g.Close)
	return e, g
}

func graphYAML(e *entratest.Server, g *graphtest.Server, dataDir string) string {
	return fmt.Sprintf(`data_dir: %s
graph:
  client_id: %s
  authority: %s
  endpoint: %s
  poll_interval: 2s
`, dataDir, graphClientID, e.Authority("organizations"), g.URL())
}

// waitFor polls cond (every 20 ms, at most 30 s).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

var codeRe = regexp.MustCompile(`enter the code ([A-Z0-9]+)`)

// TestLoginAndAccounts: `presence-bridge login` prints the URL and code,
// waits, stores the account (mode 0600) and says whom it covers;
// `accounts` lists it; `accounts remove` forgets it; a configuration
// without graph is a usage error.
func TestLoginAndAccounts(t *testing.T) {
	e, g := graphFakes(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "presence-bridge.yaml")
	yaml := "users:\n  - {id: " + alexID + ", name: Alex}\n  - {id: " + samID + ", name: Sam}\nmqtt: {url: tcp://127.0.0.1:1883}\n" + graphYAML(e, g, dir) + "  scopes: [Presence.Read]\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut safebuf.Buffer
	env := Env{Stdout: &out, Stderr: &errOut, HTTPClient: e.Client()}
	exit := make(chan int, 1)
	go func() { exit <- Run(t.Context(), []string{"login", "-config", cfgPath}, env) }()
	var code string
	waitFor(t, "the code printed", func() bool {
		m := codeRe.FindStringSubmatch(out.String())
		if m != nil {
			code = m[1]
		}
		return m != nil
	})
	if !strings.Contains(out.String(), e.URL()+"/devicelogin") {
		t.Errorf("no URL printed:\n%s", out.String())
	}
	if err := e.EnterCode(code, samID); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-exit:
		if c != ExitOK {
			t.Fatalf("login exit %d:\n%s%s", c, out.String(), errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("login never returned")
	}
	for _, want := range []string{"Signed in as sam@contoso.com (Presence.Read)", "It reads its own presence: Sam.", "Not covered by any sign-in yet: Alex"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("login output lacks %q:\n%s", want, out.String())
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, graphsource.StoreDir, "*.json"))
	if len(files) != 1 {
		t.Fatalf("account files %v", files)
	}
	if info, _ := os.Stat(files[0]); info.Mode().Perm() != 0o600 {
		t.Errorf("account file mode %v", info.Mode())
	}

	c, stdout, stderr := cli(t, nil, "accounts", "-config", cfgPath)
	if c != ExitOK || !regexp.MustCompile(`sam@contoso.com\s+Presence.Read\s+Sam\s+active \(access token until`).MatchString(stdout) {
		t.Errorf("accounts: %d\n%s%s", c, stdout, stderr)
	}
	for _, secret := range e.Secrets() {
		if strings.Contains(stdout+out.String()+errOut.String(), secret) && secret != code {
			t.Errorf("a secret in the output: %.10s...", secret)
		}
	}
	if c, _, stderr := cli(t, nil, "accounts", "remove", "-config", cfgPath, "nobody@contoso.com"); c != ExitFailure || !strings.Contains(stderr, "no signed-in account") {
		t.Errorf("remove unknown: %d %s", c, stderr)
	}
	if c, stdout, _ := cli(t, nil, "accounts", "-config", cfgPath, "remove", "SAM@contoso.com"); c != ExitOK || !strings.Contains(stdout, "Removed sam@contoso.com") {
		t.Errorf("remove: %d %s", c, stdout)
	}
	if _, stdout, _ := cli(t, nil, "accounts", "-config", cfgPath); !strings.Contains(stdout, "No signed-in accounts") {
		t.Errorf("after remove: %s", stdout)
	}
	if c, _, stderr := cli(t, secrets, "login", "-config", "testdata/presence-bridge.yaml"); c != ExitUsage || !strings.Contains(stderr, "graph.client_id") {
		t.Errorf("login without graph: %d %s", c, stderr)
	}
}

// supervisorCalls records the add-on's notification calls as
// "create <id> <message>" / "dismiss <id>".
type supervisorCalls struct {
	fakeSupervisor
}

func (s *supervisorCalls) find(prefix, contains string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.calls {
		if strings.HasPrefix(c, prefix) && strings.Contains(c, contains) {
			return true
		}
	}
	return false
}

// TestSignInFromHomeAssistant is the household's path, against a real
// mosquitto, a fake Supervisor and the fake Entra and Graph: a graph-only
// add-on starts with nobody signed in (the users unavailable, a
// notification asking for a sign-in); pressing Sign in in Home Assistant
// puts the URL and code on the sensor and in the notification; once the
// code is entered the notification is dismissed, the sensor empties and
// presence appears.
func TestSignInFromHomeAssistant(t *testing.T) {
	e, g := graphFakes(t)
	broker := mosquitto.Start(t)
	sup := &supervisorCalls{fakeSupervisor{seen: make(chan string, 100)}}
	srv := httptest.NewServer(sup)
	defer srv.Close()
	cfg, err := config.Parse([]byte(fmt.Sprintf("health_addr: \"\"\nusers: [{id: %s, name: Alex}]\nmqtt: {url: %q}\n%s", alexID, broker.URL(), graphYAML(e, g, t.TempDir()))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServiceBusEnabled() {
		t.Fatal("the test wants a graph-only configuration")
	}
	msgs := collect(subscribe(t, broker.URL(), "presence-bridge/#"))
	var logs safebuf.Buffer
	d, err := NewDaemon(DaemonOptions{
		Config: cfg, AddOn: true, SupervisorURL: srv.URL, SupervisorToken: "token",
		Logger: newLogger(&logs, "info"), Graph: graphsource.Options{HTTPClient: e.Client()},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	msgs.await(t, "alex unavailable while nobody is signed in", func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/"+alexID+"/availability" && string(m.Payload()) == "offline"
	})
	waitFor(t, "a notification asking for a sign-in", func() bool {
		return sup.find("/core/api/services/persistent_notification/create", "presence_bridge_graph_sign_in") &&
			sup.find("/core/api/services/persistent_notification/create", "Alex")
	})
	g.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "InACall"})

	// Home Assistant's button.
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("ha-test"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(100)
	pub.Publish("presence-bridge/bridge/graph_sign_in/press", 1, false, "PRESS").Wait()
	m := msgs.await(t, "the code on the sensor", func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/bridge/graph_sign_in_code" && strings.Contains(string(m.Payload()), "enter the code")
	})
	var st struct{ Text, URL, Code string }
	if err := json.Unmarshal(m.Payload(), &st); err != nil {
		t.Fatal(err)
	}
	if st.URL != e.URL()+"/devicelogin" || st.Code == "" {
		t.Fatalf("sensor %s", m.Payload())
	}
	waitFor(t, "the code in the notification", func() bool {
		return sup.find("/core/api/services/persistent_notification/create", st.Code)
	})
	if err := e.EnterCode(st.Code, alexID); err != nil {
		t.Fatal(err)
	}
	msgs.await(t, "alex's presence", func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/"+alexID+"/state" && strings.Contains(string(m.Payload()), `"InACall"`)
	})
	msgs.await(t, "the sensor emptied", func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/bridge/graph_sign_in_code" && strings.Contains(string(m.Payload()), `"text":""`) &&
			strings.Contains(string(m.Payload()), `"last_result":"signed_in"`)
	})
	waitFor(t, "the notification dismissed", func() bool {
		return sup.find("/core/api/services/persistent_notification/dismiss", "presence_bridge_graph_sign_in")
	})
	msgs.await(t, "the graph connectivity sensor on", func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/bridge/graph" && string(m.Payload()) == "ON"
	})
	if st := d.Health.Snapshot()[graphsource.SourceName]; !st.OK {
		t.Errorf("graph health %+v", st)
	}
	if strings.Contains(logs.String(), st.Code) {
		t.Error("the user code reached the log at info level")
	}

	// The sign-in is revoked: Alex is shown unavailable, the notification
	// is raised again naming the account, and a new code is on the sensor.
	mark := msgs.len()
	e.RevokeAccess(alexID)
	msgs.awaitFrom(t, mark, "alex unavailable after the revocation", func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/"+alexID+"/availability" && string(m.Payload()) == "offline"
	})
	waitFor(t, "the notification raised again", func() bool {
		return sup.find("/core/api/services/persistent_notification/create", "alex@contoso.com needs renewing")
	})
	msgs.awaitFrom(t, mark, "a new code on the sensor", func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/bridge/graph_sign_in_code" && strings.Contains(string(m.Payload()), "enter the code") &&
			!strings.Contains(string(m.Payload()), st.Code)
	})
}

// TestBothSourcesStayInOrder: the graph source and the Service Bus source
// (the cloud poller reading the same Graph) deliver the same presence
// versions in any order: Home Assistant sees each state once, in sequence
// order, and never an older one after a newer.
func TestBothSourcesStayInOrder(t *testing.T) {
	e, g := graphFakes(t)
	sb := sbtest.Start(t, sbtest.Options{Subscriptions: []string{alexID + "/home"}})
	broker := mosquitto.Start(t)
	dataDir := t.TempDir()
	// Alex signed in before (login), with Presence.Read.
	store := graphsource.NewStore(dataDir)
	signInForTest(t, e, store, alexID)

	cfg, err := config.Parse([]byte(fmt.Sprintf("health_addr: \"\"\nusers: [{id: %s, name: Alex}]\nservice_bus: {connection_string: %q}\nmqtt: {url: %q}\n%s",
		alexID, sb.ConnectionString(), broker.URL(), graphYAML(e, g, dataDir))), nil)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	stateCh := subscribe(t, broker.URL(), "presence-bridge/"+alexID+"/state")
	d, err := NewDaemon(DaemonOptions{Config: cfg, Graph: graphsource.Options{HTTPClient: e.Client()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	const base = 638680000000000000 // graphtest's first sequenceNumber - 1
	send := func(seq int64, avail presence.Availability, observed time.Time) {
		act, _ := presence.ParseActivity(avail.String()) // as the fake Graph answers
		body, err := presence.Encode(presence.Update{UserID: alexID, Availability: avail, Activity: act, Sequence: fmt.Sprint(seq), ObservedAt: observed})
		if err != nil {
			t.Fatal(err)
		}
		sb.Send(ctx, alexID, body)
	}
	next := func(want string) {
		t.Helper()
		m := await(t, stateCh, func(m mqtt.Message) bool { return !m.Retained() }, want)
		var p struct{ Availability string }
		_ = json.Unmarshal(m.Payload(), &p)
		states = append(states, p.Availability)
		if p.Availability != want {
			t.Fatalf("states %v, want %s next", states, want)
		}
	}
	// Graph: Busy (sequence base+1), read by the bridge's own source.
	g.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "Busy"})
	next("Busy")
	// The poller's copy of an older presence, arriving late: stale.
	send(base, presence.AvailabilityAvailable, time.Now())
	// The poller's copy of the same presence: a duplicate.
	send(base+1, presence.AvailabilityBusy, time.Now())
	// Graph: Away (base+2); the poller saw it too, a little later.
	g.SetPresence(alexID, graphtest.Presence{Availability: "Away", Activity: "Away"})
	next("Away")
	send(base+2, presence.AvailabilityAway, time.Now())
	// The poller is ahead (base+3, DoNotDisturb) while the bridge's reads
	// still answer base+2: the newer one stays.
	send(base+3, presence.AvailabilityDoNotDisturb, time.Now())
	next("DoNotDisturb")
	g.SetPresence(alexID, graphtest.Presence{Availability: "DoNotDisturb", Activity: "DoNotDisturb"}) // base+3 from Graph
	// Nothing else may reach Home Assistant through several graph cycles.
	polls := g.Total()
	waitFor(t, "three more graph reads", func() bool { return g.Total() >= polls+3 })
	select {
	case m := <-stateCh:
		t.Errorf("extra state after %v: %s", states, m.Payload())
	default:
	}
	if got := sb.Count(ctx, alexID+"/Subscriptions/home", 0); got != 0 {
		t.Errorf("%d messages left unsettled", got)
	}
}

// collector keeps every message of a subscription, so that a test can wait
// for messages in any order.
type collector struct {
	mu   sync.Mutex
	msgs []mqtt.Message
}

func collect(ch <-chan mqtt.Message) *collector {
	c := &collector{}
	go func() {
		for m := range ch {
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) await(t *testing.T, what string, want func(mqtt.Message) bool) mqtt.Message {
	t.Helper()
	return c.awaitFrom(t, 0, what, want)
}

// len is how many messages arrived so far.
func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// awaitFrom waits for a message among those from the from-th on.
func (c *collector) awaitFrom(t *testing.T, from int, what string, want func(mqtt.Message) bool) mqtt.Message {
	t.Helper()
	var found mqtt.Message
	waitFor(t, what, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.msgs[from:] {
			if want(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// signInForTest stores a sign-in of the person made through the device
// code, as `presence-bridge login` does.
func signInForTest(t *testing.T, e *entratest.Server, store *graphsource.Store, id presence.UserID) {
	t.Helper()
	cfg := config.Graph{ClientID: graphClientID, Authority: e.Authority("organizations"), Scopes: []string{"Presence.Read"}}
	codes := make(chan string, 1)
	res := make(chan error, 1)
	go func() {
		a, err := graphsource.SignIn(t.Context(), graphsource.SignInOptions{Config: cfg, HTTPClient: e.Client()}, func(dc graphsource.DeviceCode) { codes <- dc.Code })
		if err == nil {
			_, err = store.Put(a)
		}
		res <- err
	}()
	select {
	case c := <-codes:
		if err := e.EnterCode(c, id); err != nil {
			t.Fatal(err)
		}
	case err := <-res:
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}
