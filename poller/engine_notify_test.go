package poller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
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

// content is what the notification carries once decrypted (openJSON reads
// it back: the rigs' Options.Open).
func content(u presence.Update) []byte {
	b, _ := json.Marshal(map[string]any{"id": string(u.UserID), "availability": u.Availability.String(), "activity": u.Activity.String(), "sequenceNumber": u.Sequence})
	return b
}

func openJSON(_ context.Context, a poller.Account, b []byte) (presence.Update, error) {
	return graph.ParsePresence(b, a.TenantID)
}

var inboundN atomic.Int64

// receive stores u as a received notification with a fresh id (or id).
func (r *rig) receive(t *testing.T, u presence.Update, id ...string) {
	t.Helper()
	in := poller.Inbound{ID: fmt.Sprint("n-", inboundN.Add(1)), Content: content(u), ReceivedAt: time.Now()}
	if len(id) > 0 {
		in.ID = id[0]
	}
	if err := r.eng.Receive(t.Context(), r.account(t, u.UserID), in); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) process(t *testing.T, id presence.UserID) {
	t.Helper()
	if err := r.eng.Process(t.Context(), r.account(t, id)); err != nil {
		t.Fatal(err)
	}
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

// TestReceivedThenOpenedAndPublished: a received notification is stored
// as such (what the webhook waits for before it answers Graph); Process
// opens it, records the change and publishes it with Graph's sequence
// number, without a Graph read.
func TestReceivedThenOpenedAndPublished(t *testing.T) {
	r := newRig(t, alex)
	r.receive(t, update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5))
	rec, _, _ := r.store.Presence(t.Context(), alex)
	if len(rec.Inbox) != 1 || len(r.pub.messages()) != 0 {
		t.Fatalf("inbox %d, published %d: want 1 received, nothing published", len(rec.Inbox), len(r.pub.messages()))
	}
	r.process(t, alex)
	if got := states(t, r.pub.messages()); !slices.Equal(got, []string{"Busy/05"}) {
		t.Fatalf("published %v", got)
	}
	if rec, _, _ := r.store.Presence(t.Context(), alex); len(rec.Inbox)+len(rec.Pending) != 0 || rec.PublishedAt.IsZero() {
		t.Fatalf("after processing: %+v", rec)
	}
	if r.graph.wasRead(alex) {
		t.Error("a notified change read Graph")
	}
}

// TestReceiveDedupesAndBounds: a redelivery of a notification still
// waiting is stored once; a person with MaxInbox waiting gets
// ErrInboxFull.
func TestReceiveDedupesAndBounds(t *testing.T) {
	r := newRig(t, alex)
	u := update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5)
	r.receive(t, u, "same")
	r.receive(t, u, "same")
	if rec, _, _ := r.store.Presence(t.Context(), alex); len(rec.Inbox) != 1 {
		t.Fatalf("inbox %d after a redelivery, want 1", len(rec.Inbox))
	}
	for i := 1; i < poller.MaxInbox; i++ {
		r.receive(t, u)
	}
	err := r.eng.Receive(t.Context(), r.account(t, alex), poller.Inbound{ID: "one-too-many", Content: content(u)})
	if !errors.Is(err, poller.ErrInboxFull) {
		t.Fatalf("receive past MaxInbox: %v", err)
	}
}

// TestNotificationsDuplicatedAndReordered: notifications delivered newest
// first and twice never publish an older presence after a newer one.
// Opened together they go out in Graph's order (by sequence number);
// opened one at a time, a late older one, and every duplicate, change
// nothing.
func TestNotificationsDuplicatedAndReordered(t *testing.T) {
	ups := []presence.Update{
		update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5),
		update(alex, presence.AvailabilityAway, presence.ActivityAway, 7),
		update(alex, presence.AvailabilityAvailable, presence.ActivityAvailable, 6),
		update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5),
		update(alex, presence.AvailabilityAway, presence.ActivityAway, 7),
	}
	t.Run("opened together", func(t *testing.T) {
		r := newRig(t, alex)
		for _, u := range ups {
			r.receive(t, u)
		}
		r.process(t, alex)
		if got := states(t, r.pub.messages()); !slices.Equal(got, []string{"Busy/05", "Available/06", "Away/07"}) {
			t.Fatalf("published %v, want Busy/05, Available/06, Away/07", got)
		}
	})
	t.Run("opened one at a time", func(t *testing.T) {
		r := newRig(t, alex)
		for _, u := range ups {
			r.receive(t, u)
			r.process(t, alex)
		}
		if got := states(t, r.pub.messages()); !slices.Equal(got, []string{"Busy/05", "Away/07"}) {
			t.Fatalf("published %v, want Busy/05 then Away/07", got)
		}
	})
}

// TestSameMillisecondChangesGetTheirOwnIDs: two changes received in the
// same millisecond get distinct message ids (an equal id would make
// Service Bus drop the second as a duplicate).
func TestSameMillisecondChangesGetTheirOwnIDs(t *testing.T) {
	r := newRig(t, alex)
	at := time.Now()
	for i, u := range []presence.Update{update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 1), update(alex, presence.AvailabilityAway, presence.ActivityAway, 2)} {
		if err := r.eng.Receive(t.Context(), r.account(t, alex), poller.Inbound{ID: fmt.Sprint(i), Content: content(u), ReceivedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	r.process(t, alex)
	msgs := r.pub.messages()
	if len(msgs) != 2 || msgs[0].ID == msgs[1].ID {
		t.Fatalf("messages %v", msgs)
	}
}

// TestReceivedAreOpenedByTheNextCycle: notifications received by a process
// that stopped before opening them are opened by the next cycle.
func TestReceivedAreOpenedByTheNextCycle(t *testing.T) {
	r := newRig(t, alex)
	r.receive(t, update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5))
	r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityInACall, 5))
	r.eng = poller.New(poller.Options{Store: r.store, Reader: r.graph, Publisher: r.pub, Tokens: r.tok, Open: openJSON})
	r.cycle(t)
	if got := states(t, r.pub.messages()); !slices.Equal(got, []string{"Busy/05"}) {
		t.Fatalf("published %v", got)
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
		r.receive(t, update(alex, presence.AvailabilityAway, presence.ActivityAway, 6))
		r.process(t, alex)
		if n := len(r.pub.messages()); n != 1 {
			t.Fatalf("%d messages, want 1: a notification older than the last read was published", n)
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
			Open:              openJSON,
			Covered: func(context.Context) (map[presence.UserID]bool, error) {
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
		r.receive(t, update(alex, presence.AvailabilityAway, presence.ActivityAway, 2))
		_ = r.eng.Process(t.Context(), r.account(t, alex))
		r.pub.setDown(false)
		r.cycle(t)
		if rec, _, _ := r.store.Presence(t.Context(), alex); len(rec.Pending) != 0 {
			t.Fatal("a covered person's pending message was not published by the next cycle")
		}
	})
}

// TestNotificationsRaceCycles: notifications received in random order and
// twice, opened concurrently with cycles reading Graph, publish the
// person's presences in increasing sequence order, each at most once,
// ending on the newest state.
func TestNotificationsRaceCycles(t *testing.T) {
	r := newRig(t, alex)
	r.eng = poller.New(poller.Options{Store: r.store, Reader: r.graph, Publisher: r.pub, Tokens: r.tok, Open: openJSON})
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
				in := poller.Inbound{ID: fmt.Sprint(i), Content: content(ups[i]), ReceivedAt: time.Now()}
				if err := r.eng.Receive(t.Context(), a, in); err != nil {
					t.Error(err)
				}
				_ = r.eng.Process(t.Context(), a)
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
	_ = r.eng.Process(t.Context(), a)
	var last string
	var final presence.Update
	seen := map[string]bool{}
	for _, m := range r.pub.messages() {
		u := decode(t, m)
		final = u
		if seen[m.ID] {
			t.Fatalf("message %s published twice", m.ID)
		}
		seen[m.ID] = true
		if last != "" && u.Sequence <= last {
			t.Fatalf("sequence %s published after %s", u.Sequence, last)
		}
		last = u.Sequence
	}
	// The newest state is shown (under the sequence number that first
	// showed it: a newer one of the same state is no change).
	if !final.SameState(ups[n-1]) {
		t.Fatalf("ended on %s (sequence %s), want %s", final.Availability, last, ups[n-1].Availability)
	}
}
