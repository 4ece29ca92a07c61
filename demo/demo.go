// Package demo is the presence-demo program: the home side of Presence
// Bridge with no cloud and no hardware. It runs the bridge's own
// composition root (app.NewDaemon: the real core, the real Home Assistant
// sink and the real Hue sink) with simulated people instead of Service Bus,
// an embedded MQTT broker, and a simulated Hue bridge, and prints step by
// step what Home Assistant and the lamps would see. Home Assistant or
// mosquitto_sub can be pointed at the broker meanwhile.
//
// It is a program of its own because the embedded broker (NATS server)
// would double the size of the add-on's binary.
package demo

import (
	"context"

	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/app"
	"github.com/presence-bridge/presence-bridge/bridge"
)

// DefaultAddr is where the embedded broker listens unless told otherwise.
const DefaultAddr = "127.0.0.1:1883"

const defaultInterval = 3 * time.Second

// Options configure a demo run.
type Options struct {
	// Addr is the embedded broker's listen address (DefaultAddr when
	// empty; port 0 picks a free port).
	Addr string
	// Out receives the readable lines; Logger the diagnostics (quiet when
	// nil).
	Out    io.Writer
	Logger *slog.Logger
	// Interval between two presence changes (3 s when zero).
	Interval time.Duration
	// Steps stops the demo after that many changes (0: until ctx ends).
	Steps   int
	Version string
	// Listening is called with the broker's address once it accepts
	// connections, before the first change.
	Listening func(addr string)
	// NoHue leaves out the simulated Hue bridge.
	NoHue bool
}

// Run runs the demo until ctx ends (or Steps changes are done), then stops
// everything it started.
func Run(ctx context.Context, o Options) error {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.Interval <= 0 {
		o.Interval = defaultInterval
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &printer{out: o.Out, users: Users(), avail: make(map[string]string), flush: make(chan string, 4)}

	h, err := startHome(ctx, p, o.Addr, Users(), o.NoHue)
	if err != nil {
		return err
	}
	defer h.close()
	broker := h.broker
	sim := &people{p: p, interval: o.Interval, steps: o.Steps, done: make(chan struct{}), first: h.noHomeAssistant}
	d, err := h.bridge(o.Logger, o.Version, func(status bridge.StatusReporter) app.Source {
		sim.status = status
		return sim
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	host, port, _ := net.SplitHostPort(broker.Addr())
	p.linef("MQTT broker listening on %s — try: mosquitto_sub -h %s -p %s -v -t 'presence-bridge/#' -t 'homeassistant/#'", broker.Addr(), host, port)
	if o.Listening != nil {
		o.Listening(broker.Addr())
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(runCtx) }()
	select {
	case <-ctx.Done():
	case <-sim.done:
	case err := <-ran:
		return fmt.Errorf("demo: %w", err)
	}
	cancel() // the bridge publishes offline, then disconnects
	if err := <-ran; err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	h.stopWatching()
	p.linef("demo stopped")
	return nil
}

// absentHomeAssistant announces on the broker that no Home Assistant is
// running (homeassistant/status offline, as Home Assistant's last will
// would), so the Hue sink's auto mode drives the simulated lamps. A real
// Home Assistant that connects to the demo's broker says online, and the
// lamps are handed to it.
func absentHomeAssistant(url string, p *printer, withHue bool) {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("presence-demo-no-ha").SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return
	}
	defer c.Disconnect(100)
	c.Publish("homeassistant/status", 1, false, "offline").WaitTimeout(5 * time.Second)
	if withHue {
		p.linef("HA         no Home Assistant on this broker: the bridge drives the lamps (hue mode auto)")
	}
}
