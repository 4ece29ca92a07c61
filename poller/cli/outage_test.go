package cli

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// TestOutageAndRestartKeepOrder: changes read while Service Bus is down stay
// pending; the poller restarts (a new daemon on the same store) before
// Service Bus returns; once it is back every change reaches the
// subscription once, in the order it happened.
func TestOutageAndRestartKeepOrder(t *testing.T) {
	p := person(20, "Ola")
	r := newRig(t, rigOptions{people: []entratest.Person{p}, broker: true})
	ctx := t.Context()
	r.graph.SetPresence(p.ObjectID, graphtest.Presence{Availability: "Available", Activity: "Available"})
	if status, page := r.signIn(t, p.ObjectID); status != http.StatusOK {
		t.Fatalf("sign-in %d:\n%s", status, page)
	}

	r.sb.Kill()
	for _, a := range []string{"Busy", "DoNotDisturb"} {
		r.graph.SetPresence(p.ObjectID, graphtest.Presence{Availability: a, Activity: a})
		s, _ := r.d.Engine.Cycle(ctx)
		if s.Changes != 1 || s.Published != 0 || s.Pending == 0 {
			t.Fatalf("cycle during the outage: %+v", s)
		}
	}
	rec, _, _ := r.d.Store.Presence(ctx, p.ObjectID)
	if len(rec.Pending) != 2 {
		t.Fatalf("%d pending, want 2", len(rec.Pending))
	}

	// The poller restarts on the same store while Service Bus is still down.
	r.d.Store.Close()
	d2, err := NewDaemon(DaemonOptions{Config: r.cfg, HTTPClient: r.entra.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Store.Close()
	r.sb.Restart()
	s, err := d2.Engine.Cycle(ctx)
	if err != nil || s.Published != 2 {
		t.Fatalf("cycle after the outage: %+v %v", s, err)
	}

	c, err := sbtest.NewClient(r.sb.ConnectionStringWithKey("RootManageSharedAccessKey", manageKey))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msgs, err := sbtest.Drain(dctx, c, string(p.ObjectID)+"/Subscriptions/home", 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		u, err := presence.Decode(m.Body, presence.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, u.Availability.String())
	}
	if strings.Join(got, ",") != "Available,Busy,DoNotDisturb" {
		t.Errorf("subscription got %v, want Available,Busy,DoNotDisturb", got)
	}
	if n := r.sb.Count(ctx, string(p.ObjectID)+"/Subscriptions/home", 0); n != 0 {
		t.Errorf("%d more messages: a change went out twice", n)
	}
}
