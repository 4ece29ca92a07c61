package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/presence"
)

const (
	bridgeState   = "presence-bridge/bridge/state"
	bridgeConfig  = "homeassistant/device/presence_bridge/config"
	alexConfig    = "homeassistant/device/presence_bridge_6f1c2a3b-1111-2222-3333-444455556666/config"
	alexState     = "presence-bridge/6f1c2a3b-1111-2222-3333-444455556666/state"
	alexAvail     = "presence-bridge/6f1c2a3b-1111-2222-3333-444455556666/availability"
	samConfig     = "homeassistant/device/presence_bridge_0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff/config"
	samState      = "presence-bridge/0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff/state"
	hueModeState  = "presence-bridge/bridge/hue_mode"
	hueModeSet    = "presence-bridge/bridge/hue_mode/set"
	serviceBusBin = "presence-bridge/bridge/service_bus"
)

func stateOf(t *testing.T, payload string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		t.Fatalf("state %q: %v", payload, err)
	}
	return m
}

// A fresh subscriber finds everything retained: online, both configs, the
// state and the availability.
func TestRetainedSeenByFreshSubscriber(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	began := time.Now()
	s := start(t, options(b.URL(), alex))
	s.ready(t)
	t.Logf("ready %v after Run", time.Since(began))
	st := state(alex, presence.AvailabilityBusy, presence.ActivityInACall, 1)
	st.StatusMessage = "Back at 3"
	s.apply(t, st)

	got := snapshot(t, b.URL())
	for _, topic := range []string{bridgeState, bridgeConfig, alexConfig, alexState, alexAvail} {
		if _, ok := got[topic]; !ok {
			t.Errorf("%s not retained; retained: %v", topic, slices.Sorted(mapsKeys(got)))
		}
	}
	if got[bridgeState] != "online" || got[alexAvail] != "online" {
		t.Errorf("bridge %q, availability %q; want online", got[bridgeState], got[alexAvail])
	}
	want := map[string]any{
		"availability": "Busy", "activity": "InACall", "in_call": "ON", "busy": "ON",
		"status_message": "Back at 3", "out_of_office": false, "observed_at": "2026-11-26T20:00:01.000Z", "source": "service_bus",
	}
	if diff := cmp.Diff(want, stateOf(t, got[alexState])); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	var cfg discovery.DeviceConfig
	if err := json.Unmarshal([]byte(got[alexConfig]), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Components["availability"].DefaultEntityID != "sensor.alex_teams_availability" {
		t.Errorf("config: %+v", cfg.Components["availability"])
	}
	if err := discovery.Validate(alexConfig, []byte(got[alexConfig]), nil); err != nil {
		t.Errorf("retained config invalid: %v", err)
	}
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// An expired user is offline in Home Assistant.
func TestExpiredUserOffline(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	s := start(t, options(b.URL(), alex))
	s.ready(t)
	st := state(alex, presence.AvailabilityAway, presence.ActivityAway, 1)
	st.Online = false
	s.apply(t, st)
	if got := snapshot(t, b.URL())[alexAvail]; got != "offline" {
		t.Fatalf("availability = %q, want offline", got)
	}
}

// Apply returns only after the broker acknowledged: with the broker frozen
// (SIGSTOP) it cannot succeed; once thawed it does.
func TestApplyWaitsForPUBACK(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	s := start(t, options(b.URL(), alex))
	s.ready(t)
	pid, err := b.Pid()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	defer func() {
		if !thawed {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	st := state(alex, presence.AvailabilityBusy, presence.ActivityBusy, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = s.Apply(ctx, []bridge.State{st})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply with a frozen broker = %v, want the deadline", err)
	}
	_ = syscall.Kill(pid, syscall.SIGCONT)
	thawed = true
	s.apply(t, st) // the same state: the publication in flight is awaited
	if got := snapshot(t, b.URL())[alexState]; stateOf(t, got)["availability"] != "Busy" {
		t.Fatalf("state after thaw = %q", got)
	}
}

// Killing the broker makes the sink not ready; after the restart everything
// is republished, including the state applied during the outage.
func TestBrokerRestart(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	status := newStatusLog()
	opts := options(b.URL(), alex, sam)
	opts.Status = status
	s := start(t, opts)
	s.ready(t)
	status.waitFor(t, "mqtt ok=true")
	s.apply(t, state(alex, presence.AvailabilityAvailable, presence.ActivityAvailable, 1),
		state(sam, presence.AvailabilityAway, presence.ActivityAway, 1))

	b.Stop()
	status.waitFor(t, "mqtt ok=false")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.WaitReady(cancelled); err == nil {
		t.Fatal("WaitReady returned nil with the broker down")
	}
	newer := state(alex, presence.AvailabilityBusy, presence.ActivityInAMeeting, 2)
	if err := s.Apply(context.Background(), []bridge.State{newer}); !errors.Is(err, discovery.ErrNotConnected) {
		t.Fatalf("Apply while down = %v, want ErrNotConnected", err)
	}

	b.Restart()
	s.ready(t)
	s.apply(t, newer) // what the core does: retry the newest state
	got := snapshot(t, b.URL())
	for _, topic := range []string{bridgeState, bridgeConfig, alexConfig, samConfig, alexAvail} {
		if _, ok := got[topic]; !ok {
			t.Errorf("%s not republished after the restart", topic)
		}
	}
	if a := stateOf(t, got[alexState])["activity"]; a != "InAMeeting" {
		t.Errorf("alex activity = %v, want the update made during the outage", a)
	}
	if a := stateOf(t, got[samState])["availability"]; a != "Away" {
		t.Errorf("sam availability = %v, want Away", a)
	}
	if got[bridgeState] != "online" {
		t.Errorf("bridge state = %q", got[bridgeState])
	}
}

// On reconnect the newest state of every user is published once, and the
// core's retry of that state does not publish it again.
func TestReconnectPublishesEachStateOnce(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	p := newProxy(t, b.Addr())
	status := newStatusLog()
	opts := options(p.url(), alex)
	opts.Status = status
	s := start(t, opts)
	s.ready(t)
	first := state(alex, presence.AvailabilityAvailable, presence.ActivityAvailable, 1)
	s.apply(t, first)
	w := watch(t, b.URL(), "presence-bridge/#")
	w.sync(t)
	w.mu.Lock()
	w.msgs = nil
	w.mu.Unlock()
	// Consume the start-up statuses ("connecting", then ok), so that the
	// wait below sees the loss of this connection, not the first status.
	status.waitFor(t, "mqtt ok=true")

	p.cut()
	status.waitFor(t, "mqtt ok=false")
	// The broker saw the client vanish: the last will says offline.
	w.waitFor(t, "the last will", func(ms []msg) bool { return has(ms, bridgeState, "offline") })
	s.ready(t)
	s.apply(t, first)
	msgs := w.sync(t)
	if n := count(msgs, alexState); n != 1 {
		t.Errorf("state published %d times after reconnect, want 1:\n%s", n, dump(msgs))
	}
	if v, _ := last(msgs, bridgeState); v != "online" {
		t.Errorf("bridge state after reconnect = %q", v)
	}
}

// Configs are republished only when they changed.
func TestConfigsOnlyWhenChanged(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	first := start(t, options(b.URL(), alex))
	first.ready(t)
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}
	w := watch(t, b.URL(), "homeassistant/#")
	w.sync(t)
	w.mu.Lock()
	w.msgs = nil
	w.mu.Unlock()

	second := start(t, options(b.URL(), alex))
	second.ready(t)
	// A PUBACKed state was sent after the configs on the same connection;
	// the marker after it proves nothing earlier is still on its way.
	second.apply(t, state(alex, presence.AvailabilityAway, presence.ActivityAway, 1))
	if msgs := w.sync(t); len(msgs) != 0 {
		t.Fatalf("unchanged configs republished:\n%s", dump(msgs))
	}
	if err := second.stop(t); err != nil {
		t.Fatal(err)
	}

	third := start(t, options(b.URL(), alex, sam))
	third.ready(t)
	third.apply(t, state(sam, presence.AvailabilityAway, presence.ActivityAway, 1))
	msgs := w.sync(t)
	var topics []string
	for _, m := range msgs {
		topics = append(topics, m.topic)
	}
	if diff := cmp.Diff([]string{samConfig}, topics); diff != "" {
		t.Fatalf("config publications with a user added (-want +got):\n%s", diff)
	}
}

// The start-up sweep clears our own configs of users no longer configured,
// with their topics, and leaves everything else alone.
func TestSweepClearsOnlyOurStaleConfigs(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	// A previous run had Alex and Sam.
	old := start(t, options(b.URL(), alex, sam))
	old.ready(t)
	old.apply(t, state(sam, presence.AvailabilityBusy, presence.ActivityBusy, 1))
	if err := old.stop(t); err != nil {
		t.Fatal(err)
	}
	// Foreign configs: another program, another bridge, and one in our
	// topic space whose device is not ours.
	c := newClient(t, b.URL())
	foreign := map[string]string{
		"homeassistant/device/zigbee2mqtt_0x1234/config":                     `{"device":{"identifiers":["zigbee2mqtt_0x1234"]},"origin":{"name":"z2m"},"components":{}}`,
		"homeassistant/device/other_bridge_" + string(sam.ID) + "/config":    `{"device":{"identifiers":["other_bridge_` + string(sam.ID) + `"],"via_device":"other_bridge"}}`,
		"homeassistant/device/presence_bridge_lamp/config":                   `{"device":{"identifiers":["someone_else_lamp"],"via_device":"presence_bridge"}}`,
		"homeassistant/sensor/presence_bridge_" + string(sam.ID) + "/config": `{"unique_id":"x"}`,
	}
	for topic, p := range foreign {
		await(t, c.Publish(topic, 1, true, p), "plant "+topic)
	}

	w := watch(t, b.URL(), "#")
	w.sync(t)
	now := start(t, options(b.URL(), alex))
	now.ready(t)
	w.waitFor(t, "sam's availability cleared", func(ms []msg) bool {
		return has(ms, "presence-bridge/"+string(sam.ID)+"/availability", "")
	})
	got := snapshot(t, b.URL())
	for _, topic := range []string{samConfig, samState, "presence-bridge/" + string(sam.ID) + "/availability"} {
		if v, ok := got[topic]; ok {
			t.Errorf("%s survived the sweep: %q", topic, v)
		}
	}
	for topic, p := range foreign {
		if got[topic] != p {
			t.Errorf("foreign %s = %q, want it untouched", topic, got[topic])
		}
	}
	for _, topic := range []string{alexConfig, bridgeConfig} {
		if _, ok := got[topic]; !ok {
			t.Errorf("%s missing", topic)
		}
	}
}

// Home Assistant's `online` republishes the states after the delay, and the
// callback follows Home Assistant's status.
func TestHomeAssistantOnlineRepublishes(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	haSeen := make(chan bool, 16)
	delays := make(chan struct{}, 4)
	opts := options(b.URL(), alex)
	opts.OnHomeAssistantStatus = func(online bool) { haSeen <- online }
	opts.RepublishDelay = func() time.Duration { delays <- struct{}{}; return 10 * time.Millisecond }
	s := start(t, opts)
	s.ready(t)
	// Connecting says nothing about Home Assistant: its birth message is
	// not retained, so it may well be running (SPEC §5).
	select {
	case v := <-haSeen:
		t.Fatalf("Home Assistant status %v reported before Home Assistant said anything", v)
	default:
	}
	s.apply(t, state(alex, presence.AvailabilityBusy, presence.ActivityPresenting, 1))

	w := watch(t, b.URL(), "presence-bridge/#")
	w.waitFor(t, "retained state", func(ms []msg) bool { return count(ms, alexState) == 1 })
	ha := newClient(t, b.URL())
	await(t, ha.Publish("homeassistant/status", 1, false, "online"), "birth")
	msgs := w.waitFor(t, "state republished", func(ms []msg) bool { return count(ms, alexState) == 2 })
	if p, _ := last(msgs, alexState); stateOf(t, p)["activity"] != "Presenting" {
		t.Errorf("republished state = %s", p)
	}
	if len(delays) != 1 {
		t.Errorf("delay asked %d times, want 1", len(delays))
	}
	if v := <-haSeen; !v {
		t.Error("Home Assistant online not reported")
	}
	await(t, ha.Publish("homeassistant/status", 1, false, "offline"), "will")
	if v := <-haSeen; v {
		t.Error("Home Assistant offline not reported")
	}
}

// The hue_mode select: a command changes the mode and the state follows
// the mode in force; a bad command leaves it.
func TestHueModeRoundTrip(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	mode := &modeControl{mode: config.HueModeAuto, calls: make(chan string, 4)}
	opts := options(b.URL(), alex)
	opts.Mode = mode
	s := start(t, opts)
	s.ready(t)
	w := watch(t, b.URL(), "presence-bridge/bridge/#")
	w.waitFor(t, "initial mode", func(ms []msg) bool { return has(ms, hueModeState, "auto") })
	var cfg discovery.DeviceConfig
	if err := json.Unmarshal([]byte(snapshot(t, b.URL())[bridgeConfig]), &cfg); err != nil {
		t.Fatal(err)
	}
	if sel := cfg.Components["hue_mode"]; sel.CommandTopic != hueModeSet || sel.StateTopic != hueModeState {
		t.Fatalf("hue_mode component = %+v", sel)
	}

	ha := newClient(t, b.URL())
	for _, tc := range []struct{ send, want string }{
		{"always", "always"},
		{"party", "always"}, // refused: the state shows the mode in force
		{"off", "off"},
	} {
		before := count(w.sync(t), hueModeState)
		await(t, ha.Publish(hueModeSet, 1, false, tc.send), "command")
		if got := <-mode.calls; got != tc.send {
			t.Errorf("SetMode(%q), want %q", got, tc.send)
		}
		msgs := w.waitFor(t, "mode state after "+tc.send, func(ms []msg) bool { return count(ms, hueModeState) > before })
		if v, _ := last(msgs, hueModeState); v != tc.want {
			t.Errorf("after %q the mode state is %q, want %q", tc.send, v, tc.want)
		}
	}
}

// Without Hue there is no hue_mode select, and a retained one from a run
// with Hue is removed from Home Assistant.
func TestNoHueModeWithoutHue(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	opts := options(b.URL(), alex)
	opts.Mode = &modeControl{mode: "auto", calls: make(chan string, 1)}
	withHue := start(t, opts)
	withHue.ready(t)
	if err := withHue.stop(t); err != nil {
		t.Fatal(err)
	}
	w := watch(t, b.URL(), bridgeConfig)
	w.sync(t)
	without := start(t, options(b.URL(), alex))
	without.ready(t)
	w.waitFor(t, "two bridge configs", func(ms []msg) bool { return count(ms, bridgeConfig) >= 3 })
	var msgs []msg
	for _, m := range w.sync(t) {
		if m.topic == bridgeConfig {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) != 3 {
		t.Fatalf("bridge configs: want the retained one, the removal and the new one:\n%s", dump(msgs))
	}
	var removal, final map[string]map[string]map[string]any
	_ = json.Unmarshal([]byte(msgs[1].payload), &removal)
	_ = json.Unmarshal([]byte(msgs[2].payload), &final)
	if diff := cmp.Diff(map[string]any{"platform": "select"}, removal["components"]["hue_mode"]); diff != "" {
		t.Errorf("removal of hue_mode (-want +got):\n%s", diff)
	}
	if _, ok := final["components"]["hue_mode"]; ok {
		t.Errorf("hue_mode still in the final config: %s", msgs[2].payload)
	}
}

func TestServiceBusSensor(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	s := start(t, options(b.URL(), alex))
	s.SetStatus("service_bus", false, "connecting") // before the connection: published on connect
	s.ready(t)
	w := watch(t, b.URL(), serviceBusBin)
	w.waitFor(t, "OFF", func(ms []msg) bool { return has(ms, serviceBusBin, "OFF") })
	s.SetStatus("mqtt", false, "ignored")
	s.SetStatus("service_bus", true, "")
	w.waitFor(t, "ON", func(ms []msg) bool { return has(ms, serviceBusBin, "ON") })
}

// Cancelling Run publishes offline (retained) and returns promptly.
func TestShutdownPublishesOffline(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	s := start(t, options(b.URL(), alex))
	s.ready(t)
	began := time.Now()
	if err := s.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	t.Logf("Run returned %v after cancel", time.Since(began))
	if got := snapshot(t, b.URL())[bridgeState]; got != "offline" {
		t.Fatalf("bridge state after shutdown = %q, want offline", got)
	}
}

// A broker refusing the credentials is a clear error from Run, not a
// silent retry loop; the right ones work.
func TestCredentials(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t, mosquitto.WithCredentials("bridge", "s3cret"))
	t.Run("refused", func(t *testing.T) {
		opts := options(b.URL(), alex)
		opts.Config.Username, opts.Config.Password = "bridge", config.Secret("wrong")
		status := newStatusLog()
		opts.Status = status
		s := start(t, opts)
		select {
		case err := <-s.done:
			s.done <- err
			if !errors.Is(err, discovery.ErrRefused) {
				t.Fatalf("Run = %v, want ErrRefused", err)
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Fatalf("error shows the password: %v", err)
			}
		case <-time.After(wait):
			t.Fatal("Run kept retrying refused credentials")
		}
		status.waitFor(t, "mqtt ok=false "+discovery.ErrRefused.Error())
	})
	t.Run("accepted", func(t *testing.T) {
		opts := options(b.URL(), alex)
		opts.Config.Username, opts.Config.Password = "bridge", config.Secret("s3cret")
		start(t, opts).ready(t)
	})
}

// ssl:// with a private CA given as ca_file.
func TestTLSWithCAFile(t *testing.T) {
	integration(t)
	caPEM, certPEM, keyPEM := selfSigned(t)
	b := mosquitto.Start(t, mosquitto.WithTLS(certPEM, keyPEM))
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("without ca_file the certificate is not trusted", func(t *testing.T) {
		status := newStatusLog()
		opts := options(b.URL(), alex)
		opts.Status = status
		start(t, opts)
		status.waitFor(t, "certificate signed by unknown authority")
	})
	t.Run("with ca_file", func(t *testing.T) {
		opts := options(b.URL(), alex)
		opts.Config.CAFile = caFile
		s := start(t, opts)
		s.ready(t)
		s.apply(t, state(alex, presence.AvailabilityAvailable, presence.ActivityAvailable, 1))
	})
}

func TestNewRejects(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts func(o *discovery.Options)
	}{
		{"no url", func(o *discovery.Options) { o.Config.URL = "" }},
		{"unknown scheme", func(o *discovery.Options) { o.Config.URL = "http://x" }},
		{"missing ca_file", func(o *discovery.Options) { o.Config.URL = "ssl://x:8883"; o.Config.CAFile = "/nonexistent/ca.pem" }},
		{"ca_file without certificate", func(o *discovery.Options) { o.Config.URL = "ssl://x:8883"; o.Config.CAFile = bad }},
		{"wildcard in base topic", func(o *discovery.Options) { o.Config.BaseTopic = "a/+" }},
		{"user id unfit for a topic", func(o *discovery.Options) { o.Users = []config.User{{ID: "alex@contoso.com", Name: "Alex"}} }},
		{"bad source name", func(o *discovery.Options) { o.Sources = []string{"service bus"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options("tcp://127.0.0.1:1", alex)
			tc.opts(&o)
			if _, err := discovery.New(o); err == nil {
				t.Fatal("New accepted bad options")
			}
		})
	}
}

// Two instances of one home on mosquitto: when one stops, the bridge state
// the other shares stays online; two bridges configured with one client id
// take the session from each other only a few times.
func TestInstancesShareTheBridgeState(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	first, second := options(b.URL(), alex), options(b.URL(), alex)
	first.Config.ClientID, second.Config.ClientID = "presence-bridge-a", "presence-bridge-b"
	a := start(t, first)
	c := start(t, second)
	a.ready(t)
	c.ready(t)
	w := watch(t, b.URL(), bridgeState)
	w.sync(t)
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	msgs := w.waitFor(t, "online again", func(ms []msg) bool {
		i := slices.IndexFunc(ms, func(m msg) bool { return m.topic == bridgeState && m.payload == "offline" })
		return i >= 0 && slices.ContainsFunc(ms[i:], func(m msg) bool { return m.topic == bridgeState && m.payload == "online" })
	})
	if got := snapshot(t, b.URL())[bridgeState]; got != "online" {
		t.Errorf("retained bridge state = %q after one instance stopped, want online:\n%s", got, dump(msgs))
	}
}

func TestOneClientIDTwiceDoesNotStorm(t *testing.T) {
	integration(t)
	b := mosquitto.Start(t)
	a := start(t, options(b.URL(), alex))
	a.ready(t)
	w := watch(t, b.URL(), bridgeState)
	w.sync(t)
	c := start(t, options(b.URL(), alex)) // the same client id
	time.Sleep(2 * time.Second)           // a window to count connections in, not a wait for an event
	onlines := count(w.sync(t), bridgeState)
	_ = c.stop(t)
	_ = a.stop(t)
	// Each connection publishes online, each takeover fires the will.
	if onlines > 20 {
		t.Errorf("%d bridge state messages in 2 s: the two bridges keep knocking each other off", onlines)
	}
	t.Logf("%d bridge state messages in 2 s", onlines)
}
