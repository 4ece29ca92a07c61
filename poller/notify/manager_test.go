package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/notify"
	"github.com/presence-bridge/presence-bridge/presence"
)

// simRig is the notification side in memory, for synctest: Graph's
// subscription API, the store, the engine with a recording publisher, the
// manager and the webhook (called without a network).
type simRig struct {
	api     *memAPI
	store   *memStore
	tok     *tokens
	pub     *publisher
	keys    *notify.KeyRing
	manager *notify.Manager
	engine  *poller.Engine
	hook    *notify.Webhook
}

func newSim(t testing.TB, ring notify.KeyRingOptions, people ...presence.UserID) *simRig {
	t.Helper()
	s := &simRig{api: newMemAPI(), store: newMemStore(), tok: &tokens{revoked: map[presence.UserID]bool{}}, pub: newPublisher()}
	for _, id := range people {
		if err := s.store.PutAccount(context.Background(), poller.Account{UserID: id, TenantID: tenantA, Namespace: "ns", Topic: string(id), State: poller.StateActive}); err != nil {
			t.Fatal(err)
		}
	}
	s.keys = newRing(t, s.store, ring)
	s.manager = notify.NewManager(notify.ManagerOptions{Store: s.store, API: s.api, Tokens: s.tok, Keys: s.keys, NotificationURL: "https://presence.example.com/notifications"})
	s.engine = poller.New(poller.Options{Store: s.store, Reader: nopReader{}, Publisher: s.pub, Tokens: s.tok, Open: s.keys.Open})
	s.hook = notify.NewWebhook(notify.WebhookOptions{Store: s.store, Engine: s.engine, Keys: s.keys, Manager: s.manager})
	t.Cleanup(func() { s.hook.Close(context.Background()) })
	return s
}

type nopReader struct{}

func (nopReader) Me(context.Context, string, string) (presence.Update, error) {
	return presence.Update{}, context.Canceled
}

func (nopReader) ByUserIDs(context.Context, string, string, []presence.UserID) ([]presence.Update, error) {
	return nil, context.Canceled
}

func (s *simRig) tick(t testing.TB) notify.TickSummary {
	t.Helper()
	sum, err := s.manager.Tick(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// notification builds what Graph would send for the person's live
// subscription now: their presence encrypted to its certificate.
func (s *simRig) notification(t testing.TB, id presence.UserID, availability string, seq int) []byte {
	t.Helper()
	sub := s.api.liveOf(id)
	if sub == nil {
		t.Fatalf("%s has no live subscription", id)
	}
	data, _ := json.Marshal(map[string]any{"id": string(id), "availability": availability, "activity": availability, "sequenceNumber": fmt.Sprintf("%012d", seq)})
	enc, err := graphtest.Encrypt(sub.cert, sub.certID, data)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"value": []any{map[string]any{
		"subscriptionId": sub.id, "clientState": sub.clientState, "changeType": "updated", "tenantId": tenantA,
		"resource": "communications/presences('" + string(id) + "')", "resourceData": map[string]any{"id": string(id)},
		"encryptedContent": enc,
	}}})
	return body
}

func (s *simRig) deliver(t testing.TB, body []byte) int {
	t.Helper()
	w := httptest.NewRecorder()
	s.hook.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/notifications", strings.NewReader(string(body))))
	s.hook.Settle(context.Background())
	return w.Code
}

// TestRenewalBeforeExpiry: over six hours of passes every 30 s a
// subscription never lapses: each renewal reaches Graph in the five
// minutes before expiry, once per 55 minutes.
func TestRenewalBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alex := person(1)
		s := newSim(t, notify.KeyRingOptions{}, alex)
		began := time.Now()
		for time.Since(began) < 6*time.Hour {
			s.tick(t)
			if s.api.liveOf(alex) == nil {
				t.Fatalf("the subscription lapsed at %v", time.Since(began))
			}
			if c, _ := s.manager.Covered(context.Background()); !c[alex] {
				t.Fatalf("not covered at %v", time.Since(began))
			}
			time.Sleep(30 * time.Second)
		}
		renewals := 0
		for _, w := range s.api.writesLog() {
			if w.kind != "renew" {
				continue
			}
			renewals++
			if left := w.expires.Sub(w.at); left <= 0 || left > notify.DefaultRenewBefore {
				t.Errorf("renewed %v before expiry, want within %v", left, notify.DefaultRenewBefore)
			}
		}
		if s.api.count("create") != 1 || renewals != 6 {
			t.Errorf("6 hours: %d creations, %d renewals; want 1 and 6 (every 55 minutes)", s.api.count("create"), renewals)
		}
	})
}

// TestRecreationAfterLapse: a subscription that lapsed while the poller
// was stopped, and one Graph dropped (a renewal answers 404), are made
// again; the person is polled (not covered) in between.
func TestRecreationAfterLapse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alex := person(1)
		s := newSim(t, notify.KeyRingOptions{}, alex)
		s.tick(t)
		first := s.api.liveOf(alex).id
		time.Sleep(70 * time.Minute) // stopped: no pass
		if c, _ := s.manager.Covered(context.Background()); c[alex] {
			t.Fatal("a lapsed subscription counts as covering")
		}
		if sum := s.tick(t); sum.Recreated != 1 {
			t.Fatalf("pass after the lapse: %+v", sum)
		}
		second := s.api.liveOf(alex)
		if second == nil || second.id == first {
			t.Fatal("not recreated")
		}
		s.api.forget(alex)
		time.Sleep(56 * time.Minute)
		if sum := s.tick(t); sum.Recreated != 1 {
			t.Fatalf("pass after Graph dropped it: %+v", sum)
		}
		if sub := s.api.liveOf(alex); sub == nil || sub.id == second.id {
			t.Fatal("not recreated after a renewal found it gone")
		}
		if rec, _, _ := s.store.Subscription(context.Background(), alex); !rec.Healthy(time.Now()) {
			t.Fatalf("record %+v", rec)
		}
	})
}

// TestRotationWithNotificationsInFlight: after the key rotates, each
// subscription moves to the new key at its next renewal; a notification
// encrypted to the old key before that, delivered late, still decrypts;
// once no subscription uses the old key and Graph's retries are over it
// is retired, and a notification encrypted to it changes nothing.
func TestRotationWithNotificationsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alex := person(1)
		s := newSim(t, notify.KeyRingOptions{RotateEvery: 2 * time.Hour, KeepFor: 5 * time.Hour}, alex)
		s.tick(t)
		k1 := s.api.liveOf(alex).certID
		inFlight := s.notification(t, alex, "Busy", 1)
		late := s.notification(t, alex, "Away", 2)
		pass := func(d time.Duration) {
			for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(30 * time.Second) {
				s.tick(t)
			}
		}
		pass(3 * time.Hour)
		k2 := s.api.liveOf(alex).certID
		if k2 == k1 {
			t.Fatal("the subscription still uses the old key three hours in")
		}
		if ids := s.keys.IDs(); len(ids) != 2 {
			t.Fatalf("ring %v: the old key must stay for notifications in flight", ids)
		}
		if code := s.deliver(t, inFlight); code != http.StatusAccepted {
			t.Fatalf("in flight: %d", code)
		}
		if msgs := s.pub.messages(); len(msgs) != 1 {
			t.Fatalf("the notification encrypted to the old key was not published (%d messages)", len(msgs))
		}
		pass(5 * time.Hour)
		for _, id := range s.keys.IDs() {
			if id == k1 {
				t.Fatal("the old key was kept after no subscription used it for KeepFor")
			}
		}
		if code := s.deliver(t, late); code != http.StatusAccepted {
			t.Fatalf("late: %d", code)
		}
		if msgs := s.pub.messages(); len(msgs) != 1 {
			t.Fatal("a notification encrypted to a retired key changed something")
		}
	})
}

// TestStoreDownAsksGraphToDeliverAgain: a genuine change the store cannot
// record, or check, is answered 503 (Graph delivers it again), and the
// delivery after the store is back is recorded and published once.
func TestStoreDownAsksGraphToDeliverAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alex := person(1)
		s := newSim(t, notify.KeyRingOptions{}, alex)
		s.tick(t)
		body := s.notification(t, alex, "Busy", 3)
		s.store.setFail("presence", errors.New("disk full"))
		if code := s.deliver(t, body); code != http.StatusServiceUnavailable {
			t.Fatalf("store down: %d, want 503", code)
		}
		s.store.setFail("presence", nil)
		s.store.setFail("read", errors.New("store unreachable"))
		if code := s.deliver(t, body); code != http.StatusServiceUnavailable {
			t.Fatalf("store unreadable: %d, want 503", code)
		}
		s.store.setFail("read", nil)
		for range 2 { // Graph's retry, and a duplicate of it
			if code := s.deliver(t, body); code != http.StatusAccepted {
				t.Fatalf("store back: %d", code)
			}
		}
		if n := len(s.pub.messages()); n != 1 {
			t.Fatalf("%d messages, want 1", n)
		}
	})
}

// TestTwoInstancesCreateOnce: two instances sharing a store (Functions
// scale-out) make one subscription per person between them: the record is
// claimed before Graph is asked, and the claim keeps the other away.
func TestTwoInstancesCreateOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alex, sam := person(1), person(2)
		s := newSim(t, notify.KeyRingOptions{}, alex, sam)
		other := notify.NewManager(notify.ManagerOptions{Store: s.store, API: s.api, Tokens: s.tok, Keys: newRing(t, s.store, notify.KeyRingOptions{}),
			NotificationURL: "https://presence.example.com/notifications"})
		var wg sync.WaitGroup
		for _, m := range []*notify.Manager{s.manager, other} {
			wg.Go(func() {
				if _, err := m.Tick(context.Background()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := s.api.count("create"); n != 2 {
			t.Fatalf("%d creations for 2 people, want 2", n)
		}
		for _, id := range []presence.UserID{alex, sam} {
			if rec, _, _ := s.store.Subscription(context.Background(), id); !rec.Healthy(time.Now()) {
				t.Errorf("%s: %+v", id, rec)
			}
		}
	})
}
