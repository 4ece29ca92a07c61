package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/app"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/poller"
	pollercli "github.com/presence-bridge/presence-bridge/poller/cli"
	pollerconfig "github.com/presence-bridge/presence-bridge/poller/config"
)

// The simulated organisation of the whole-system demo.
const (
	demoTenant   = "72f988bf-0000-4000-8000-000000000d0e"
	demoClientID = "0d3e0000-1111-4222-8333-444444444444"
)

// DefaultWebAddr is where the whole-system demo's page listens unless told
// otherwise.
const DefaultWebAddr = "127.0.0.1:8080"

// SystemOptions configure a whole-system run.
type SystemOptions struct {
	// WebAddr is the demo page's listen address (DefaultWebAddr when
	// empty; port 0 picks a free port). The poller listens on a free port
	// of its own.
	WebAddr string
	// BrokerAddr is the embedded MQTT broker's (DefaultAddr when empty).
	BrokerAddr string
	Out        io.Writer
	Logger     *slog.Logger
	// Interval between two presence changes in Teams (3 s when zero).
	Interval time.Duration
	// PollInterval is the poller's Graph polling interval (2 s when zero).
	PollInterval time.Duration
	Version      string
	// Listening is called with the page's URL and the broker's address
	// once everything runs.
	Listening func(pageURL, brokerAddr string)
	NoHue     bool
}

// colleagues are the simulated people of the organisation; the page lets a
// visitor sign in as any of them.
func colleagues() []entratest.Person {
	return []entratest.Person{
		{ObjectID: "6f1c2a3b-1111-2222-3333-444455556666", TenantID: demoTenant, Name: "Alex", UPN: "alex@contoso.example"},
		{ObjectID: "0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff", TenantID: demoTenant, Name: "Sam", UPN: "sam@contoso.example"},
	}
}

// RunSystem runs the whole system with no cloud until ctx ends: a
// simulated Microsoft sign-in page and Graph, the real presence-poller, an
// in-process Service Bus, the real presence-bridge with its Home Assistant
// and Hue sinks, an embedded MQTT broker and a simulated Hue bridge. A
// person opens the page, signs in as a simulated colleague, and watches
// that colleague's Teams presence reach Home Assistant and the lamps.
func RunSystem(ctx context.Context, o SystemOptions) error {
	if o.WebAddr == "" {
		o.WebAddr = DefaultWebAddr
	}
	if o.BrokerAddr == "" {
		o.BrokerAddr = DefaultAddr
	}
	if o.Interval <= 0 {
		o.Interval = defaultInterval
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	people := colleagues()
	users := make([]config.User, len(people))
	for i, c := range people {
		users[i] = config.User{ID: c.ObjectID, Name: c.Name}
	}
	p := &printer{out: o.Out, users: users, avail: make(map[string]string), flush: make(chan string, 4)}

	// Listeners first: the sign-in page's and the poller's addresses go
	// into the fakes' and the poller's configuration.
	web, err := net.Listen("tcp", o.WebAddr)
	if err != nil {
		return fmt.Errorf("demo: the page cannot listen on %s (try -web 127.0.0.1:0): %w", o.WebAddr, err)
	}
	defer web.Close()
	pageURL := "http://" + web.Addr().String()
	pollerLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: poller: %w", err)
	}
	pollerAddr := pollerLn.Addr().String()
	pollerLn.Close() // the poller listens itself, on the address it is configured with

	entra := entratest.New(entratest.Options{ClientID: demoClientID, People: people, SignInPageURL: pageURL})
	defer entra.Close()
	teams := graphtest.New(graphtest.Options{Authorize: entra.AccessTokenOwner})
	defer teams.Close()

	h, err := startHome(ctx, p, o.BrokerAddr, users, o.NoHue)
	if err != nil {
		return err
	}
	defer h.close()
	broker := h.broker

	dir, err := os.MkdirTemp("", "presence-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(dir)
	bus := newBus(p)
	pd, err := newPoller(pollerConfig{
		listen: pollerAddr, dataDir: dir, authority: entra.Authority(demoTenant),
		graph: teams.URL(), poll: o.PollInterval,
	}, pollercli.DaemonOptions{
		Logger: o.Logger.With("program", "presence-poller"), HTTPClient: entra.Client(),
		Namespaces: []poller.TopicManager{bus}, Publisher: bus,
	})
	if err != nil {
		return err
	}

	h.cfg.DataDir = dir
	bd, err := h.bridge(o.Logger.With("program", "presence-bridge"), o.Version, func(status bridge.StatusReporter) app.Source {
		status.SetStatus(bus.Name(), true, "")
		return bus
	})
	if err != nil {
		pd.Store.Close()
		return fmt.Errorf("demo: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("/{tenant}/oauth2/v2.0/authorize", entra.SignInPage())
	mux.Handle("/{tenant}/oauth2/v2.0/authorize/", entra.SignInPage())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = landing.Execute(w, map[string]any{"People": people, "SignIn": "http://" + pollerAddr + "/auth/start"})
	})
	page := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = page.Serve(web) }()
	defer page.Close()

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := pd.Run(runCtx, nil); err != nil {
			errs <- fmt.Errorf("demo: presence-poller: %w", err)
		}
	})
	wg.Go(func() {
		if err := bd.Run(runCtx); err != nil {
			errs <- fmt.Errorf("demo: presence-bridge: %w", err)
		}
	})
	wg.Go(func() { teamsDay(runCtx, teams, bus, people, o.Interval, p, sync.OnceFunc(h.noHomeAssistant)) })

	p.linef("MQTT broker listening on %s — try: mosquitto_sub -h %s -v -t 'presence-bridge/#'", broker.Addr(), broker.Addr())
	p.linef("Open %s/ and sign in as a colleague: their Teams presence will reach Home Assistant and the lamps", pageURL)
	if o.Listening != nil {
		o.Listening(pageURL, broker.Addr())
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	cancel()
	wg.Wait()
	h.stopWatching()
	p.linef("demo stopped")
	if runErr == nil {
		select {
		case runErr = <-errs:
		default:
		}
	}
	return runErr
}

// pollerConfig is what the demo configures the poller with.
type pollerConfig struct {
	listen, dataDir, authority, graph string
	poll                              time.Duration
}

// newPoller builds the real poller (its composition root) for the
// simulated organisation. Service Bus is the in-process bus.
func newPoller(c pollerConfig, o pollercli.DaemonOptions) (*pollercli.Daemon, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	doc := fmt.Sprintf(`
log_level: info
listen: %s
public_url: http://%s
data_dir: %s
secret_key: %s
entra:
  authority: %s
  client_id: %s
  client_secret: demo-secret
graph:
  endpoint: %s
  poll_interval: %s
  notifications: false
  heartbeat: 15m
service_bus:
  namespaces:
    - connection_string: "Endpoint=sb://%s/;SharedAccessKeyName=manage;SharedAccessKey=ZGVtbw=="
  subscriptions: [home]
`, c.listen, c.listen, c.dataDir, base64.StdEncoding.EncodeToString(key), c.authority, demoClientID, c.graph, c.poll, busHost)
	cfg, err := pollerconfig.Parse([]byte(doc), nil)
	if err != nil {
		return nil, fmt.Errorf("demo: poller configuration: %w", err)
	}
	o.Config = cfg
	d, err := pollercli.NewDaemon(o)
	if err != nil {
		return nil, fmt.Errorf("demo: poller: %w", err)
	}
	return d, nil
}

// teamsDay changes the presence of every colleague who signed in (whose
// topic the poller created), one change per interval: what Teams would
// report through Graph.
func teamsDay(ctx context.Context, teams *graphtest.Server, b *bus, people []entratest.Person, interval time.Duration, p *printer, first func()) {
	day := script()
	for _, c := range people {
		teams.SetPresence(c.ObjectID, graphtest.Presence{Availability: "Available", Activity: "Available"})
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var signedIn []entratest.Person
		for _, c := range people {
			if b.hasTopic(string(c.ObjectID)) {
				signedIn = append(signedIn, c)
			}
		}
		if len(signedIn) == 0 {
			continue
		}
		first()
		st := day[n%len(day)]
		n++
		c := signedIn[st.user%len(signedIn)]
		teams.SetPresence(c.ObjectID, graphtest.Presence{Availability: st.availability.String(), Activity: st.activity.String(), StatusMessage: st.message})
		p.linef("Teams      %-4s is now %s / %s%s", c.Name, st.availability, st.activity, quoted(st.message))
	}
}

func (b *bus) hasTopic(topic string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.topics[topic]
}

var landing = template.Must(template.New("landing").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Presence Bridge demo</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5}
a.button{display:inline-block;padding:.5rem 1rem;margin:.25rem 0;border:1px solid #0a58ca;border-radius:.3rem;text-decoration:none}</style>
</head><body>
<h1>Presence Bridge, the whole system</h1>
<p>Everything here runs on this machine: a simulated Microsoft sign-in and Graph, the real
presence-poller, an in-process Service Bus, the real presence-bridge, an MQTT broker and a
simulated Hue bridge. Sign in as a colleague; the terminal then shows each change of their Teams
presence reaching Home Assistant and the lamps.</p>
<ul>{{range .People}}
<li><a class="button" id="signin-{{.Name}}" href="{{$.SignIn}}?login_hint={{.UPN}}">Sign in as {{.Name}}</a></li>{{end}}
</ul>
</body></html>
`))
