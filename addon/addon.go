// Package addon is the Home Assistant add-on runtime: it detects that the
// bridge runs as an add-on, reads the add-on's options into the same
// configuration as presence-bridge.yaml, takes the MQTT broker from the
// Supervisor when the options name none, and raises Home Assistant
// notifications for problems only the user can fix.
//
// # Options
//
// The Supervisor writes the user's validated options to /data/options.json
// (mode 0600, owned by root). The image runs as a non-root user, so when that
// file cannot be read Load asks the Supervisor for the same document
// (GET /addons/self/options/config, open to every add-on).
//
// # MQTT broker
//
// With mqtt.url empty, Load asks GET /services/mqtt (the manifest declares
// services: [mqtt:want]). The answer's host, port (a number or a string) and
// ssl flag make the URL (tcp:// or ssl://), with its credentials. A URL in
// the options always wins (with the options' username and password) and the
// Supervisor is not asked.
//
// When no add-on provides MQTT (HTTP 400 "Service not enabled"), the bridge
// runs without Home Assistant if a Hue bridge is configured (the Hue mode
// "auto" then drives the lights) and logs how to add a broker; with no Hue
// bridge either there is nothing to drive, and Load fails with instructions.
// A refusal (HTTP 403) or an unreachable Supervisor is an error.
package addon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"

	"github.com/presence-bridge/presence-bridge/config"
)

// Defaults of Options.
const (
	DefaultOptionsPath   = "/data/options.json"
	DefaultSupervisorURL = "http://supervisor"
	// TokenEnv is the environment variable the Supervisor gives the add-on
	// its API token in.
	TokenEnv = "SUPERVISOR_TOKEN"
)

// Options configures Load and Detect. Zero fields take the defaults.
type Options struct {
	// OptionsPath is the add-on's options file (DefaultOptionsPath).
	OptionsPath string
	// SupervisorURL is the Supervisor API (DefaultSupervisorURL).
	SupervisorURL string
	// Token is the Supervisor API token (the SUPERVISOR_TOKEN variable).
	Token string
	// HTTPClient makes the Supervisor calls (a client without proxy).
	HTTPClient *http.Client
	// Logger receives the add-on's start-up decisions (discarded if nil).
	Logger *slog.Logger

	// readFile replaces os.ReadFile in tests (which run as root, so cannot
	// meet a permission error).
	readFile func(string) ([]byte, error)
}

func (o Options) withDefaults() Options {
	if o.OptionsPath == "" {
		o.OptionsPath = DefaultOptionsPath
	}
	if o.SupervisorURL == "" {
		o.SupervisorURL = DefaultSupervisorURL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.readFile == nil {
		o.readFile = os.ReadFile
	}
	return o
}

// Detect reports whether the process runs as a Home Assistant add-on: the
// Supervisor token is set and /data/options.json exists.
func Detect(lookupEnv func(string) (string, bool)) bool {
	return Options{}.Detect(lookupEnv)
}

// Detect is the package Detect with o.OptionsPath as the options file.
func (o Options) Detect(lookupEnv func(string) (string, bool)) bool {
	if lookupEnv == nil {
		return false
	}
	if tok, ok := lookupEnv(TokenEnv); !ok || tok == "" {
		return false
	}
	o = o.withDefaults()
	// The file is root-only (0600): existing but unreadable still counts.
	_, err := os.Stat(o.OptionsPath)
	return err == nil || errors.Is(err, fs.ErrPermission)
}

// Load reads the add-on's options into a configuration and completes its
// MQTT settings from the Supervisor (see the package documentation).
func Load(ctx context.Context, o Options) (*config.Config, error) {
	o = o.withDefaults()
	sup := newSupervisor(o.SupervisorURL, o.Token, o.HTTPClient)

	data, err := o.readFile(o.OptionsPath)
	if errors.Is(err, fs.ErrPermission) {
		o.Logger.Debug("options file not readable, asking the supervisor", "path", o.OptionsPath)
		data, err = sup.optionsConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("addon: read options: %s is not readable by this user, and the supervisor: %w", o.OptionsPath, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("addon: read options: %w", err)
	}
	cfg, err := config.FromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("addon: options: %w", err)
	}
	if err := completeMQTT(ctx, cfg, sup, o.Logger); err != nil {
		return nil, err
	}
	return cfg, nil
}

// completeMQTT fills cfg.MQTT from the Supervisor when no URL is configured.
func completeMQTT(ctx context.Context, cfg *config.Config, sup *supervisor, logger *slog.Logger) error {
	if cfg.MQTT.URL != "" {
		logger.Info("mqtt broker from the options")
		return nil
	}
	svc, err := sup.mqttService(ctx)
	switch {
	case err == nil:
	case errors.Is(err, ErrServiceNotEnabled):
		if cfg.Hue.Enabled() {
			logger.Warn("no mqtt broker in home assistant: running without home assistant, hue only; install and start the Mosquitto broker add-on (or set mqtt.url) to get the sensors",
				"err", err)
			return nil
		}
		return fmt.Errorf("addon: %w: install and start the Mosquitto broker add-on (Settings → Add-ons → Add-on store), or set mqtt.url to your broker; with no broker and no Hue bridge there is nothing to drive", err)
	case errors.Is(err, ErrForbidden):
		return fmt.Errorf("addon: mqtt broker lookup %w (%w): the add-on lacks the mqtt service permission (services: mqtt:want); update or reinstall the add-on, or set mqtt.url", ErrForbidden, err)
	case errors.Is(err, ErrUnreachable):
		return fmt.Errorf("addon: mqtt broker lookup: %w; set mqtt.url to use a broker directly", err)
	default:
		return fmt.Errorf("addon: mqtt broker lookup: %w", err)
	}
	cfg.MQTT.URL = svc.URL()
	cfg.MQTT.Username = svc.Username
	cfg.MQTT.Password = config.Secret(svc.Password)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("addon: mqtt broker from the supervisor: %w", err)
	}
	logger.Info("mqtt broker from the supervisor", "url", cfg.MQTT.URL, "provider", svc.Provider, "username", cfg.MQTT.Username)
	return nil
}
