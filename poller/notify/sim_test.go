package notify_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/notify"
	"github.com/presence-bridge/presence-bridge/presence"
)

// countingReader is Graph's presence read: nobody's presence changes; it
// counts reads.
type countingReader struct{ n atomic.Int64 }

func (r *countingReader) Me(_ context.Context, tenant, token string) (presence.Update, error) {
	r.n.Add(1)
	return presence.Update{UserID: userOf(token), Availability: presence.AvailabilityAvailable, Activity: presence.ActivityAvailable, Sequence: "638680000000000001"}, nil
}

func (r *countingReader) ByUserIDs(context.Context, string, string, []presence.UserID) ([]presence.Update, error) {
	return nil, nil
}

// TestSimulatedHoursOf1000People counts, under synctest, what 1,000
// people with healthy subscriptions cost Graph with the defaults (a cycle
// every 30 s, reconcile_interval 5 minutes, renewal 5 minutes before the
// 60-minute expiry): presence reads in the second hour (the first holds
// everyone's first read and subscription), and renewals over hours 1 to 12
// (renewals come every 55 minutes, so one hour alone shows 0 or 2 per
// person). make bench runs it with -v for the figures (BENCHMARKS.md).
func TestSimulatedHoursOf1000People(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 12 hours of 1,000 people (a few seconds)")
	}
	synctest.Test(t, func(t *testing.T) {
		const n = 1000
		var people []presence.UserID
		for i := range n {
			people = append(people, person(i+1))
		}
		s := newSim(t, notify.KeyRingOptions{}, people...)
		reader := &countingReader{}
		eng := poller.New(poller.Options{Store: s.store, Reader: reader, Publisher: s.pub, Tokens: s.tok,
			Covered: s.manager.Covered, ReconcileInterval: 5 * time.Minute})
		ctx := context.Background()
		began := time.Now()
		var readsHour2 int64
		for time.Since(began) < 12*time.Hour {
			elapsed := time.Since(began)
			if sum, err := s.manager.Tick(ctx); err != nil || sum.Failed != 0 || sum.Recreated != 0 {
				t.Fatalf("pass at %v: %+v %v", elapsed, sum, err)
			}
			if elapsed < 2*time.Hour {
				before := reader.n.Load()
				if _, err := eng.Cycle(ctx); err != nil {
					t.Fatal(err)
				}
				if elapsed >= time.Hour {
					readsHour2 += reader.n.Load() - before
				}
			}
			time.Sleep(30 * time.Second)
		}
		renewals := 0
		for _, w := range s.api.writesLog() {
			if w.kind == "renew" && w.at.Sub(began) >= time.Hour {
				renewals++
			}
		}
		perHour := float64(renewals) / 11
		t.Logf("1,000 people, healthy subscriptions: %d Graph reads in the second hour (polling every 30 s: %d); %.0f renewals per hour over hours 1-12 (%d in 11 h), %d creations, %d other writes",
			readsHour2, n*120, perHour, renewals, s.api.count("create"), s.api.count("delete"))
		fmt.Printf("simulated-hours: reads-per-hour=%d renewals-per-hour=%.0f creations=%d\n", readsHour2, perHour, s.api.count("create"))
		if readsHour2 > n*60/5 {
			t.Errorf("%d reads in an hour, want at most %d (1,000 × 60 / 5)", readsHour2, n*60/5)
		}
		// Renewing 5 minutes before a 60-minute expiry renews each
		// subscription every 55 minutes: 60/55 per person-hour.
		if want := float64(n) * 60 / 55; perHour > want*1.01 {
			t.Errorf("%.0f renewals per hour, want at most %.0f", perHour, want)
		}
		if s.api.count("create") != n {
			t.Errorf("%d creations, want %d", s.api.count("create"), n)
		}
	})
}
