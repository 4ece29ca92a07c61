package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/boltstore"
	"github.com/presence-bridge/presence-bridge/poller/config"
	"github.com/presence-bridge/presence-bridge/poller/notify"
	"github.com/presence-bridge/presence-bridge/poller/server"
	"github.com/presence-bridge/presence-bridge/poller/signin"
	"github.com/presence-bridge/presence-bridge/poller/tablestore"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// shutdownGrace bounds the stop after SIGTERM (SPEC §9: exit within 5 s).
const shutdownGrace = 4 * time.Second

func runServe(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	load := configFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	cfg, path, ok := load()
	if !ok {
		return ExitUsage
	}
	logger := newLogger(env.Stderr, cfg.LogLevel)
	if cfg.ServiceBus.WorkQueue != "" {
		logger.Info("service_bus.work_queue is used by the functions command only; serve runs each cycle itself")
	}
	d, err := NewDaemon(DaemonOptions{Config: cfg, Logger: logger, HTTPClient: env.HTTPClient})
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-poller: %v\n", err)
		if errors.Is(err, boltstore.ErrLocked) {
			return ExitFailure
		}
		return ExitUsage
	}
	logger.Info("presence poller starting", "version", or(env.Version, "dev"), "config", path, "public_url", cfg.PublicURL)
	if err := d.Run(ctx, env.Ready); err != nil {
		logger.Error("presence poller stopped", "err", err)
		return ExitFailure
	}
	logger.Info("presence poller stopped")
	return ExitOK
}

// DaemonOptions configure a Daemon.
type DaemonOptions struct {
	Config     *config.Config
	Logger     *slog.Logger
	HTTPClient *http.Client
	// Namespaces and Publisher replace Service Bus (the whole-system demo's
	// in-process bus); nil: the configured namespaces.
	Namespaces []poller.TopicManager
	Publisher  poller.Publisher
}

// Store is the poller's store with its health check: boltstore's or
// tablestore's.
type Store interface {
	poller.Store
	Ping(ctx context.Context) error
	Close() error
}

// Daemon is the wired poller: store, sign-in, Graph, Service Bus, engine and
// HTTP server.
type Daemon struct {
	cfg       *config.Config
	log       *slog.Logger
	Store     Store
	Engine    *poller.Engine
	Handler   *server.Server
	Flow      *signin.Flow
	Tokens    *signin.Tokens
	AppTokens *signin.AppTokens // nil without entra.app_only_tenants
	// Subscriptions and Webhook are the change-notification side; nil
	// when graph.notifications is off.
	Subscriptions *notify.Manager
	Webhook       *notify.Webhook
	validator     *notify.TokenValidator
	publisher     *servicebus.Publisher // nil when DaemonOptions.Publisher replaced it
}

// openStore opens Table Storage when storage.tables is set (shared by any
// number of processes), else the embedded store under data_dir (waiting up
// to wait for another process to release it).
func openStore(cfg *config.Config, wait time.Duration) (Store, error) {
	if cfg.Storage.Tables == "" {
		return boltstore.Open(cfg.DataDir, wait)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return tablestore.Open(ctx, tablestore.Options{ConnectionString: cfg.Storage.Tables.Value()})
}

// NewDaemon opens the store and builds every part; nothing else connects
// until Run.
func NewDaemon(o DaemonOptions) (*Daemon, error) {
	cfg, logger := o.Config, o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cred, err := credential(cfg.Entra)
	if err != nil {
		return nil, err
	}
	store, err := openStore(cfg, 2*time.Second)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Daemon, error) {
		store.Close()
		return nil, err
	}
	tokens, err := signin.NewTokens(signin.TokensOptions{
		Authority: cfg.Entra.Authority, ClientID: cfg.Entra.ClientID, Credential: cred, Scopes: cfg.Scopes(),
		SecretKey: cfg.Key(), Store: store, HTTPClient: o.HTTPClient, InstanceDiscovery: microsoftHost(cfg.Entra.Authority),
	})
	if err != nil {
		return fail(err)
	}
	flow, err := signin.NewFlow(signin.FlowOptions{ClientID: cfg.Entra.ClientID, RedirectURI: cfg.RedirectURI(), SecretKey: cfg.Key(), Tokens: tokens})
	if err != nil {
		return fail(err)
	}
	managers := o.Namespaces
	var sbPub *servicebus.Publisher
	var pub poller.Publisher = o.Publisher
	if managers == nil || pub == nil {
		var conns []string
		managers = nil
		for _, ns := range cfg.ServiceBus.Namespaces {
			conns = append(conns, ns.ConnectionString.Value())
			m, err := servicebus.NewManager(servicebus.ManagerOptions{ConnectionString: ns.ConnectionString.Value(), AdminEndpoint: ns.AdminEndpoint, HTTPClient: o.HTTPClient})
			if err != nil {
				return fail(err)
			}
			managers = append(managers, m)
		}
		if sbPub, err = servicebus.NewPublisher(servicebus.PublisherOptions{ConnectionStrings: conns, Logger: logger.With("component", "servicebus")}); err != nil {
			return fail(err)
		}
		pub = sbPub
	}
	reader := graph.New(graph.Options{Endpoint: cfg.Graph.Endpoint, HTTPClient: o.HTTPClient, Logger: logger.With("component", "graph")})
	var appTokens *signin.AppTokens
	eo := poller.Options{
		Store: store, Reader: reader, Publisher: pub, Tokens: tokens, Heartbeat: cfg.Graph.Heartbeat.Std(),
		Logger: logger.With("component", "refresh"),
	}
	var n notifications
	if cfg.Graph.Notifications {
		if n, err = newNotifications(cfg, store, tokens, o.HTTPClient, logger); err != nil {
			return fail(err)
		}
		eo.Covered, eo.Open, eo.ReconcileInterval = n.manager.Covered, n.keys.Open, cfg.Graph.ReconcileInterval.Std()
	}
	if len(cfg.Entra.AppOnlyTenants) > 0 {
		appTokens, err = signin.NewAppTokens(signin.AppTokensOptions{Authority: cfg.Entra.Authority, ClientID: cfg.Entra.ClientID, Credential: cred,
			HTTPClient: o.HTTPClient, InstanceDiscovery: microsoftHost(cfg.Entra.Authority)})
		if err != nil {
			return fail(err)
		}
		eo.AppOnly, eo.AppTokens = cfg.Entra.AppOnlyTenants, appTokens
	}
	engine := poller.New(eo)
	onboarder := &poller.Onboarder{Namespaces: managers, Subscriptions: cfg.ServiceBus.Subscriptions, ListenKeys: cfg.ServiceBus.ListenKeys}
	so := server.Options{
		Flow: flow, Tokens: tokens, Store: store, Engine: engine, Onboarder: onboarder, APIKey: cfg.APIKey.Value(),
		AppOnlyTenants: cfg.Entra.AppOnlyTenants,
		Logger:         logger.With("component", "http"),
		Checks: map[string]func(context.Context) error{
			"store": store.Ping,
			"service_bus": func(ctx context.Context) error {
				_, err := managers[0].CountTopics(ctx)
				var denied *servicebus.ManageDeniedError
				if errors.As(err, &denied) {
					return nil // reachable, only not allowed to list
				}
				return err
			},
		},
	}
	d := &Daemon{cfg: cfg, log: logger, Store: store, Engine: engine, Flow: flow, Tokens: tokens, AppTokens: appTokens, publisher: sbPub}
	if n.manager != nil {
		n.webhook = notify.NewWebhook(notify.WebhookOptions{
			Store: store, Engine: engine, Keys: n.keys, Manager: n.manager, Tokens: n.validator,
			Logger: logger.With("component", "notifications"),
		})
		so.Notifications, so.Subscriptions = n.webhook, n.manager
		d.Subscriptions, d.Webhook, d.validator = n.manager, n.webhook, n.validator
	}
	d.Handler = server.New(so)
	return d, nil
}

// notifications are the parts of change notifications (graph.notifications).
type notifications struct {
	keys      *notify.KeyRing
	manager   *notify.Manager
	validator *notify.TokenValidator
	webhook   *notify.Webhook
}

func newNotifications(cfg *config.Config, store poller.Store, tokens poller.TokenSource, hc *http.Client, logger *slog.Logger) (notifications, error) {
	keys, err := notify.NewKeyRing(notify.KeyRingOptions{Store: store, SecretKey: cfg.Key()})
	if err != nil {
		return notifications{}, err
	}
	appOnly := map[string]bool{}
	for _, t := range cfg.Entra.AppOnlyTenants {
		appOnly[strings.ToLower(t)] = true
	}
	api := graph.NewSubscriptions(graph.SubscriptionsOptions{Endpoint: cfg.Graph.Endpoint, HTTPClient: hc, Logger: logger.With("component", "graph")})
	return notifications{
		keys: keys,
		manager: notify.NewManager(notify.ManagerOptions{
			Store: store, API: api, Tokens: tokens, Keys: keys, NotificationURL: cfg.PublicURL + "/notifications",
			// Application permissions cannot subscribe to presence: the
			// people of app-only tenants are always polled.
			Skip:   func(a poller.Account) bool { return appOnly[strings.ToLower(a.TenantID)] },
			Logger: logger.With("component", "subscriptions"),
		}),
		validator: notify.NewTokenValidator(notify.TokenValidatorOptions{KeysURL: notify.KeysURL(cfg.Entra.Authority), ClientID: cfg.Entra.ClientID, HTTPClient: hc}),
	}, nil
}

// credential reads the client secret, or the certificate (PEM or PFX), or
// sets up a federated credential (the host's managed identity, or a token
// file).
func credential(e config.Entra) (signin.Credential, error) {
	switch {
	case e.ClientSecret != "":
		return signin.Credential{Secret: e.ClientSecret.Value()}, nil
	case e.ManagedIdentity != "":
		get, err := signin.ManagedIdentityAssertion(e.ManagedIdentity, nil)
		if err != nil {
			return signin.Credential{}, fmt.Errorf("entra.managed_identity: %w", err)
		}
		return signin.Credential{Assertion: get}, nil
	case e.ClientAssertionFile != "":
		return signin.Credential{Assertion: signin.FileAssertion(e.ClientAssertionFile)}, nil
	}
	data, err := os.ReadFile(e.CertificateFile)
	if err != nil {
		return signin.Credential{}, fmt.Errorf("entra.certificate_file: %w", err)
	}
	certs, key, err := signin.LoadCertificate(data, e.CertificatePassword.Value())
	if err != nil {
		return signin.Credential{}, fmt.Errorf("entra.certificate_file: %w", err)
	}
	return signin.Credential{Certs: certs, Key: key}, nil
}

// microsoftHost: instance discovery and authority validation only for
// Microsoft's cloud hosts; any other host is used as given (tests, the
// demo).
func microsoftHost(authority string) bool {
	u, err := url.Parse(authority)
	if err != nil {
		return false
	}
	h := strings.ToLower(u.Hostname())
	for _, suffix := range []string{"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn", "login.microsoft.com", "login.windows.net"} {
		if h == suffix {
			return true
		}
	}
	return false
}

// Close releases the store and Service Bus connections of a daemon that was
// built but not run (a command that does one thing).
func (d *Daemon) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = d.publisher.Close(ctx)
	_ = d.Store.Close()
}

// Run serves HTTP and runs the refresh loop until ctx ends, then stops
// within shutdownGrace: the cycle in progress finishes or leaves its
// messages pending, the server drains, the store closes.
func (d *Daemon) Run(ctx context.Context, ready func(addr string)) error {
	defer d.Store.Close()
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", d.cfg.Listen, err)
	}
	srv := &http.Server{Handler: d.Handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	d.log.Info("listening", "addr", ln.Addr().String(), "sign_in", d.cfg.PublicURL+"/auth/start")
	if ready != nil {
		ready(ln.Addr().String())
	}
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		d.loop(ctx)
	}()
	subsDone := make(chan struct{})
	go func() {
		defer close(subsDone)
		if d.Subscriptions == nil {
			return
		}
		// Warm the signing keys, so that the first notification does not
		// wait for them; a failure is retried when a token needs them.
		if err := d.validator.Refresh(ctx); err != nil {
			d.log.Warn("the authority's signing keys could not be read yet", "err", err)
		}
		d.Subscriptions.Run(ctx)
	}()
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		runErr = fmt.Errorf("http server: %w", err)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = srv.Shutdown(stopCtx)
	if d.Webhook != nil {
		// A second to open and publish what was received; the rest stays
		// in the store for the next process.
		wctx, wcancel := context.WithTimeout(stopCtx, time.Second)
		d.Webhook.Close(wctx)
		wcancel()
	}
	for _, done := range []chan struct{}{loopDone, subsDone} {
		select {
		case <-done:
		case <-stopCtx.Done():
		}
	}
	if d.publisher != nil {
		_ = d.publisher.Close(stopCtx)
	}
	return runErr
}

// loop runs a cycle at once and then every poll_interval (a cycle that
// runs long delays the next one rather than overlapping it).
func (d *Daemon) loop(ctx context.Context) {
	interval := d.cfg.Graph.PollInterval.Std()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		began := time.Now()
		cctx, cancel := context.WithTimeout(ctx, max(interval, 5*time.Second))
		if _, err := d.Engine.Cycle(cctx); err != nil && ctx.Err() == nil {
			d.log.Warn("refresh cycle cut short", "err", err)
		}
		cancel()
		if d.publisher != nil {
			d.publisher.CloseIdle()
		}
		t.Reset(max(interval-time.Since(began), 0))
	}
}
