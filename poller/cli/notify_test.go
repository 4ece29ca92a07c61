package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// TestNotificationsThroughTheDaemon wires change notifications as serve
// does, with the Service Bus stand-in: a sign-in subscribes the person
// (the fake Graph validated the daemon's webhook at public_url); a change
// in the fake Graph is pushed, and its message, with Graph's sequence
// number, is on the person's topic without the refresh loop running; the
// accounts listing shows the subscription; removing the person deletes it
// at Graph first.
func TestNotificationsThroughTheDaemon(t *testing.T) {
	p := person(1, "Alex")
	r := newRig(t, rigOptions{people: []entratest.Person{p}, broker: true, notifications: true})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		r.d.Subscriptions.Run(ctx)
	}()
	defer func() { cancel(); <-runDone }()
	r.graph.SetPresence(p.ObjectID, graphtest.Presence{Availability: "Available", Activity: "Available"})
	if status, page := r.signIn(t, p.ObjectID); status != http.StatusOK {
		t.Fatalf("sign-in %d:\n%s", status, page)
	}
	var sub graphtest.Subscription
	waitFor(t, ctx, "a subscription at Graph", func() bool {
		var ok bool
		sub, ok = r.graph.SubscriptionOf(p.ObjectID)
		return ok
	})
	if sub.NotificationURL != r.srv.URL+"/notifications" || !sub.IncludeData {
		t.Fatalf("subscription %+v", sub)
	}
	waitFor(t, ctx, "the subscription recorded", func() bool {
		rec, _, _ := r.d.Store.Subscription(ctx, p.ObjectID)
		return rec.Healthy(time.Now())
	})
	r.graph.SetPresence(p.ObjectID, graphtest.Presence{Availability: "Busy", Activity: "InACall"})
	c, err := sbtest.NewClient(r.sb.ConnectionStringWithKey("RootManageSharedAccessKey", manageKey))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	msgs, err := sbtest.Drain(ctx, c, string(p.ObjectID)+"/Subscriptions/home", 0, 2)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("drained %d messages: %v", len(msgs), err)
	}
	u, err := presence.Decode(msgs[1].Body, presence.Meta{})
	if err != nil || u.Availability != presence.AvailabilityBusy || u.Activity != presence.ActivityInACall || u.Sequence == "" {
		t.Fatalf("second message %+v %v", u, err)
	}
	status, body := r.api(t, http.MethodGet, "/api/accounts")
	var list []poller.AccountView
	if status != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 || !strings.HasPrefix(list[0].Notifications, "subscribed until") {
		t.Fatalf("accounts %d %s", status, body)
	}
	if status, body := r.api(t, http.MethodDelete, "/api/accounts/"+string(p.ObjectID)); status != 200 {
		t.Fatalf("remove %d %s", status, body)
	}
	if _, ok := r.graph.SubscriptionOf(p.ObjectID); ok {
		t.Error("the subscription outlived its person")
	}
	r.noSecrets(t, "the logs", r.logs.String())
	if strings.Contains(r.logs.String(), sub.ClientState) {
		t.Error("the clientState was logged")
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("no %s", what)
		}
	}
}
