// Package demo runs the home side of Presence Bridge with no cloud and no
// hardware: an embedded MQTT broker, two simulated users whose Teams
// presence changes every few seconds, the real core, the real Home Assistant
// sink, and the real Hue sink driving a simulated Hue bridge. It prints, step
// by step, what Home Assistant and the lamps would see; Home Assistant or
// mosquitto_sub can be pointed at the broker meanwhile.
//
// More sinks join through Options.ExtraSinks and Options.Runners.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
	"github.com/presence-bridge/presence-bridge/presence"
)

// DefaultAddr is where the embedded broker listens unless told otherwise.
const DefaultAddr = "127.0.0.1:1883"

// Source names the simulated source in states and on the bridge device.
const Source = "demo"

const (
	defaultInterval = 3 * time.Second
	stopWait        = 3 * time.Second
)

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

	// ExtraSinks are driven by the same core as the Home Assistant sink
	// (for example a Hue sink talking to a simulated Hue bridge).
	ExtraSinks []bridge.SinkSpec
	// Runners run beside the pipeline until ctx ends (an extra sink's Run,
	// a simulated bridge).
	Runners []func(ctx context.Context) error
	// Mode and OnHomeAssistantStatus are passed to the Home Assistant sink
	// (the Hue sink's mode select and its auto mode).
	Mode                  discovery.ModeControl
	OnHomeAssistantStatus func(online bool)
	// NoHue leaves out the simulated Hue bridge and the Hue sink.
	NoHue bool
}

// Users returns the simulated users.
func Users() []config.User {
	return []config.User{
		{ID: "6f1c2a3b-1111-2222-3333-444455556666", Name: "Alex"},
		{ID: "0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff", Name: "Sam"},
	}
}

// step is one scripted presence change.
type step struct {
	user         int // index into Users
	availability presence.Availability
	activity     presence.Activity
	message      string
}

// script is a working day in fast motion; it repeats.
func script() []step {
	return []step{
		{0, presence.AvailabilityAvailable, presence.ActivityAvailable, ""},
		{1, presence.AvailabilityAway, presence.ActivityAway, "Lunch"},
		{0, presence.AvailabilityBusy, presence.ActivityInACall, ""},
		{1, presence.AvailabilityAvailable, presence.ActivityAvailable, ""},
		{0, presence.AvailabilityBusy, presence.ActivityInAMeeting, "Planning"},
		{1, presence.AvailabilityDoNotDisturb, presence.ActivityPresenting, ""},
		{0, presence.AvailabilityBeRightBack, presence.ActivityBeRightBack, "Back in 5"},
		{1, presence.AvailabilityBusy, presence.ActivityInAConferenceCall, ""},
		{0, presence.AvailabilityAvailableIdle, presence.ActivityAvailable, ""},
		{1, presence.AvailabilityOffline, presence.ActivityOffWork, ""},
	}
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
	users := Users()
	p := &printer{out: o.Out, users: users, avail: make(map[string]string)}

	if !o.NoHue {
		stopHue, err := addHue(&o, p)
		if err != nil {
			return err
		}
		defer stopHue()
	}

	broker, addr, err := startBroker(o.Addr, o.Logger)
	if err != nil {
		return err
	}
	defer broker.Close()
	if err := p.watch(broker); err != nil {
		return err
	}

	sink, err := discovery.New(discovery.Options{
		Config: config.MQTT{
			URL: "tcp://" + addr, ClientID: "presence-bridge-demo",
			DiscoveryPrefix: "homeassistant", BaseTopic: "presence-bridge",
		},
		Users:                 users,
		Logger:                o.Logger.With("component", "mqtt"),
		Version:               o.Version,
		Mode:                  o.Mode,
		OnHomeAssistantStatus: o.OnHomeAssistantStatus,
		Sources:               []string{Source},
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	ids := make([]presence.UserID, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	sinks := append([]bridge.SinkSpec{{Name: "mqtt", Sink: sink, Durable: true}}, o.ExtraSinks...)
	core, err := bridge.New(bridge.Options{Users: ids, Sinks: sinks, Logger: o.Logger.With("component", "core")})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2+len(o.Runners))
	start := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(runCtx); err != nil {
				errs <- fmt.Errorf("demo: %s: %w", name, err)
			}
		})
	}
	start("core", core.Run)
	start("mqtt", sink.Run)
	for i, r := range o.Runners {
		start(fmt.Sprintf("runner %d", i), r)
	}
	stop := func() error {
		cancel() // the sink publishes offline, then disconnects
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		t := time.NewTimer(stopWait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			return errors.New("demo: components did not stop in time")
		}
		p.linef("demo stopped")
		return nil
	}

	p.linef("MQTT broker listening on %s — try: mosquitto_sub -h %s -p %s -v -t 'presence-bridge/#' -t 'homeassistant/#'",
		addr, host(addr), port(addr))
	readyCtx, readyCancel := context.WithCancel(ctx)
	go func() {
		select {
		case err := <-errs:
			errs <- err
			readyCancel()
		case <-readyCtx.Done():
		}
	}()
	err = sink.WaitReady(readyCtx)
	readyCancel()
	if err != nil {
		select {
		case err := <-errs:
			return errors.Join(err, stop())
		default:
		}
		return stop()
	}
	sink.SetStatus(Source, true, "")
	if o.Listening != nil {
		o.Listening(addr)
	}

	steps := script()
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for n := 0; o.Steps == 0 || n < o.Steps; n++ {
		if n > 0 {
			select {
			case <-ctx.Done():
				return stop()
			case err := <-errs:
				return errors.Join(err, stop())
			case <-tick.C:
			}
		}
		s := steps[n%len(steps)]
		u := users[s.user]
		now := time.Now()
		upd := presence.Update{
			UserID: u.ID, Availability: s.availability, Activity: s.activity, StatusMessage: s.message,
			ObservedAt: now, ExpiresAt: now.Add(time.Hour),
		}
		p.linef("Teams      %-4s is now %s / %s%s", u.Name, s.availability, s.activity, quoted(s.message))
		done := make(chan bridge.Outcome, 1)
		core.Submit(upd, Source, func(out bridge.Outcome) { done <- out })
		select {
		case out := <-done:
			o.Logger.Debug("change settled", "user", u.Name, "outcome", out.String())
		case <-ctx.Done():
			return stop()
		case err := <-errs:
			return errors.Join(err, stop())
		}
	}
	return stop()
}

func quoted(msg string) string {
	if msg == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", msg)
}

func host(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[:i]
	}
	return addr
}

func port(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return "1883"
}

// startBroker starts the embedded broker, open to anyone on addr.
func startBroker(addr string, logger *slog.Logger) (*mochi.Server, string, error) {
	// The embedded broker warns about every connection it closes on the way
	// out; only its errors are worth a line.
	quiet := slog.New(discardBelow{logger.Handler(), slog.LevelError})
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: quiet})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, "", fmt.Errorf("demo: broker: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "demo", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, "", fmt.Errorf("demo: broker listen on %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, "", fmt.Errorf("demo: broker: %w", err)
	}
	return srv, tcp.Address(), nil
}

// discardBelow drops records under a level.
type discardBelow struct {
	slog.Handler
	min slog.Level
}

func (d discardBelow) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= d.min && d.Handler.Enabled(ctx, l)
}

// printer turns what the broker carries into lines a person can read: what
// Home Assistant would see.
type printer struct {
	mu    sync.Mutex
	out   io.Writer
	users []config.User
	avail map[string]string // last availability shown per user
}

func (p *printer) linef(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func (p *printer) watch(srv *mochi.Server) error {
	for i, filter := range []string{"homeassistant/device/+/config", "presence-bridge/#"} {
		if err := srv.Subscribe(filter, i+1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
			p.show(pk.TopicName, pk.Payload)
		}); err != nil {
			return fmt.Errorf("demo: watch %s: %w", filter, err)
		}
	}
	return nil
}

func (p *printer) user(id string) (config.User, bool) {
	for _, u := range p.users {
		if string(u.ID) == id {
			return u, true
		}
	}
	return config.User{}, false
}

func (p *printer) show(topic string, payload []byte) {
	parts := strings.Split(topic, "/")
	switch {
	case len(parts) == 4 && parts[0] == "homeassistant" && parts[1] == "device":
		if len(payload) == 0 {
			p.linef("HA         device %s removed", parts[2])
			return
		}
		var dc discovery.DeviceConfig
		if json.Unmarshal(payload, &dc) != nil {
			return
		}
		var ids []string
		for _, c := range dc.Components {
			ids = append(ids, c.DefaultEntityID)
		}
		slices.Sort(ids)
		p.linef("HA         discovered device %q: %s", dc.Device.Name, strings.Join(ids, ", "))
	case len(parts) == 3 && parts[1] == "bridge" && parts[2] == "state":
		// The goodbye and, as the broker closes, the last will both say
		// offline: show it once.
		if p.availabilityChanged("bridge", string(payload)) {
			p.linef("HA         bridge is %s", payload)
		}
	case len(parts) == 3 && parts[1] == "bridge" && parts[2] != "sync":
		if p.availabilityChanged("bridge/"+parts[2], string(payload)) {
			p.linef("HA         bridge %s = %s", parts[2], payload)
		}
	case len(parts) == 3 && parts[2] == "state":
		u, ok := p.user(parts[1])
		var st struct {
			Availability  string `json:"availability"`
			Activity      string `json:"activity"`
			InCall        string `json:"in_call"`
			Busy          string `json:"busy"`
			StatusMessage string `json:"status_message"`
		}
		if !ok || json.Unmarshal(payload, &st) != nil {
			return
		}
		n := config.Slug(u.Name)
		p.linef("HA         sensor.%s_teams_availability=%s  sensor.%s_teams_activity=%s  binary_sensor.%s_teams_in_call=%s  binary_sensor.%s_teams_busy=%s",
			n, st.Availability, n, st.Activity, n, strings.ToLower(st.InCall), n, strings.ToLower(st.Busy))
	case len(parts) == 3 && parts[2] == "availability":
		if u, ok := p.user(parts[1]); ok && len(payload) > 0 && p.availabilityChanged(string(u.ID), string(payload)) {
			p.linef("HA         %s's entities are %s", u.Name, map[string]string{"online": "available", "offline": "unavailable"}[string(payload)])
		}
	}
}

func (p *printer) availabilityChanged(id, v string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := p.avail[id] != v
	p.avail[id] = v
	return changed
}
