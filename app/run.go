package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/presence-bridge/presence-bridge/addon"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
	"gopkg.in/yaml.v3"
)

// ConfigEnv names the environment variable that overrides the default
// configuration path.
const ConfigEnv = "PRESENCE_BRIDGE_CONFIG"

// DefaultConfigPath is read when neither -config nor PRESENCE_BRIDGE_CONFIG
// is given (outside the add-on).
const DefaultConfigPath = "presence-bridge.yaml"

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
