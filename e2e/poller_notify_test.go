package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// notifyRig is the built poller with change notifications on, between the
// fake Entra, the fake Graph (which calls the poller's webhook), the
// Service Bus stand-in, and the built bridge on a real mosquitto.
type notifyRig struct {
	entra  *entratest.Server
	graph  *graphtest.Server
	poller *pollerProc
	ha     *watcher
	user   bridgeUser
}

type notifyRigOptions struct {
	notifications bool
	pollInterval  string
	delay         time.Duration // the fake's notification delay (0: Graph's 500 ms)
}

func newNotifyRig(tb testing.TB, ctx context.Context, o notifyRigOptions) *notifyRig {
	tb.Helper()
	requirePoller(tb)
	const manageKey = "bWFuYWdlLWtleS1lMmUtdGVzdHM="
	sb := sbtest.Start(tb, sbtest.Options{Keys: map[string]string{"RootManageSharedAccessKey": manageKey}})
	mgmt := sbtest.NewManagement(tb, sbtest.ManagementOptions{Broker: sb, ManageKeys: map[string]string{"RootManageSharedAccessKey": manageKey}})
	alex := entratest.Person{ObjectID: alexID, TenantID: "72f988bf-0000-0000-0000-000000000000", Name: "Alex Doe", UPN: "alex@contoso.com"}
	const clientID, clientSecret = "00000000-1111-2222-3333-444444444444", "e2e-client-secret-0123456789"
	r := &notifyRig{}
	r.entra = entratest.New(entratest.Options{ClientID: clientID, ClientSecret: clientSecret, People: []entratest.Person{alex}})
	tb.Cleanup(r.entra.Close)
	r.graph = graphtest.New(graphtest.Options{Authorize: r.entra.AccessTokenOwner, ValidationToken: r.entra.ChangeNotificationToken, NotificationDelay: o.delay})
	tb.Cleanup(r.graph.Close)
	r.graph.SetPresence(alexID, graphtest.Presence{Availability: "Available", Activity: "Available"})
	mq := mosquitto.Start(tb)
	listen := freeAddr(tb)
	r.poller = startPoller(tb, ctx, fmt.Sprintf(`
listen: %s
public_url: http://%s
data_dir: %s
secret_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
api_key: e2e-api-key-0123456789
entra:
  authority: %s
  client_id: %s
  client_secret: ${POLLER_CLIENT_SECRET}
graph:
  endpoint: %s
  notifications: %v
  poll_interval: %s
  reconcile_interval: 10m
  heartbeat: 10m
service_bus:
  namespaces:
    - connection_string: ${SB}
      admin_endpoint: %s
  subscriptions: [home]
`, listen, listen, filepath.Join(tb.TempDir(), "data"), r.entra.Authority("organizations"), clientID, r.graph.URL(), o.notifications, o.pollInterval, mgmt.URL()),
		string(r.entra.CertificatePEM()),
		"POLLER_CLIENT_SECRET="+clientSecret,
		"SB="+sb.ConnectionStringWithKey("RootManageSharedAccessKey", manageKey))
	r.user = signIn(tb, ctx, r.poller.url, r.entra, alexID)
	r.ha = watch(tb, mq.URL(), "presence-bridge/#")
	startBridge(tb, fmt.Sprintf(`
health_addr: ""
users:
  - id: %s
    name: %q
    connection_string: ${ALEX_SB}
service_bus:
  subscription: home
mqtt:
  url: %s
`, r.user.ID, r.user.Name, mq.URL()), "ALEX_SB="+r.user.ConnectionString)
	r.ha.waitFor(tb, ctx, "alex available on MQTT", func(ms []received) bool {
		return has(ms, "presence-bridge/"+alexID+"/state", `"availability":"Available"`)
	})
	if o.notifications {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, ok := r.graph.SubscriptionOf(alexID); ok && strings.Contains(r.poller.logs.String(), `msg="subscriptions maintained"`) {
				break
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				tb.Fatalf("the poller did not subscribe:\n%s", r.poller.logs.String())
			}
		}
	}
	return r
}

// TestPollerNotificationsToHomeAssistant: with change notifications on and
// polling every 10 minutes, a presence change in the fake Graph reaches the
// bridge's state topic on MQTT through the built poller and bridge within
// seconds: the fake validated the poller's webhook, subscribed the person
// at sign-in, and pushed the change encrypted to the poller's certificate.
func TestPollerNotificationsToHomeAssistant(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*wait)
	defer cancel()
	r := newNotifyRig(t, ctx, notifyRigOptions{notifications: true, pollInterval: "10m"})
	r.graph.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "InACall"})
	began := time.Now()
	r.ha.waitFor(t, ctx, "alex in a call on MQTT", func(ms []received) bool {
		return has(ms, "presence-bridge/"+alexID+"/state", `"activity":"InACall"`)
	})
	// Polling is every 10 minutes: arriving within the test's deadline
	// means the change came by notification (timing is not the test).
	t.Logf("change in Graph to state on MQTT: %v", time.Since(began))
	for _, d := range r.graph.Deliveries() {
		if d.Status != 202 {
			t.Errorf("a delivery was answered %d", d.Status)
		}
	}
	code, took := r.poller.stop(t)
	if code != 0 || took > 5*time.Second {
		t.Errorf("SIGTERM: exit %d after %v, want 0 within 5 s", code, took)
	}
	for _, s := range r.entra.Secrets() {
		if strings.Contains(r.poller.logs.String(), s) {
			t.Errorf("the poller logged a secret (%.12s…)", s)
		}
	}
}
