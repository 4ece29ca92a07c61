// Package storetest is the contract every poller.Store implementation must
// pass: the embedded bbolt store runs it, and so will the Table Storage
// store. Call Run from the implementation's tests with a function that
// returns a fresh, empty store.
package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

func id(i int) presence.UserID {
	return presence.UserID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
}

// Run runs the contract against stores made by open.
func Run(t *testing.T, open func(t *testing.T) poller.Store) {
	t.Run("accounts", func(t *testing.T) { accounts(t, open(t)) })
	t.Run("token caches", func(t *testing.T) { caches(t, open(t)) })
	t.Run("presence compare-and-swap", func(t *testing.T) { cas(t, open(t)) })
	t.Run("delete forgets everything", func(t *testing.T) { deleteAll(t, open(t)) })
	t.Run("concurrent compare-and-swap", func(t *testing.T) { concurrentCAS(t, open(t)) })
	t.Run("subscriptions compare-and-swap", func(t *testing.T) { subscriptions(t, open(t)) })
	t.Run("key ring compare-and-swap", func(t *testing.T) { keyRing(t, open(t)) })
}

func accounts(t *testing.T, s poller.Store) {
	ctx := t.Context()
	if got, err := s.Accounts(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store lists %v, %v", got, err)
	}
	if _, err := s.Account(ctx, id(1)); !errors.Is(err, poller.ErrNotFound) {
		t.Fatalf("unknown account: %v, want ErrNotFound", err)
	}
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for _, i := range []int{3, 1, 2} {
		a := poller.Account{UserID: id(i), TenantID: "t", UPN: fmt.Sprintf("p%d@contoso.com", i), Name: "<b>P</b>", State: poller.StateActive, SignedInAt: at, Namespace: "ns", Topic: string(id(i))}
		if err := s.PutAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Accounts(ctx)
	if err != nil || len(got) != 3 {
		t.Fatalf("Accounts = %d, %v", len(got), err)
	}
	if !slices.IsSortedFunc(got, func(a, b poller.Account) int { return compare(a.UserID, b.UserID) }) {
		t.Error("accounts are not ordered by user id")
	}
	a, err := s.Account(ctx, presence.UserID(string(id(2))))
	if err != nil || a.UPN != "p2@contoso.com" || !a.SignedInAt.Equal(at) || a.Name != "<b>P</b>" {
		t.Fatalf("Account = %+v, %v", a, err)
	}
	a.State = poller.StateSignInRequired
	if err := s.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if a, _ = s.Account(ctx, id(2)); a.State != poller.StateSignInRequired {
		t.Errorf("PutAccount did not replace: %+v", a)
	}
}

func compare(a, b presence.UserID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func caches(t *testing.T, s poller.Store) {
	ctx := t.Context()
	if c, err := s.TokenCache(ctx, id(1)); err != nil || c != nil {
		t.Fatalf("missing cache = %q, %v", c, err)
	}
	for _, v := range [][]byte{[]byte("sealed-1"), []byte("sealed-2")} {
		if err := s.PutTokenCache(ctx, id(1), v); err != nil {
			t.Fatal(err)
		}
		if c, err := s.TokenCache(ctx, id(1)); err != nil || string(c) != string(v) {
			t.Fatalf("cache = %q, %v, want %q", c, err, v)
		}
	}
	if c, _ := s.TokenCache(ctx, id(2)); c != nil {
		t.Error("one person's cache is another's")
	}
}

func record(avail presence.Availability, pending ...string) poller.PresenceRecord {
	r := poller.PresenceRecord{Last: presence.Update{UserID: id(1), Availability: avail, Sequence: "638680000000000001",
		ObservedAt: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}}
	for _, p := range pending {
		r.Pending = append(r.Pending, poller.Pending{ID: p, Body: []byte(`{"p":"` + p + `"}`), Availability: avail.String()})
	}
	return r
}

func cas(t *testing.T, s poller.Store) {
	ctx := t.Context()
	rec, tag, err := s.Presence(ctx, id(1))
	if err != nil || tag != "" || rec.Last.UserID != "" {
		t.Fatalf("missing record = %+v %q %v", rec, tag, err)
	}
	t1, err := s.PutPresence(ctx, id(1), record(presence.AvailabilityBusy, "a", "b"), "")
	if err != nil || t1 == "" {
		t.Fatalf("create: %q %v", t1, err)
	}
	if _, err := s.PutPresence(ctx, id(1), record(presence.AvailabilityAway), ""); !errors.Is(err, poller.ErrConflict) {
		t.Fatalf("create over an existing record: %v, want ErrConflict", err)
	}
	got, tag, err := s.Presence(ctx, id(1))
	if err != nil || tag != t1 || got.Last.Availability != presence.AvailabilityBusy || len(got.Pending) != 2 || got.Pending[1].ID != "b" || string(got.Pending[0].Body) != `{"p":"a"}` {
		t.Fatalf("read back %+v %q %v", got, tag, err)
	}
	t2, err := s.PutPresence(ctx, id(1), record(presence.AvailabilityAway), t1)
	if err != nil || t2 == t1 {
		t.Fatalf("update: %q %v", t2, err)
	}
	if _, err := s.PutPresence(ctx, id(1), record(presence.AvailabilityBusy), t1); !errors.Is(err, poller.ErrConflict) {
		t.Fatalf("stale ETag: %v, want ErrConflict", err)
	}
	if _, err := s.PutPresence(ctx, id(2), record(presence.AvailabilityBusy), t2); !errors.Is(err, poller.ErrConflict) {
		t.Fatalf("ETag of a record that does not exist: %v, want ErrConflict", err)
	}
}

func deleteAll(t *testing.T, s poller.Store) {
	ctx := t.Context()
	if err := s.DeleteAccount(ctx, id(9)); !errors.Is(err, poller.ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
	_ = s.PutAccount(ctx, poller.Account{UserID: id(9), State: poller.StateActive})
	_ = s.PutTokenCache(ctx, id(9), []byte("sealed"))
	if _, err := s.PutPresence(ctx, id(9), record(presence.AvailabilityBusy), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAccount(ctx, id(9)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Account(ctx, id(9)); !errors.Is(err, poller.ErrNotFound) {
		t.Error("account survived")
	}
	if c, _ := s.TokenCache(ctx, id(9)); c != nil {
		t.Error("token cache survived")
	}
	if _, tag, _ := s.Presence(ctx, id(9)); tag != "" {
		t.Error("presence survived")
	}
}

// deleteForgetsSubscription: removing a person removes their subscription
// record with them, and nobody else's.
func deleteForgetsSubscription(t *testing.T, s poller.Store) {
	ctx := t.Context()
	for _, i := range []int{7, 8} {
		_ = s.PutAccount(ctx, poller.Account{UserID: id(i), State: poller.StateActive})
		if _, err := s.PutSubscription(ctx, id(i), poller.Subscription{UserID: id(i), ID: fmt.Sprint("sub-", i)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteAccount(ctx, id(7)); err != nil {
		t.Fatal(err)
	}
	if _, tag, _ := s.Subscription(ctx, id(7)); tag != "" {
		t.Error("the subscription record survived its person")
	}
	if sub, tag, _ := s.Subscription(ctx, id(8)); tag == "" || sub.ID != "sub-8" {
		t.Error("deleting one person removed another's subscription record")
	}
}

// concurrentCAS: 8 writers each append 25 pending messages with
// read-modify-write retried on conflict; every append survives exactly
// once, in a single total order.
func concurrentCAS(t *testing.T, s poller.Store) {
	ctx := t.Context()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				for {
					rec, tag, err := s.Presence(ctx, id(1))
					if err != nil {
						t.Error(err)
						return
					}
					rec.Last.UserID = id(1)
					rec.Pending = append(rec.Pending, poller.Pending{ID: fmt.Sprintf("%d-%d", w, i)})
					_, err = s.PutPresence(ctx, id(1), rec, tag)
					if err == nil {
						break
					}
					if !errors.Is(err, poller.ErrConflict) {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	rec, _, err := s.Presence(ctx, id(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Pending) != writers*each {
		t.Fatalf("%d appends survived, want %d (a lost update)", len(rec.Pending), writers*each)
	}
	seen := map[string]bool{}
	last := map[int]int{}
	for _, p := range rec.Pending {
		if seen[p.ID] {
			t.Fatalf("%s appended twice", p.ID)
		}
		seen[p.ID] = true
		var w, i int
		fmt.Sscanf(p.ID, "%d-%d", &w, &i)
		if prev, ok := last[w]; ok && i <= prev {
			t.Fatalf("writer %d's appends out of order", w)
		}
		last[w] = i
	}
}

func subscriptions(t *testing.T, s poller.Store) {
	ctx := t.Context()
	if got, err := s.Subscriptions(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store lists subscriptions %v, %v", got, err)
	}
	if sub, tag, err := s.Subscription(ctx, id(1)); err != nil || tag != "" || sub.ID != "" {
		t.Fatalf("missing subscription = %+v %q %v", sub, tag, err)
	}
	exp := time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC)
	rec := poller.Subscription{UserID: id(1), TenantID: "t", ID: "sub-1", ClientStateHash: "h", CertificateID: "k1", ExpiresAt: exp}
	t1, err := s.PutSubscription(ctx, id(1), rec, "")
	if err != nil || t1 == "" {
		t.Fatalf("create: %q %v", t1, err)
	}
	if _, err := s.PutSubscription(ctx, id(1), rec, ""); !errors.Is(err, poller.ErrConflict) {
		t.Fatalf("create over an existing record: %v, want ErrConflict", err)
	}
	got, tag, err := s.Subscription(ctx, id(1))
	if err != nil || tag != t1 || got.ID != "sub-1" || got.ClientStateHash != "h" || got.CertificateID != "k1" || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("read back %+v %q %v", got, tag, err)
	}
	rec.Failure, rec.Failures = "the webhook did not answer", 2
	t2, err := s.PutSubscription(ctx, id(1), rec, t1)
	if err != nil || t2 == t1 {
		t.Fatalf("update: %q %v", t2, err)
	}
	if _, err := s.PutSubscription(ctx, id(1), rec, t1); !errors.Is(err, poller.ErrConflict) {
		t.Fatalf("stale ETag: %v, want ErrConflict", err)
	}
	if _, err := s.PutSubscription(ctx, id(2), rec, t2); !errors.Is(err, poller.ErrConflict) {
		t.Fatalf("ETag of a record that does not exist: %v, want ErrConflict", err)
	}
	for _, i := range []int{3, 2} {
		if _, err := s.PutSubscription(ctx, id(i), poller.Subscription{UserID: id(i)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.Subscriptions(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("Subscriptions = %d, %v", len(list), err)
	}
	if !slices.IsSortedFunc(list, func(a, b poller.Subscription) int { return compare(a.UserID, b.UserID) }) {
		t.Error("subscriptions are not ordered by user id")
	}
	if list[0].Failure != "the webhook did not answer" || list[0].Failures != 2 {
		t.Errorf("listed %+v", list[0])
	}
	deleteForgetsSubscription(t, s)
}

func keyRing(t *testing.T, s poller.Store) {
	ctx := t.Context()
	if b, tag, err := s.KeyRing(ctx); err != nil || tag != "" || b != nil {
		t.Fatalf("missing key ring = %q %q %v", b, tag, err)
	}
	t1, err := s.PutKeyRing(ctx, []byte("sealed-1"), "")
	if err != nil || t1 == "" {
		t.Fatalf("create: %q %v", t1, err)
	}
	if _, err := s.PutKeyRing(ctx, []byte("sealed-x"), ""); !errors.Is(err, poller.ErrConflict) {
		t.Fatalf("create over an existing ring: %v, want ErrConflict", err)
	}
	t2, err := s.PutKeyRing(ctx, []byte("sealed-2"), t1)
	if err != nil || t2 == t1 {
		t.Fatalf("update: %q %v", t2, err)
	}
	if _, err := s.PutKeyRing(ctx, []byte("sealed-3"), t1); !errors.Is(err, poller.ErrConflict) {
		t.Fatalf("stale ETag: %v, want ErrConflict", err)
	}
	if b, tag, err := s.KeyRing(ctx); err != nil || tag != t2 || string(b) != "sealed-2" {
		t.Fatalf("read back %q %q %v", b, tag, err)
	}
}
