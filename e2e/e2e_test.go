package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const (
	alexID = "6f1c2a3b-1111-2222-3333-444455556666"
	samID  = "0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff"
)

// mainQueue is the entity itself, not one of its sub-queues.
const mainQueue azservicebus.SubQueue = 0

// waitCount polls the stand-in until entity holds want messages (locked
// ones included).
func waitCount(t *testing.T, ctx context.Context, sb *sbtest.Broker, entity string, want int) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if n := sb.Count(ctx, entity, mainQueue); n == want {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s never held %d messages", entity, want)
		}
	}
}

// TestServiceBusToHomeAssistant runs the built binary between the Service
// Bus stand-in and mosquitto: presence reaches the retained state topics; a
// message is completed only after the broker's PUBACK reached the bridge;
// SIGTERM publishes offline and exits 0 within 5 s.
func TestServiceBusToHomeAssistant(t *testing.T) {
	requireBinary(t)
	sb := sbtest.Start(t, sbtest.Options{Subscriptions: []string{alexID + "/home", samID + "/home"}})
	mq := mosquitto.Start(t)
	proxy := newHoldProxy(t, mq.Addr())
	ctx, cancel := context.WithTimeout(t.Context(), 2*wait)
	defer cancel()

	ha := watch(t, mq.URL(), "#")
	bridge := startBridge(t, fmt.Sprintf(`
health_addr: ""
users:
  - {id: %s, name: Alex}
  - {id: %s, name: Sam}
service_bus:
  connection_string: ${SB}
  subscription: home
mqtt:
  url: %s
`, alexID, samID, proxy.url()), "SB="+sb.ConnectionString())

	ha.waitFor(t, ctx, "online and both users' discovery", func(ms []received) bool {
		return has(ms, "presence-bridge/bridge/state", "online") &&
			has(ms, "homeassistant/device/presence_bridge_"+alexID+"/config", `"sensor.alex_teams_availability"`) &&
			has(ms, "homeassistant/device/presence_bridge_"+samID+"/config", `"sensor.sam_teams_availability"`)
	})

	t.Run("presence reaches home assistant", func(t *testing.T) {
		sb.Send(ctx, alexID, body(t, presence.Update{
			UserID: alexID, Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall,
			StatusMessage: "Back at 3", ObservedAt: time.Now().UTC(),
		}))
		ha.waitFor(t, ctx, "alex in a call", func(ms []received) bool {
			return has(ms, "presence-bridge/"+alexID+"/state", `"activity":"InACall","in_call":"ON","busy":"ON","status_message":"Back at 3"`) &&
				has(ms, "presence-bridge/"+alexID+"/availability", "online")
		})
		waitCount(t, ctx, sb, alexID+"/Subscriptions/home", 0)
	})

	t.Run("completed only after PUBACK", func(t *testing.T) {
		proxy.hold() // the broker's PUBACKs no longer reach the bridge
		sb.Send(ctx, samID, body(t, presence.Update{
			UserID: samID, Availability: presence.AvailabilityDoNotDisturb, Activity: presence.ActivityPresenting,
			ObservedAt: time.Now().UTC(),
		}))
		// The broker has the state (Home Assistant sees it) and has sent
		// its PUBACK, which the proxy keeps back...
		ha.waitFor(t, ctx, "sam presenting", func(ms []received) bool {
			return has(ms, "presence-bridge/"+samID+"/state", `"Presenting"`)
		})
		// ...so the message is still in the subscription, locked by the
		// bridge, not completed.
		if n := sb.Count(ctx, samID+"/Subscriptions/home", mainQueue); n != 1 {
			t.Fatalf("subscription holds %d messages while the PUBACK is held back, want 1 (not completed)", n)
		}
		proxy.release()
		waitCount(t, ctx, sb, samID+"/Subscriptions/home", 0)
	})

	t.Run("SIGTERM publishes offline and exits 0", func(t *testing.T) {
		code, took := bridge.stop(t)
		if code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		if took > 5*time.Second {
			t.Errorf("exit took %v, SPEC §6 allows 5 s", took)
		}
		t.Logf("stopped in %v", took)
		ha.waitFor(t, ctx, "bridge offline", func(ms []received) bool {
			return len(ms) > 0 && ms[len(ms)-1].topic == "presence-bridge/bridge/state" && ms[len(ms)-1].payload == "offline"
		})
	})
}

// TestMQTTOutageHoldsMessages: with the broker down the bridge takes no
// message (nothing is completed or dead-lettered); after the broker comes
// back, the newest state is published and everything is completed.
func TestMQTTOutageHoldsMessages(t *testing.T) {
	requireBinary(t)
	sb := sbtest.Start(t, sbtest.Options{Subscriptions: []string{alexID + "/home"}})
	mq := mosquitto.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*wait)
	defer cancel()
	startBridge(t, fmt.Sprintf(`
health_addr: ""
users:
  - {id: %s, name: Alex}
service_bus:
  connection_string: ${SB}
  subscription: home
mqtt:
  url: %s
`, alexID, mq.URL()), "SB="+sb.ConnectionString())
	ha := watch(t, mq.URL(), "presence-bridge/bridge/state")
	ha.waitFor(t, ctx, "online", func(ms []received) bool { return has(ms, "presence-bridge/bridge/state", "online") })

	mq.Stop()
	start := time.Now().UTC()
	for i, a := range []presence.Availability{presence.AvailabilityAway, presence.AvailabilityBusy, presence.AvailabilityDoNotDisturb} {
		sb.Send(ctx, alexID, body(t, presence.Update{UserID: alexID, Availability: a, ObservedAt: start.Add(time.Duration(i) * time.Second)}))
	}
	entity := alexID + "/Subscriptions/home"
	if n := sb.Count(ctx, entity, mainQueue); n != 3 {
		t.Fatalf("%d messages in the subscription during the outage, want all 3 kept", n)
	}
	mq.Restart()
	w := watch(t, mq.URL(), "presence-bridge/#")
	w.waitFor(t, ctx, "newest state after the outage", func(ms []received) bool {
		return has(ms, "presence-bridge/"+alexID+"/state", `"availability":"DoNotDisturb"`)
	})
	waitCount(t, ctx, sb, entity, 0)
	if n := sb.Count(ctx, entity, azservicebus.SubQueueDeadLetter); n != 0 {
		t.Fatalf("%d messages dead-lettered by an MQTT outage", n)
	}
}
