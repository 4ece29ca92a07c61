package poller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

const (
	alex   = presence.UserID("6f1c2a3b-1111-2222-3333-444455556666")
	sam    = presence.UserID("0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff")
	tenant = "72f988bf-0000-0000-0000-000000000000"
)

type rig struct {
	store *memStore
	graph *reader
	tok   *tokens
	pub   *publisher
	eng   *poller.Engine
}

func newRig(t *testing.T, people ...presence.UserID) *rig {
	t.Helper()
	r := &rig{store: newMemStore(), graph: &reader{}, tok: &tokens{revoked: map[presence.UserID]bool{}}, pub: &publisher{}}
	r.eng = poller.New(poller.Options{Store: r.store, Reader: r.graph, Publisher: r.pub, Tokens: r.tok, Heartbeat: 15 * time.Minute, Open: openJSON})
	for _, id := range people {
		if err := r.store.PutAccount(t.Context(), poller.Account{UserID: id, TenantID: tenant, UPN: "x@contoso.com", Namespace: "ns", Topic: string(id), State: poller.StateActive}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func update(id presence.UserID, a presence.Availability, act presence.Activity, seq int) presence.Update {
	return presence.Update{UserID: id, Availability: a, Activity: act, Sequence: fmt.Sprintf("6386800000000000%02d", seq)}
}

func (r *rig) cycle(t *testing.T) poller.Summary {
	t.Helper()
	s, err := r.eng.Cycle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func decode(t *testing.T, m poller.Message) presence.Update {
	t.Helper()
	u, err := presence.Decode(m.Body, presence.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestChangePublishedNoChangeWritesNothing: the first read publishes; a
// cycle with no change publishes nothing and writes nothing to the store;
// a change publishes the v1 body with the id <objectId>:<observedAt ms>.
func TestChangePublishedNoChangeWritesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex)
		r.graph.set(update(alex, presence.AvailabilityAvailable, presence.ActivityAvailable, 1))
		if s := r.cycle(t); s.Changes != 1 || s.Published != 1 {
			t.Fatalf("first cycle %+v", s)
		}
		writes := r.store.Writes()
		time.Sleep(30 * time.Second)
		if s := r.cycle(t); s.Published != 0 || s.Read != 1 {
			t.Fatalf("no-change cycle %+v", s)
		}
		if r.store.Writes() != writes {
			t.Errorf("a no-change cycle wrote %d times", r.store.Writes()-writes)
		}
		time.Sleep(30 * time.Second)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 2))
		r.cycle(t)
		msgs := r.pub.messages()
		if len(msgs) != 2 {
			t.Fatalf("%d messages", len(msgs))
		}
		u := decode(t, msgs[1])
		if u.Availability != presence.AvailabilityBusy || u.Sequence != "638680000000000002" || u.TenantID != tenant || u.UPN != "x@contoso.com" {
			t.Errorf("body %+v", u)
		}
		if want := fmt.Sprintf("%s:%d", alex, u.ObservedAt.UnixMilli()); msgs[1].ID != want {
			t.Errorf("message id %s, want %s", msgs[1].ID, want)
		}
		if !u.ExpiresAt.Equal(u.ObservedAt.Add(45*time.Minute)) || msgs[1].Availability != "Busy" || msgs[1].Activity != "InACall" || msgs[1].UserID != string(alex) {
			t.Errorf("expiresAt %v observedAt %v props %+v", u.ExpiresAt, u.ObservedAt, msgs[1])
		}
	})
}

// TestSequenceDecides: an equal sequence is no change even if fields
// differ; a lower one (a stale read) is not published.
func TestSequenceDecides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 5))
		r.cycle(t)
		r.graph.set(update(alex, presence.AvailabilityAway, presence.ActivityAway, 5))
		r.cycle(t)
		r.graph.set(update(alex, presence.AvailabilityOffline, presence.ActivityOffline, 4))
		r.cycle(t)
		if n := len(r.pub.messages()); n != 1 {
			t.Errorf("%d messages, want 1 (equal and stale sequences are no change)", n)
		}
	})
}

// TestHeartbeat: an unchanged presence is republished every heartbeat with
// the same state and sequence and a newer observedAt (so a new id).
func TestHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 1))
		r.cycle(t)
		time.Sleep(14 * time.Minute)
		r.cycle(t)
		time.Sleep(time.Minute)
		if s := r.cycle(t); s.Heartbeats != 1 || s.Published != 1 {
			t.Fatalf("cycle at 15 min: %+v", s)
		}
		msgs := r.pub.messages()
		a, b := decode(t, msgs[0]), decode(t, msgs[1])
		if !a.SameState(b) || a.Sequence != b.Sequence || !b.ObservedAt.After(a.ObservedAt) || msgs[0].ID == msgs[1].ID {
			t.Errorf("heartbeat %+v after %+v", b, a)
		}
	})
}

// TestPendingSurvivesOutageInOrder: changes read while Service Bus is down
// stay pending and are published, oldest first and each once, when it
// returns; a new engine on the same store (a restart) publishes what the
// old one left.
func TestPendingSurvivesOutageInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex)
		r.pub.setDown(true)
		for i, a := range []presence.Availability{presence.AvailabilityAway, presence.AvailabilityBusy, presence.AvailabilityDoNotDisturb} {
			r.graph.set(update(alex, a, presence.ActivityPresenceUnknown, i+1))
			s, _ := r.eng.Cycle(t.Context())
			if s.Pending != i+1 {
				t.Fatalf("cycle %d: %+v", i, s)
			}
			time.Sleep(30 * time.Second)
		}
		if len(r.pub.messages()) != 0 {
			t.Fatal("published while down")
		}
		// A restart: a new engine, same store.
		r.eng = poller.New(poller.Options{Store: r.store, Reader: r.graph, Publisher: r.pub, Tokens: r.tok})
		r.pub.setDown(false)
		r.cycle(t)
		r.cycle(t)
		msgs := r.pub.messages()
		var got []string
		for _, m := range msgs {
			got = append(got, decode(t, m).Availability.String())
		}
		if strings.Join(got, ",") != "Away,Busy,DoNotDisturb" {
			t.Errorf("published %v, want Away,Busy,DoNotDisturb once each, in order", got)
		}
		rec, _, _ := r.store.Presence(t.Context(), alex)
		if len(rec.Pending) != 0 {
			t.Errorf("%d still pending", len(rec.Pending))
		}
	})
}

// TestSignInRequiredOnce: a revoked person is marked signin_required once
// and not tried again; the other person is read as usual; signing in again
// (state active) resumes.
func TestSignInRequiredOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex, sam)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 1))
		r.graph.set(update(sam, presence.AvailabilityAway, presence.ActivityAway, 1))
		r.tok.revoked[alex] = true
		for range 3 {
			r.cycle(t)
			time.Sleep(30 * time.Second)
		}
		if n := r.tok.calls[alex]; n != 1 {
			t.Errorf("alex's token was tried %d times, want 1 (no retry storm)", n)
		}
		a, _ := r.store.Account(t.Context(), alex)
		if a.State != poller.StateSignInRequired {
			t.Errorf("alex is %s", a.State)
		}
		if msgs := r.pub.messages(); len(msgs) != 1 || msgs[0].UserID != string(sam) {
			t.Errorf("sam was not read on: %d messages", len(msgs))
		}
		r.tok.revoked[alex] = false
		a.State = poller.StateActive
		_ = r.store.PutAccount(t.Context(), a)
		r.cycle(t)
		if len(r.pub.messages()) != 2 {
			t.Error("alex did not resume after signing in again")
		}
	})
}

// TestStopMidCycle: a stop (ctx cancelled) while a publish is in flight
// lets that publish finish and records it, starts nothing new, and leaves
// nothing to publish twice.
func TestStopMidCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 1))
		r.pub.inFlight, r.pub.release = make(chan struct{}), make(chan struct{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan poller.Summary)
		go func() {
			s, _ := r.eng.Cycle(ctx)
			done <- s
		}()
		<-r.pub.inFlight
		cancel() // SIGTERM
		time.Sleep(500 * time.Millisecond)
		close(r.pub.release)
		s := <-done
		if s.Published != 1 {
			t.Fatalf("in-flight publish not finished: %+v", s)
		}
		rec, _, _ := r.store.Presence(t.Context(), alex)
		if len(rec.Pending) != 0 {
			t.Error("a finished publish stayed pending: it would go out twice")
		}
	})
}

// TestStopAbandonsAfterGrace: a publish that does not finish within the
// grace is abandoned and stays pending for the next process (same id, so a
// send that did reach Service Bus is removed by duplicate detection).
func TestStopAbandonsAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 1))
		r.pub.inFlight, r.pub.release = make(chan struct{}), make(chan struct{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			_, _ = r.eng.Cycle(ctx)
			close(done)
		}()
		<-r.pub.inFlight
		cancel()
		<-done // returns after the 2 s grace
		rec, _, _ := r.store.Presence(t.Context(), alex)
		if len(rec.Pending) != 1 {
			t.Fatalf("%d pending, want the abandoned message kept", len(rec.Pending))
		}
		close(r.pub.release)
	})
}

// TestUnknownValues: an availability Graph invents is published as
// PresenceUnknown.
func TestUnknownValues(t *testing.T) {
	r := newRig(t, alex)
	u := update(alex, presence.AvailabilityPresenceUnknown, presence.ActivityPresenceUnknown, 1)
	u.UnknownAvailability = "Grumpy"
	r.graph.set(u)
	r.cycle(t)
	if m := r.pub.messages(); len(m) != 1 || m[0].Availability != "PresenceUnknown" {
		t.Fatalf("%+v", m)
	}
}

// TestOnboarderPicksFewestTopics: a new person's topic goes to the
// namespace with the fewest topics; a returning person stays where they
// are.
func TestOnboarderPicksFewestTopics(t *testing.T) {
	a, b := &topics{host: "a", n: 5}, &topics{host: "b", n: 2}
	o := &poller.Onboarder{Namespaces: []poller.TopicManager{a, b}, Subscriptions: []string{"home"}}
	got, err := o.Onboard(t.Context(), alex, "")
	if err != nil || got.Namespace != "b" || got.Topic != string(alex) {
		t.Fatalf("%+v %v", got, err)
	}
	got, _ = o.Onboard(t.Context(), alex, "A")
	if got.Namespace != "a" {
		t.Errorf("returning person moved to %s", got.Namespace)
	}
}

// TestSlowTenantDoesNotHoldOthers: while every read of a tenant of 100
// people hangs (throttled, slow), the person of another tenant is read.
func TestSlowTenantDoesNotHoldOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.eng = poller.New(poller.Options{Store: r.store, Reader: r.graph, Publisher: r.pub, Tokens: r.tok, Concurrency: 4})
		for i := range 100 {
			id := presence.UserID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
			_ = r.store.PutAccount(t.Context(), poller.Account{UserID: id, TenantID: "slow", Topic: string(id), State: poller.StateActive})
			r.graph.set(update(id, presence.AvailabilityBusy, presence.ActivityBusy, 1))
		}
		_ = r.store.PutAccount(t.Context(), poller.Account{UserID: alex, TenantID: tenant, Topic: string(alex), State: poller.StateActive})
		r.graph.set(update(alex, presence.AvailabilityAway, presence.ActivityAway, 1))
		r.graph.block, r.graph.blockTenant = make(chan struct{}), "slow"
		done := make(chan struct{})
		go func() {
			_, _ = r.eng.Cycle(t.Context())
			close(done)
		}()
		synctest.Wait()
		if !r.graph.wasRead(alex) {
			t.Error("the other tenant's person waited for the slow tenant")
		}
		close(r.graph.block)
		<-done
	})
}

// TestOnboarderTieAndUncountable: with equal topic counts the first listed
// namespace takes the new person; a namespace whose topics cannot be
// counted is passed over.
func TestOnboarderTieAndUncountable(t *testing.T) {
	a, b := &topics{host: "a", n: 3}, &topics{host: "b", n: 3}
	o := &poller.Onboarder{Namespaces: []poller.TopicManager{a, b}}
	if got, _ := o.Onboard(t.Context(), alex, ""); got.Namespace != "a" {
		t.Errorf("a tie went to %s, want the first listed", got.Namespace)
	}
	broken := &uncountable{topics{host: "c"}}
	o = &poller.Onboarder{Namespaces: []poller.TopicManager{broken, b}}
	if got, _ := o.Onboard(t.Context(), sam, ""); got.Namespace != "b" {
		t.Errorf("went to %s, want b (c cannot be counted)", got.Namespace)
	}
}

type uncountable struct{ topics }

func (u *uncountable) CountTopics(context.Context) (int, error) {
	return 0, fmt.Errorf("management API unreachable")
}
