package demo

import (
	"context"
	"log/slog"

	"github.com/presence-bridge/presence-bridge/app"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/hue"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
)

// home is the home side both demos run: the embedded broker with the
// printer watching it, the simulated Hue bridge, and the bridge wired to
// them by its own composition root.
type home struct {
	p         *printer
	broker    *Broker
	hue       *huetest.Bridge // nil without Hue
	stopWatch func()          // nil once stopped
	cfg       config.Config
}

// startHome starts the broker (on brokerAddr), the printer's watch of it
// and, unless noHue, the simulated Hue bridge, and configures the bridge
// for users.
func startHome(ctx context.Context, p *printer, brokerAddr string, users []config.User, noHue bool) (*home, error) {
	h := &home{p: p}
	var err error
	if h.broker, err = StartBroker(brokerAddr); err != nil {
		return nil, err
	}
	if h.stopWatch, err = p.watch(ctx, h.broker.URL()); err != nil {
		h.close()
		return nil, err
	}
	h.cfg = config.Default()
	h.cfg.HealthAddr = ""
	h.cfg.Users = users
	h.cfg.MQTT.URL = h.broker.URL()
	h.cfg.MQTT.ClientID = "presence-demo-bridge"
	if !noHue {
		fake, hueCfg, err := startHue()
		if err != nil {
			h.close()
			return nil, err
		}
		h.hue, h.cfg.Hue = fake, hueCfg
		p.linef("Hue        simulated bridge at http://%s with groups Office (Alex), Kitchen (Sam), Hallway (both); mode auto", hueCfg.Bridges[0].Host)
	}
	return h, nil
}

// bridge builds the bridge with source as its only source.
func (h *home) bridge(logger *slog.Logger, version string, source func(bridge.StatusReporter) app.Source) (*app.Daemon, error) {
	cfg := h.cfg
	return app.NewDaemon(app.DaemonOptions{
		Config: &cfg, Logger: logger, Version: version,
		Sources: []app.SourceFactory{func(status bridge.StatusReporter, _ *slog.Logger) (app.Source, error) {
			return source(status), nil
		}},
		OnHueCommand: func(c hue.Command) { h.p.linef("Hue        %-7s lights %s", c.Group, describeLook(c.Look)) },
	})
}

// noHomeAssistant announces, once the bridge is connected, that no Home
// Assistant runs (see absentHomeAssistant).
func (h *home) noHomeAssistant() { absentHomeAssistant(h.broker.URL(), h.p, h.hue != nil) }

// stopWatching shows everything the broker routed so far (the bridge's
// goodbye among it) and stops the printer's watch.
func (h *home) stopWatching() {
	if h.stopWatch != nil {
		h.stopWatch()
		h.stopWatch = nil
	}
}

func (h *home) close() {
	h.stopWatching()
	if h.hue != nil {
		h.hue.Close()
	}
	h.broker.Close()
}
