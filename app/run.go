package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/addon"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
	"github.com/presence-bridge/presence-bridge/health"
	"github.com/presence-bridge/presence-bridge/hue"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/sbsource"
	"gopkg.in/yaml.v3"
)

// ConfigEnv names the environment variable that overrides the default
// configuration path.
const ConfigEnv = "PRESENCE_BRIDGE_CONFIG"

// DefaultConfigPath is read when neither -config nor PRESENCE_BRIDGE_CONFIG
// is given (outside the add-on).
const DefaultConfigPath = "presence-bridge.yaml"

// shutdownGrace bounds the stop after SIGTERM (SPEC §6: exit within 5 s).
const shutdownGrace = 4500 * time.Millisecond

// configFlag registers -config and returns a function that loads the
// configuration it names: in the add-on (and with no -config given) from the
// Supervisor's options, else from the YAML file.
func configFlag(fs *flag.FlagSet, env Env) func(ctx context.Context, logger *slog.Logger) (*config.Config, string, error) {
	path := fs.String("config", "", "configuration file (default $"+ConfigEnv+" or "+DefaultConfigPath+"; the add-on reads "+addon.DefaultOptionsPath+")")
	return func(ctx context.Context, logger *slog.Logger) (*config.Config, string, error) {
		if *path == "" && addon.Detect(env.LookupEnv) {
			cfg, err := addon.Load(ctx, addon.Options{Token: env.getenv(addon.TokenEnv), Logger: logger})
			return cfg, addon.DefaultOptionsPath, err
		}
		p := or(*path, or(env.getenv(ConfigEnv), DefaultConfigPath))
		cfg, err := config.Load(p, env.LookupEnv)
		return cfg, p, err
	}
}

func runCheckConfig(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	load := configFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	cfg, path, err := load(ctx, newLogger(env.Stderr, "warn"))
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge: the configuration has problems:\n%s\n", indent(err.Error()))
		return ExitFailure
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge: print configuration: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintf(env.Stdout, "# %s is valid; effective configuration, secrets redacted:\n%s", path, out)
	return ExitOK
}

func runDaemon(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	load := configFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	cfg, path, err := load(ctx, newLogger(env.Stderr, "info"))
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge: the configuration has problems:\n%s\n", indent(err.Error()))
		return ExitUsage
	}
	logger := newLogger(env.Stderr, cfg.LogLevel)
	if env.ConfiguredUsers != nil {
		env.ConfiguredUsers(len(cfg.Users))
	}
	d, err := NewDaemon(DaemonOptions{Config: cfg, Logger: logger, Version: or(env.Version, "dev"), AddOn: path == addon.DefaultOptionsPath, SupervisorToken: env.getenv(addon.TokenEnv)})
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge: %v\n", err)
		return ExitUsage
	}
	logger.Info("presence bridge starting", "version", or(env.Version, "dev"), "config", path, "users", len(cfg.Users), "mqtt", cfg.MQTT.Enabled(), "hue_bridges", len(cfg.Hue.Bridges))
	if err := d.Run(ctx); err != nil {
		logger.Error("presence bridge stopped", "err", err)
		if errors.Is(err, discovery.ErrRefused) {
			fmt.Fprintln(env.Stderr, "presence-bridge: the MQTT broker refused the credentials: check mqtt.username and mqtt.password")
		}
		return ExitFailure
	}
	logger.Info("presence bridge stopped")
	return ExitOK
}

// DaemonOptions configure a Daemon.
type DaemonOptions struct {
	Config  *config.Config
	Logger  *slog.Logger
	Version string
	// AddOn turns on Home Assistant notifications through the Supervisor.
	AddOn           bool
	SupervisorToken string
	// SupervisorURL overrides the Supervisor API address (tests).
	SupervisorURL string
	// ServiceBus tunes the source (tests); Config, Users, Logger and Status
	// are filled in.
	ServiceBus sbsource.Options
}

// Daemon is the wired bridge: the Service Bus source, the core, and the
// Home Assistant and Hue sinks that are configured.
type Daemon struct {
	log      *slog.Logger
	cfg      *config.Config
	Health   *bridge.Health
	core     *bridge.Core
	source   *sbsource.Source
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
	var sinks []bridge.SinkSpec
	var err error
	if cfg.Hue.Enabled() {
		d.hue, err = hue.New(hue.Options{
			Config: cfg.Hue, Users: cfg.Users, HomeAssistant: cfg.MQTT.Enabled(),
			Logger: logger, Status: d.Health,
		})
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, bridge.SinkSpec{Name: "hue", Sink: d.hue})
	}
	if cfg.MQTT.Enabled() {
		opts := discovery.Options{
			Config: cfg.MQTT, Users: cfg.Users, Version: o.Version,
			Logger: logger.With("component", "mqtt"), Status: d.Health,
		}
		if d.hue != nil {
			opts.Mode = d.hue
			opts.OnHomeAssistantStatus = d.hue.SetHomeAssistantOnline
		}
		if d.mqtt, err = discovery.New(opts); err != nil {
			return nil, err
		}
		sinks = append(sinks, bridge.SinkSpec{Name: "mqtt", Sink: d.mqtt, Durable: true})
		d.Health.Watch(func(component string, st bridge.ComponentStatus) {
			if component == "service_bus" {
				d.mqtt.SetStatus(component, st.OK, st.Detail)
			}
		})
	}
	ids := make([]presence.UserID, len(cfg.Users))
	for i, u := range cfg.Users {
		ids[i] = u.ID
	}
	if d.core, err = bridge.New(bridge.Options{Users: ids, Sinks: sinks, Logger: logger.With("component", "core")}); err != nil {
		return nil, err
	}
	sbOpts := o.ServiceBus
	sbOpts.Config, sbOpts.Users, sbOpts.Status = cfg.ServiceBus, cfg.Users, d.Health
	sbOpts.Logger = logger
	if sbOpts.SettleTimeout == 0 {
		// Giving back what is in hand must fit in SPEC §6's 5 s stop.
		sbOpts.SettleTimeout = 3 * time.Second
	}
	if d.source, err = sbsource.New(sbOpts); err != nil {
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

// Run runs every component until ctx ends, then stops them: the source
// stops taking messages and gives back what it holds, and the Home Assistant
// sink publishes offline. It returns an error when a component fails for good
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
	run("service_bus", func(ctx context.Context) error { return d.source.Run(ctx, d.core) })
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
	select {
	case <-stopped:
	case <-time.After(shutdownGrace):
		return errors.New("components did not stop in time")
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// userFixable picks the problems worth a Home Assistant notification: those
// only the user can fix (a rejected Hue key, a refused or misnamed Service
// Bus entity), not outages that heal by themselves.
func userFixable(component, detail string) bool {
	switch component {
	case sbsource.SourceName:
		return sbsource.UserFixable(detail)
	case hue.Component:
		return strings.Contains(detail, "rejected the API key")
	}
	return false
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
