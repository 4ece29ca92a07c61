package tablestore

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/presence-bridge/presence-bridge/internal/azurite"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/storetest"
	"github.com/presence-bridge/presence-bridge/presence"
)

// TestContract runs the store contract against Azurite: one emulator for
// the package's tests, a fresh table for each store.
func TestContract(t *testing.T) {
	srv := azurite.Start(t)
	var n atomic.Int32
	storetest.Run(t, func(t *testing.T) poller.Store {
		s, err := Open(t.Context(), Options{ConnectionString: srv.ConnectionString(), Table: fmt.Sprintf("contract%d", n.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ping(t.Context()); err != nil {
			t.Fatalf("ping: %v", err)
		}
		return s
	})
}

// TestLargeValuesAndPartitions: a token cache over one property's 64 KiB
// comes back whole, and people spread over many partitions list in id
// order.
func TestLargeValuesAndPartitions(t *testing.T) {
	srv := azurite.Start(t)
	ctx := t.Context()
	s, err := Open(ctx, Options{ConnectionString: srv.ConnectionString()})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 200<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := s.PutTokenCache(ctx, "0f1c2a3b-1111-2222-3333-444455556666", big); err != nil {
		t.Fatal(err)
	}
	got, err := s.TokenCache(ctx, "0f1c2a3b-1111-2222-3333-444455556666")
	if err != nil || string(got) != string(big) {
		t.Fatalf("cache of %d bytes came back as %d bytes (%v)", len(big), len(got), err)
	}
	if _, err := s.PutPresence(ctx, "0f1c2a3b-1111-2222-3333-444455556666", poller.PresenceRecord{Pending: []poller.Pending{{ID: "x", Body: big}}}, ""); err != nil {
		t.Fatal(err)
	}
	want := []string{}
	for i := range 40 {
		id := fmt.Sprintf("%02x%06x-0000-4000-8000-%012x", (i*37)%256, i, i)
		want = append(want, id)
		if err := s.PutAccount(ctx, poller.Account{UserID: presence.UserID(id), State: poller.StateActive}); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	accts, err := s.Accounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range accts {
		ids = append(ids, string(a.UserID))
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("Accounts = %v\nwant %v", ids, want)
	}
}
