package poller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

func personID(i int) presence.UserID {
	return presence.UserID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
}

// TestAppOnlyTenantReadInBatches: 1,400 people of an app-only tenant take
// ⌈1400/650⌉ = 3 batch reads with the app's token and no delegated token;
// a person Graph leaves out is missing, not failed; a delegated tenant
// beside it is read person by person.
func TestAppOnlyTenantReadInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.eng = poller.New(poller.Options{Store: r.store, Reader: r.graph, Publisher: r.pub, Tokens: r.tok, AppTokens: r.tok, AppOnly: []string{"APP"}})
		for i := range 1400 {
			id := personID(i)
			_ = r.store.PutAccount(t.Context(), poller.Account{UserID: id, TenantID: "app", Topic: string(id), State: poller.StateActive})
			if i != 7 {
				r.graph.set(update(id, presence.AvailabilityBusy, presence.ActivityBusy, 1))
			}
		}
		_ = r.store.PutAccount(t.Context(), poller.Account{UserID: alex, TenantID: tenant, Topic: string(alex), State: poller.StateActive})
		r.graph.set(update(alex, presence.AvailabilityAway, presence.ActivityAway, 1))
		s := r.cycle(t)
		sizes := r.graph.batchSizes()
		sort.Ints(sizes)
		if !slices.Equal(sizes, []int{100, 650, 650}) {
			t.Errorf("batch reads of %v, want 650, 650 and 100", sizes)
		}
		if s.Published != 1400 || s.Missing != 1 || s.Failed != 0 || s.Read != 1400 {
			t.Errorf("summary %+v", s)
		}
		for i := range 1400 {
			if r.tok.calls[personID(i)] > 0 {
				t.Fatal("a person of an app-only tenant was read with a delegated token")
			}
		}
		if !r.graph.wasRead(alex) {
			t.Error("the delegated tenant was not read")
		}
	})
}

// TestPlanAndEnqueue: a cycle becomes one item per tenant batch of ≤ 650
// ids, session = tenant, message id <tenant>:<cycle start ms>:<index>;
// people who must sign in again are left out.
func TestPlanAndEnqueue(t *testing.T) {
	r := newRig(t)
	for i := range 1301 {
		id := personID(i)
		_ = r.store.PutAccount(t.Context(), poller.Account{UserID: id, TenantID: "big", State: poller.StateActive})
	}
	_ = r.store.PutAccount(t.Context(), poller.Account{UserID: alex, TenantID: tenant, State: poller.StateActive})
	_ = r.store.PutAccount(t.Context(), poller.Account{UserID: sam, TenantID: tenant, State: poller.StateSignInRequired})
	q := &queue{}
	start := time.Date(2026, 12, 3, 10, 0, 30, 0, time.UTC)
	n, err := r.eng.Enqueue(t.Context(), q, start)
	if err != nil || n != 4 {
		t.Fatalf("Enqueue = %d, %v; want 4 items (650+650+1 and 1)", n, err)
	}
	ms := start.UnixMilli()
	wantIDs := []string{
		fmt.Sprintf("%s:%d:0", tenant, ms),
		fmt.Sprintf("big:%d:0", ms), fmt.Sprintf("big:%d:1", ms), fmt.Sprintf("big:%d:2", ms),
	}
	var ids []string
	seen := map[presence.UserID]bool{}
	for _, m := range q.items {
		ids = append(ids, m.MessageID)
		var it poller.WorkItem
		if err := json.Unmarshal(m.Body, &it); err != nil {
			t.Fatal(err)
		}
		if m.SessionID != it.TenantID || len(it.UserIDs) > 650 || len(it.UserIDs) == 0 {
			t.Errorf("item %s: session %s, %d ids", m.MessageID, m.SessionID, len(it.UserIDs))
		}
		for _, id := range it.UserIDs {
			if seen[id] || id == sam {
				t.Errorf("%s planned twice or while signin_required", id)
			}
			seen[id] = true
		}
		if _, err := poller.ParseWorkItem(m.Body); err != nil {
			t.Errorf("a planned item does not parse: %v", err)
		}
	}
	sort.Strings(ids)
	sort.Strings(wantIDs)
	if !slices.Equal(ids, wantIDs) || len(seen) != 1302 {
		t.Errorf("message ids %v (%d people), want %v", ids, len(seen), wantIDs)
	}
}

type queue struct{ items []poller.QueuedItem }

func (q *queue) Enqueue(_ context.Context, items []poller.QueuedItem) error {
	q.items = append(q.items, items...)
	return nil
}

func TestParseWorkItem(t *testing.T) {
	many := make([]string, 651)
	for i := range many {
		many[i] = string(personID(i))
	}
	manyJSON, _ := json.Marshal(many)
	for name, body := range map[string]string{
		"not json":   `{"tenantId":`,
		"no tenant":  `{"userIds":["` + string(alex) + `"]}`,
		"no ids":     `{"tenantId":"t","userIds":[]}`,
		"bad id":     `{"tenantId":"t","userIds":["alex@contoso.com"]}`,
		"651 ids":    `{"tenantId":"t","userIds":` + string(manyJSON) + `}`,
		"wrong type": `{"tenantId":"t","userIds":"x"}`,
	} {
		if _, err := poller.ParseWorkItem([]byte(body)); !errors.Is(err, poller.ErrBadWorkItem) {
			t.Errorf("%s: %v, want ErrBadWorkItem", name, err)
		}
	}
	it, err := poller.ParseWorkItem([]byte(`{"tenantId":"t","userIds":["` + strings.ToUpper(string(alex)) + `"]}`))
	if err != nil || it.UserIDs[0] != alex {
		t.Errorf("good item: %+v %v", it, err)
	}
}

// TestWorkFailsWhenAnyPersonFails: a publish that fails makes the item
// fail (to be redelivered); the redelivery publishes what was kept pending
// once; a removed person is skipped.
func TestWorkFailsWhenAnyPersonFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, alex, sam)
		r.graph.set(update(alex, presence.AvailabilityBusy, presence.ActivityBusy, 1))
		r.graph.set(update(sam, presence.AvailabilityAway, presence.ActivityAway, 1))
		gone := personID(99)
		it := poller.WorkItem{TenantID: tenant, UserIDs: []presence.UserID{alex, sam, gone}}
		r.pub.setDown(true)
		if _, err := r.eng.Work(t.Context(), it); err == nil {
			t.Fatal("an item whose publishes failed succeeded")
		}
		r.pub.setDown(false)
		s, err := r.eng.Work(t.Context(), it)
		if err != nil || s.Published != 2 {
			t.Fatalf("redelivery: %+v %v", s, err)
		}
		if n := len(r.pub.messages()); n != 2 {
			t.Errorf("%d messages after the redelivery, want 2", n)
		}
		r.graph.batchErr = errors.New("boom")
		r.eng = poller.New(poller.Options{Store: r.store, Reader: r.graph, Publisher: r.pub, Tokens: r.tok, AppTokens: r.tok, AppOnly: []string{tenant}})
		if _, err := r.eng.Work(t.Context(), it); err == nil {
			t.Error("an app-only item whose batch read failed succeeded")
		}
	})
}

// TestRacingConsumersNeverPublishOutOfOrder: two consumers (two engines,
// as two Functions instances, sharing the store) work items of the same
// tenant at once. A scheduler forces the interleaving of every store,
// Graph and Service Bus call they make, over many random schedules, with
// publishes that fail now and then; Graph answers every read with a newer
// presence. The published messages of each person must never go back:
// each has a sequence at least the highest sent before it, and an equal
// one only as a retry of the same message (same id, which duplicate
// detection removes).
func TestRacingConsumersNeverPublishOutOfOrder(t *testing.T) {
	for _, appOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("app-only=%v", appOnly), func(t *testing.T) {
			for seed := range uint64(300) {
				raceOnce(t, seed, appOnly)
			}
		})
	}
}

func raceOnce(t *testing.T, seed uint64, appOnly bool) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 11))
	store := newMemStore()
	people := []presence.UserID{alex, sam}
	for _, id := range people {
		_ = store.PutAccount(t.Context(), poller.Account{UserID: id, TenantID: tenant, Topic: string(id), State: poller.StateActive})
	}
	w := &world{rnd: rnd, req: make(chan string), done: make(chan string), grant: map[string]chan struct{}{}}
	var appTenants []string
	if appOnly {
		appTenants = []string{tenant}
	}
	var wg sync.WaitGroup
	for _, name := range []string{"A", "B"} {
		w.grant[name] = make(chan struct{})
		g := &gated{name: name, w: w, Store: store}
		eng := poller.New(poller.Options{Store: g, Reader: g, Publisher: g, Tokens: g, AppTokens: g, AppOnly: appTenants, Concurrency: 1, Instance: name})
		wg.Go(func() {
			defer func() { w.done <- name }()
			for range 2 {
				_, _ = eng.Work(context.Background(), poller.WorkItem{TenantID: tenant, UserIDs: people})
			}
		})
	}
	w.drive([]string{"A", "B"})
	wg.Wait()
	// Then a quiet cycle with nothing failing: nothing stays pending.
	w.failRate = -1
	final := poller.New(poller.Options{Store: store, Reader: &gated{w: w, free: true}, Publisher: &gated{w: w, free: true}, Tokens: &gated{w: w, free: true},
		AppTokens: &gated{w: w, free: true}, AppOnly: appTenants})
	if _, err := final.Work(context.Background(), poller.WorkItem{TenantID: tenant, UserIDs: people}); err != nil {
		t.Fatalf("seed %d: the quiet item failed: %v", seed, err)
	}
	for _, id := range people {
		rec, _, _ := store.Presence(t.Context(), id)
		if len(rec.Pending) != 0 || rec.Lease != nil {
			t.Fatalf("seed %d: %s has %d pending and lease %v after a quiet item", seed, id, len(rec.Pending), rec.Lease)
		}
		var highest string
		var highestID string
		for _, m := range w.published[id] {
			u, err := presence.Decode(m.Body, presence.Meta{})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case u.Sequence < highest:
				t.Fatalf("seed %d: %s: %s (sequence %s) published after sequence %s: out of order\n%s", seed, id, m.ID, u.Sequence, highest, w.trace())
			case u.Sequence == highest && m.ID != highestID:
				t.Fatalf("seed %d: %s: two messages of sequence %s (%s, %s)", seed, id, u.Sequence, highestID, m.ID)
			}
			highest, highestID = u.Sequence, m.ID
		}
		if rec.Last.Sequence != highest {
			t.Fatalf("seed %d: %s: the store's last presence %s was never published (last sent %s)", seed, id, rec.Last.Sequence, highest)
		}
	}
}

// world is the shared Graph, Service Bus and scheduler of one race.
type world struct {
	rnd      *rand.Rand
	failRate float64 // chance that a publish fails; < 0: never
	req      chan string
	done     chan string
	grant    map[string]chan struct{}

	mu        sync.Mutex
	seq       int
	published map[presence.UserID][]poller.Message
	steps     []string
}

// drive lets exactly one consumer run at a time: it waits until every
// consumer still working stands at a gate, then lets a random one through.
func (w *world) drive(names []string) {
	if w.failRate == 0 {
		w.failRate = 0.15
	}
	live := map[string]bool{}
	for _, n := range names {
		live[n] = true
	}
	waiting := map[string]bool{}
	for len(live) > 0 {
		for len(waiting) < len(live) {
			select {
			case n := <-w.req:
				waiting[n] = true
			case n := <-w.done:
				delete(live, n)
			}
		}
		if len(live) == 0 {
			return
		}
		var ready []string
		for n := range waiting {
			ready = append(ready, n)
		}
		sort.Strings(ready)
		pick := ready[w.rnd.IntN(len(ready))]
		delete(waiting, pick)
		w.grant[pick] <- struct{}{}
	}
}

func (w *world) trace() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.steps, "\n")
}

// gated wraps the shared store and plays Graph, Service Bus and Entra for
// one consumer; every call first waits for the scheduler.
type gated struct {
	poller.Store
	name string
	w    *world
	free bool // no scheduler (the quiet cycle)
}

func (g *gated) gate(what string) {
	if g.free {
		return
	}
	g.w.req <- g.name
	<-g.w.grant[g.name]
	g.w.mu.Lock()
	g.w.steps = append(g.w.steps, g.name+" "+what)
	g.w.mu.Unlock()
}

func (g *gated) Account(ctx context.Context, id presence.UserID) (poller.Account, error) {
	g.gate("account")
	return g.Store.Account(ctx, id)
}

func (g *gated) Presence(ctx context.Context, id presence.UserID) (poller.PresenceRecord, poller.ETag, error) {
	g.gate("read record " + string(id[:4]))
	return g.Store.Presence(ctx, id)
}

func (g *gated) PutPresence(ctx context.Context, id presence.UserID, rec poller.PresenceRecord, tag poller.ETag) (poller.ETag, error) {
	g.gate(fmt.Sprintf("write record %s (%d pending, lease %v)", id[:4], len(rec.Pending), rec.Lease != nil))
	return g.Store.PutPresence(ctx, id, rec, tag)
}

// next is Graph's answer: always a newer presence than any before.
func (g *gated) next(id presence.UserID) presence.Update {
	g.w.mu.Lock()
	defer g.w.mu.Unlock()
	g.w.seq++
	a := presence.AvailabilityBusy
	if g.w.seq%2 == 0 {
		a = presence.AvailabilityAvailable
	}
	return presence.Update{UserID: id, Availability: a, Activity: presence.ActivityPresenceUnknown, Sequence: fmt.Sprintf("6386800000%08d", g.w.seq)}
}

func (g *gated) Me(_ context.Context, _, token string) (presence.Update, error) {
	g.gate("graph read " + token[:4])
	return g.next(presence.UserID(token)), nil
}

func (g *gated) ByUserIDs(_ context.Context, _, _ string, ids []presence.UserID) ([]presence.Update, error) {
	g.gate(fmt.Sprintf("graph batch of %d", len(ids)))
	var out []presence.Update
	for _, id := range ids {
		out = append(out, g.next(id))
	}
	return out, nil
}

func (g *gated) Token(_ context.Context, a poller.Account) (string, error) {
	return string(a.UserID), nil
}

func (g *gated) AppToken(context.Context, string) (string, error) { return "app", nil }

func (g *gated) Publish(_ context.Context, _, _ string, m poller.Message) error {
	g.gate("publish " + m.ID)
	g.w.mu.Lock()
	defer g.w.mu.Unlock()
	if g.w.failRate > 0 && g.w.rnd.Float64() < g.w.failRate {
		g.w.steps = append(g.w.steps, "  (failed)")
		return errors.New("service bus unreachable")
	}
	if g.w.published == nil {
		g.w.published = map[presence.UserID][]poller.Message{}
	}
	id := presence.UserID(m.UserID)
	g.w.published[id] = append(g.w.published[id], m)
	return nil
}
