package discovery_test

// Tests of the sink's connection lifecycle and durable path against the
// in-memory broker of discoverytest: they need nothing external and run in
// `go test -short`. The same behaviours are tested against real mosquitto in
// sink_test.go.

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
	"github.com/presence-bridge/presence-bridge/discovery/discoverytest"
	"github.com/presence-bridge/presence-bridge/presence"
)

func fakeOptions(b *discoverytest.Broker, users ...config.User) discovery.Options {
	o := options("tcp://fake:1883", users...)
	o.Dial = b.Dial
	return o
}

// TestFakeApplyWaitsForPUBACK: Apply returns only once the broker has
// acknowledged the state, and the retained state is the one applied.
func TestFakeApplyWaitsForPUBACK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		s := start(t, fakeOptions(b, alex))
		s.ready(t)
		b.HoldAcks()
		done := make(chan error, 1)
		go func() {
			done <- s.Apply(context.Background(), []bridge.State{state(alex, presence.AvailabilityBusy, presence.ActivityInACall, 1)})
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Apply returned %v before the PUBACK", err)
		default:
		}
		b.ReleaseAcks()
		synctest.Wait()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if p, _ := b.Retained(alexState); stateOf(t, p)["activity"] != "InACall" {
			t.Errorf("retained state %s", p)
		}
		_ = s.stop(t)
	})
}

// TestFakeApplyFailsWhenTheConnectionDies: states in flight when the
// connection is lost are reported as not durable (the core retries them),
// and WaitReady blocks until the sink is back.
func TestFakeApplyFailsWhenTheConnectionDies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		s := start(t, fakeOptions(b, alex))
		s.ready(t)
		b.HoldAcks()
		done := make(chan error, 1)
		go func() {
			done <- s.Apply(context.Background(), []bridge.State{state(alex, presence.AvailabilityBusy, presence.ActivityInACall, 1)})
		}()
		synctest.Wait()
		b.SetDown(true)
		b.KickAll()
		synctest.Wait()
		synctest.Wait()
		if err := <-done; !errors.Is(err, discovery.ErrNotConnected) {
			t.Fatalf("Apply after the loss = %v, want ErrNotConnected", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.WaitReady(ctx); err == nil {
			t.Fatal("WaitReady returned while the broker is down")
		}
		cancel()
		b.ReleaseAcks()
		b.SetDown(false)
		if err := s.WaitReady(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The state given before the loss is published on the new
		// connection.
		if p, _ := b.Retained(alexState); stateOf(t, p)["activity"] != "InACall" {
			t.Errorf("after reconnect the retained state is %q", p)
		}
		_ = s.stop(t)
	})
}

// TestSetStatusNeverWaitsForThePublisher: while a publication blocks (paho
// blocks up to its write timeout on a full queue), SetStatus (called from
// the health reporter's goroutine, which is the Service Bus loop's) and
// WaitReady return at once.
func TestSetStatusNeverWaitsForThePublisher(t *testing.T) {
	// Not in a bubble: a goroutine waiting on a mutex is not durably
	// blocked, so synctest.Wait would wait for the publication forever.
	b := discoverytest.New()
	s := start(t, fakeOptions(b, alex))
	s.ready(t)
	release := b.BlockPublishes()
	defer release()
	applying := make(chan struct{})
	go func() {
		close(applying)
		_ = s.Apply(context.Background(), []bridge.State{state(alex, presence.AvailabilityBusy, presence.ActivityInACall, 1)})
	}()
	<-applying
	time.Sleep(50 * time.Millisecond) // let Apply get stuck in Publish (a blocked call can't be observed)
	returned := make(chan struct{})
	go func() {
		s.SetStatus("service_bus", false, "down")
		s.SetStatus("service_bus", true, "")
		_ = s.WaitReady(context.Background())
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("SetStatus or WaitReady blocked behind a publication")
	}
	release()
	_ = s.stop(t)
}

// TestOlderStateNeverReplacesNewer: the sink keeps its promise that
// versions never go backwards, even if it is handed an older state.
func TestOlderStateNeverReplacesNewer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		s := start(t, fakeOptions(b, alex))
		s.ready(t)
		s.apply(t, state(alex, presence.AvailabilityBusy, presence.ActivityInACall, 2))
		old := state(alex, presence.AvailabilityAvailable, presence.ActivityAvailable, 1)
		if err := s.Apply(context.Background(), []bridge.State{old}); err != nil {
			t.Fatal(err)
		}
		if p, _ := b.Retained(alexState); stateOf(t, p)["availability"] != "Busy" {
			t.Errorf("retained state after an older one = %s, want the newer Busy", p)
		}
		_ = s.stop(t)
	})
}

// TestLostConnectionBacksOff: a connection that is lost is not redialled at
// once; the wait grows while connections die young and starts small again
// after one that lasted.
func TestLostConnectionBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		s := start(t, fakeOptions(b, alex))
		s.ready(t)
		// A stable connection, then a loss: back within a second.
		time.Sleep(2 * time.Minute)
		b.KickAll()
		synctest.Wait()
		began := time.Now()
		s.ready(t)
		if d := time.Since(began); d > time.Second {
			t.Errorf("after a stable connection the sink came back after %v, want ≤ 1s", d)
		}
		// Connections killed as soon as they are up: the gaps grow.
		var gaps []time.Duration
		for range 4 {
			b.KickAll()
			synctest.Wait()
			began := time.Now()
			s.ready(t)
			gaps = append(gaps, time.Since(began))
		}
		if gaps[len(gaps)-1] < 3*time.Second || gaps[len(gaps)-1] < 2*gaps[0] {
			t.Errorf("reconnect waits %v do not grow", gaps)
		}
		_ = s.stop(t)
	})
}

// TestTwoBridgesWithOneClientIDDoNotStorm: two sinks with the same client
// id take the session from each other; with the back-off they do so a few
// times, not hundreds of times a second (measured before: 107–372
// connections in 2 s against mosquitto).
func TestTwoBridgesWithOneClientIDDoNotStorm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		b.SetDialLimit(200)
		a := start(t, fakeOptions(b, alex))
		c := start(t, fakeOptions(b, alex))
		time.Sleep(10 * time.Second)
		if n := b.Dials(); n > 25 {
			t.Errorf("%d connections in 10 s", n)
		}
		_ = a.stop(t)
		_ = c.stop(t)
	})
}

// TestAnotherInstanceStoppingLeavesUsOnline: two instances of one home (a
// hot standby) share the bridge state topic; when one stops it publishes
// offline, and the other, still connected, puts online back.
func TestAnotherInstanceStoppingLeavesUsOnline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		first := fakeOptions(b, alex)
		first.Config.ClientID = "presence-bridge-a"
		second := fakeOptions(b, alex)
		second.Config.ClientID = "presence-bridge-b"
		a := start(t, first)
		c := start(t, second)
		a.ready(t)
		c.ready(t)
		if err := a.stop(t); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if p, _ := b.Retained(bridgeState); p != "online" {
			t.Errorf("bridge state after one of two instances stopped = %q, want online", p)
		}
		// And the last one to stop leaves it offline.
		if err := c.stop(t); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if p, _ := b.Retained(bridgeState); p != "offline" {
			t.Errorf("bridge state after both stopped = %q, want offline", p)
		}
	})
}

// TestHueModeRestoredFromRetainedState: the mode selected in Home Assistant
// survives a restart of the bridge (SPEC §5).
func TestHueModeRestoredFromRetainedState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		b.Publish(hueModeState, "off", true)
		mode := &modeControl{mode: config.HueModeAuto, calls: make(chan string, 4)}
		opts := fakeOptions(b, alex)
		opts.Mode = mode
		s := start(t, opts)
		s.ready(t)
		if got := mode.Mode(); got != config.HueModeOff {
			t.Errorf("mode after start = %q, want the retained selection off", got)
		}
		if p, _ := b.Retained(hueModeState); p != "off" {
			t.Errorf("hue_mode state = %q", p)
		}
		// A reconnect does not restore again: the retained state is ours.
		_ = mode.SetMode(config.HueModeAlways)
		<-mode.calls
		<-mode.calls
		b.KickAll()
		synctest.Wait()
		s.ready(t)
		if got := mode.Mode(); got != config.HueModeAlways {
			t.Errorf("mode after a reconnect = %q, want always", got)
		}
		_ = s.stop(t)
	})
}

// TestHomeAssistantStatusOnlyFromItsTopic: a connect says nothing about Home
// Assistant; only homeassistant/status does.
func TestHomeAssistantStatusOnlyFromItsTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		seen := make(chan bool, 8)
		opts := fakeOptions(b, alex)
		opts.OnHomeAssistantStatus = func(online bool) { seen <- online }
		s := start(t, opts)
		s.ready(t)
		b.KickAll()
		synctest.Wait()
		s.ready(t)
		synctest.Wait()
		if len(seen) != 0 {
			t.Fatalf("%d Home Assistant statuses reported without a message from it", len(seen))
		}
		b.Publish("homeassistant/status", "offline", false)
		synctest.Wait()
		if v := <-seen; v {
			t.Error("offline reported as online")
		}
		_ = s.stop(t)
	})
}
