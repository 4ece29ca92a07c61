package poller_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

func (r *rig) account(t *testing.T, id presence.UserID) poller.Account {
	t.Helper()
	a, err := r.store.Account(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (r *rig) notified(t *testing.T, u presence.Update) bool {
	t.Helper()
	ok, err := r.eng.Notified(t.Context(), r.account(t, u.UserID), u)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func states(t *testing.T, msgs []poller.Message) []string {
	t.Helper()
	var out []string
	for _, m := range msgs {
		u := decode(t, m)
		out = append(out, fmt.Sprintf("%s/%s", u.Availability, u.Sequence[len(u.Sequence)-2:]))
	}
	return out
}

// TestNotifiedRecordsBeforePublishing: a notified presence is stored as
// pending (what the webhook waits for before it answers Graph) and goes to
// Service Bus only on Publish, with Graph's sequence number in the body.
func TestNotifiedRecordsBeforePublishing(t *testing.T) {
	r := newRig(t, alex)
	if !r.notified(t, update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5)) {
		t.Fatal("a first presence was not recorded")
	}
	rec, _, _ := r.store.Presence(t.Context(), alex)
	if len(rec.Pending) != 1 || len(r.pub.messages()) != 0 {
		t.Fatalf("pending %d, published %d: want 1 pending, nothing published", len(rec.Pending), len(r.pub.messages()))
	}
	if err := r.eng.Publish(t.Context(), r.account(t, alex)); err != nil {
		t.Fatal(err)
	}
	if got := states(t, r.pub.messages()); !slices.Equal(got, []string{"Busy/05"}) {
		t.Fatalf("published %v", got)
	}
	if rec, _, _ := r.store.Presence(t.Context(), alex); len(rec.Pending) != 0 || rec.PublishedAt.IsZero() {
		t.Fatalf("after publish: %+v", rec)
	}
	if r.graph.wasRead(alex) {
		t.Error("a notified change read Graph")
	}
}

// TestNotificationsDuplicatedAndReordered: duplicates, and a notification
// older (by sequenceNumber) than one already recorded, change nothing, so
// an older presence is never published after a newer one.
func TestNotificationsDuplicatedAndReordered(t *testing.T) {
	r := newRig(t, alex)
	a := r.account(t, alex)
	for _, tc := range []struct {
		u    presence.Update
		want bool
	}{
		{update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5), true},
		{update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5), false},        // duplicate
		{update(alex, presence.AvailabilityAway, presence.ActivityAway, 7), true},            // newer
		{update(alex, presence.AvailabilityAvailable, presence.ActivityAvailable, 6), false}, // older, late
		{update(alex, presence.AvailabilityAway, presence.ActivityAway, 7), false},           // duplicate of the newest
		{update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5), false},        // a retry of the first
	} {
		if got := r.notified(t, tc.u); got != tc.want {
			t.Errorf("%s/%s: recorded %v, want %v", tc.u.Availability, tc.u.Sequence, got, tc.want)
		}
	}
	if err := r.eng.Publish(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	if got := states(t, r.pub.messages()); !slices.Equal(got, []string{"Busy/05", "Away/07"}) {
		t.Fatalf("published %v, want Busy/05 then Away/07", got)
	}
}

// TestSameStateWithNewerSequenceGuards: a read that shows the same state
// under a newer sequence number writes that number (and publishes
// nothing), so a notification between the two that arrives late is
// recognised as older.
func TestSameStateWithNewerSequenceGuards(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 5))
		r.cycle(t)
		time.Sleep(30 * time.Second)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 7))
		if s := r.cycle(t); s.Published != 0 {
			t.Fatalf("same state published: %+v", s)
		}
		if r.notified(t, update(alex, presence.AvailabilityAway, presence.ActivityAway, 6)) {
			t.Fatal("a notification older than the last read was recorded")
		}
		if n := len(r.pub.messages()); n != 1 {
			t.Fatalf("%d messages, want 1", n)
		}
	})
}

// TestCoveredPeopleReadEveryReconcileInterval: with a cycle every 30 s, a
// person a healthy subscription covers is read every reconcile interval (5
// minutes) and the others every cycle; the covered person's heartbeat
// still goes out every 15 minutes without a read, and a pending message
// of theirs is published by the next cycle.
func TestCoveredPeopleReadEveryReconcileInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex, sam)
		r.eng = poller.New(poller.Options{Store: r.store, Reader: r.graph, Publisher: r.pub, Tokens: r.tok, Heartbeat: 15 * time.Minute,
			ReconcileInterval: 5 * time.Minute,
			Notified: func(context.Context) (map[presence.UserID]bool, error) {
				return map[presence.UserID]bool{alex: true}, nil
			}})
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 1))
		r.graph.set(update(sam, presence.AvailabilityAway, presence.ActivityAway, 1))
		reads := map[presence.UserID]int{}
		for i := range 40 { // 20 minutes
			r.graph.mu.Lock()
			r.graph.readBy = nil
			r.graph.mu.Unlock()
			s := r.cycle(t)
			for _, id := range []presence.UserID{alex, sam} {
				if r.graph.wasRead(id) {
					reads[id]++
				}
			}
			if i > 0 && i%10 != 0 && s.Covered != 1 {
				t.Fatalf("cycle %d: covered %d, want 1", i, s.Covered)
			}
			time.Sleep(30 * time.Second)
		}
		if reads[alex] != 4 || reads[sam] != 40 {
			t.Errorf("reads in 20 minutes: alex (covered) %d, want 4; sam (polled) %d, want 40", reads[alex], reads[sam])
		}
		var alexMsgs int
		for _, m := range r.pub.messages() {
			if m.UserID == string(alex) {
				alexMsgs++
			}
		}
		if alexMsgs != 2 { // the first presence, and the heartbeat at 15 minutes
			t.Errorf("alex: %d messages, want 2 (first presence, one heartbeat)", alexMsgs)
		}
		r.pub.setDown(true)
		r.notified(t, update(alex, presence.AvailabilityAway, presence.ActivityAway, 2))
		_ = r.eng.Publish(t.Context(), r.account(t, alex))
		r.pub.setDown(false)
		r.cycle(t)
		if rec, _, _ := r.store.Presence(t.Context(), alex); len(rec.Pending) != 0 {
			t.Fatal("a covered person's pending message was not published by the next cycle")
		}
	})
}

// TestNotificationsRaceCycles: notifications in random order and
// duplicated, concurrent with cycles reading Graph, publish every person's
// presences in increasing sequence order, each at most once, ending on
// the newest.
func TestNotificationsRaceCycles(t *testing.T) {
	r := newRig(t, alex)
	a := r.account(t, alex)
	const n = 40
	var ups []presence.Update
	for i := 1; i <= n; i++ {
		avail := []presence.Availability{presence.AvailabilityBusy, presence.AvailabilityAway}[i%2]
		ups = append(ups, update(alex, avail, presence.ActivityBusy, i))
	}
	r.graph.set(ups[n-1])
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for _, i := range rnd.Perm(n) {
				if _, err := r.eng.Notified(t.Context(), a, ups[i]); err != nil {
					t.Error(err)
				}
				_ = r.eng.Publish(t.Context(), a)
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if _, err := r.eng.Cycle(t.Context()); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	_ = r.eng.Publish(t.Context(), a)
	msgs := r.pub.messages()
	var last string
	seen := map[string]bool{}
	for _, m := range msgs {
		u := decode(t, m)
		if seen[m.ID] {
			t.Fatalf("message %s published twice", m.ID)
		}
		seen[m.ID] = true
		if last != "" && u.Sequence <= last {
			t.Fatalf("sequence %s published after %s", u.Sequence, last)
		}
		last = u.Sequence
	}
	if last != ups[n-1].Sequence {
		t.Fatalf("ended on %s, want %s", last, ups[n-1].Sequence)
	}
}
