package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/addon"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
	"github.com/presence-bridge/presence-bridge/graphsource"
	"github.com/presence-bridge/presence-bridge/health"
	"github.com/presence-bridge/presence-bridge/hue"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/sbsource"
)

// shutdownGrace bounds the stop after SIGTERM (SPEC §6: exit within 5 s).
const shutdownGrace = 4500 * time.Millisecond

// Source produces presence updates for the core: the Service Bus source,
// the Graph source, or the demo's simulated people. A source that also has
// StartSignIn (the Graph source) gets Home Assistant's Sign in button.
type Source interface {
	// Name is the component the source reports its health under, and the
	// connectivity sensor it gets on the bridge device in Home Assistant.
	Name() string
	// Run submits updates until ctx ends, then gives back what it holds.
	Run(ctx context.Context, core bridge.Submitter) error
}

// SourceFactory builds a source once the daemon's health registry exists.
type SourceFactory func(status bridge.StatusReporter, logger *slog.Logger) (Source, error)

// DaemonOptions configure a Daemon.
type DaemonOptions struct {
	Config  *config.Config
	Logger  *slog.Logger
	Version string
	// AddOn turns on Home Assistant notifications through the Supervisor
	// and makes /data the default data directory.
	AddOn           bool
	SupervisorToken string
	// SupervisorURL overrides the Supervisor API address (tests).
	SupervisorURL string
	// Sources replace the sources the configuration names (the demo's
	// simulated people). Nil: from the configuration.
	Sources []SourceFactory
	// ServiceBus tunes the Service Bus source (tests); Config, Users,
	// Logger and Status are filled in.
	ServiceBus sbsource.Options
	// Graph tunes the graph source (tests: an HTTP client that trusts the
	// fakes); Config, Users, DataDir, Logger, Status, OnPrompt and
	// AutoSignIn are filled in.
	Graph graphsource.Options
	// MQTTDial overrides how the Home Assistant sink connects (tests).
	MQTTDial discovery.Dialer
	// OnHueCommand is told each command a Hue bridge accepted (the demo
	// prints them). It must not block.
	OnHueCommand func(hue.Command)
}

// Daemon is the wired bridge: its sources, the core, and the Home Assistant
// and Hue sinks that are configured. It is the bridge's one composition
// root: the daemon and the demo both run it.
type Daemon struct {
	log      *slog.Logger
	cfg      *config.Config
	Health   *bridge.Health
	core     *bridge.Core
	sources  []Source
	mqtt     *discovery.Sink
	hue      *hue.Sink
	notifier *addon.Notifier
}

// NewDaemon builds every component from the configuration; nothing connects
// until Run.
func NewDaemon(o DaemonOptions) (*Daemon, error) {
	cfg, logger := o.Config, o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{log: logger, cfg: cfg, Health: bridge.NewHealth()}
	if !cfg.MQTT.Enabled() && !cfg.Hue.Enabled() {
		return nil, errors.New("nothing to drive: configure mqtt.url (Home Assistant) or hue.bridges (Philips Hue), or both")
	}
	factories := o.Sources
	if factories == nil {
		factories = d.configuredSources(o)
	}
	var names []string
	var signIn func()
	for _, f := range factories {
		src, err := f(d.Health, logger)
		if err != nil {
			return nil, err
		}
		d.sources = append(d.sources, src)
		names = append(names, src.Name())
		if s, ok := src.(interface{ StartSignIn() }); ok {
			signIn = s.StartSignIn
		}
	}
	if len(d.sources) == 0 {
		return nil, errors.New("no source: configure service_bus or graph")
	}

	var sinks []bridge.SinkSpec
	var err error
	if cfg.Hue.Enabled() {
		d.hue, err = hue.New(hue.Options{
			Config: cfg.Hue, Users: cfg.Users, HomeAssistant: cfg.MQTT.Enabled(),
			Logger: logger, Status: d.Health, OnCommand: o.OnHueCommand,
		})
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, bridge.SinkSpec{Name: "hue", Sink: d.hue})
	}
	if cfg.MQTT.Enabled() {
		mc := cfg.MQTT
		if mc.ClientID == "" {
			mc.ClientID = mqttClientID(cfg.DataDirOrDefault(o.AddOn), mc.BaseTopic, logger)
		}
		opts := discovery.Options{
			Config: mc, Users: cfg.Users, Version: o.Version,
			Logger: logger.With("component", "mqtt"), Status: d.Health,
			Sources: names, Dial: o.MQTTDial, SignIn: signIn,
		}
		if d.hue != nil {
			opts.Mode = d.hue
			opts.OnHomeAssistantStatus = d.hue.SetHomeAssistantOnline
		}
		if d.mqtt, err = discovery.New(opts); err != nil {
			return nil, err
		}
		sinks = append(sinks, bridge.SinkSpec{Name: "mqtt", Sink: d.mqtt, Durable: true})
		// The sources' health drives their connectivity sensors.
		d.Health.Watch(func(component string, st bridge.ComponentStatus) {
			d.mqtt.SetStatus(component, st.OK, st.Detail)
		})
	}
	ids := make([]presence.UserID, len(cfg.Users))
	for i, u := range cfg.Users {
		ids[i] = u.ID
	}
	if d.core, err = bridge.New(bridge.Options{Users: ids, Sinks: sinks, Logger: logger.With("component", "core")}); err != nil {
		return nil, err
	}
	if o.AddOn {
		d.notifier = addon.NewNotifier(addon.NotifierOptions{
			SupervisorURL: o.SupervisorURL, Token: o.SupervisorToken,
			Logger:      logger,
			UserFixable: userFixable,
		})
		d.Health.Watch(func(component string, st bridge.ComponentStatus) {
			d.notifier.SetStatus(component, st.OK, st.Detail)
		})
	}
	return d, nil
}

// configuredSources are the sources the configuration names.
func (d *Daemon) configuredSources(do DaemonOptions) []SourceFactory {
	cfg := d.cfg
	var out []SourceFactory
	if cfg.ServiceBusEnabled() {
		out = append(out, func(status bridge.StatusReporter, logger *slog.Logger) (Source, error) {
			o := do.ServiceBus
			o.Config, o.Users, o.Status, o.Logger = cfg.ServiceBus, cfg.Users, status, logger
			if o.SettleTimeout == 0 {
				// Giving back what is in hand must fit in SPEC §6's 5 s stop.
				o.SettleTimeout = 3 * time.Second
			}
			return sbsource.New(o)
		})
	}
	if cfg.Graph.Enabled() {
		out = append(out, func(status bridge.StatusReporter, logger *slog.Logger) (Source, error) {
			o := do.Graph
			o.Config, o.Users, o.Status, o.Logger = cfg.Graph, cfg.Users, status, logger
			o.DataDir = cfg.DataDirOrDefault(do.AddOn)
			o.OnPrompt = d.showSignIn
			// A code asked for by itself (an expired sign-in) is only
			// useful where someone sees it.
			o.AutoSignIn = cfg.MQTT.Enabled() || do.AddOn
			return graphsource.New(o)
		})
	}
	return out
}

// signInNotice is the add-on notification of the graph source's sign-in.
const signInNotice = "graph_sign_in"

// showSignIn shows the graph source's sign-in prompt in Home Assistant: the
// graph_sign_in_code sensor and, in the add-on, a notification. It runs in
// the source's goroutine, after NewDaemon has built the sinks.
func (d *Daemon) showSignIn(p graphsource.Prompt) {
	if d.mqtt != nil {
		st := discovery.SignInState{LastResult: p.LastResult}
		if w := p.Waiting; w != nil {
			st.URL, st.Code, st.ExpiresAt = w.URL, w.Code, w.ExpiresAt
		}
		d.mqtt.SetSignIn(st)
	}
	if d.notifier != nil {
		d.notifier.Show(signInNotice, "Presence Bridge: Microsoft sign-in", p.Notice)
	}
}

// Submitter is the core, for callers that feed it directly.
func (d *Daemon) Submitter() bridge.Submitter { return d.core }

// Run runs every component until ctx ends, then stops them: the sources stop
// taking messages and give back what they hold, and the Home Assistant sink
// publishes offline. It returns an error when a component fails for good
// (the MQTT broker refusing the credentials) or the stop overruns.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		})
	}
	run("core", d.core.Run)
	for _, src := range d.sources {
		run(src.Name(), func(ctx context.Context) error { return src.Run(ctx, d.core) })
	}
	if d.mqtt != nil {
		run("mqtt", d.mqtt.Run)
	}
	if d.hue != nil {
		run("hue", d.hue.Run)
	}
	if d.notifier != nil {
		run("addon", d.notifier.Run)
	}
	if d.cfg.HealthAddr != "" {
		// A health endpoint that cannot listen is logged, not fatal: the
		// bridge itself still works.
		wg.Go(func() {
			if err := health.Serve(ctx, d.cfg.HealthAddr, d.Health, d.log.With("component", "health")); err != nil && ctx.Err() == nil {
				d.log.Error("health endpoint failed", "addr", d.cfg.HealthAddr, "err", err)
			}
		})
	}
	<-ctx.Done()
	d.log.Info("stopping")
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	t := time.NewTimer(shutdownGrace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		return errors.New("components did not stop in time")
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// userFixable picks the problems worth a Home Assistant notification: those
// only the user can fix (a rejected Hue key, a refused or misnamed Service
// Bus entity), not outages that heal by themselves. The graph source words
// its own notification (showSignIn): its problems all need a sign-in.
func userFixable(component, detail string) bool {
	switch component {
	case sbsource.SourceName:
		return sbsource.UserFixable(detail)
	case hue.Component:
		return strings.Contains(detail, "rejected the API key")
	}
	return false
}
