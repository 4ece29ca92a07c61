package poller

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// WorkItem is one share of a refresh cycle (SPEC §9, functions mode with
// service_bus.work_queue): up to graph.MaxBatch people of one tenant. Its
// JSON is the work queue message's body.
type WorkItem struct {
	TenantID string            `json:"tenantId"`
	UserIDs  []presence.UserID `json:"userIds"`
}

// QueuedItem is a work item as it goes on the queue: MessageID is
// <tenantId>:<cycle start in ms>:<batch index>, so that a timer invocation
// retried within the queue's duplicate detection window enqueues nothing
// twice; SessionID is the tenant, so that Service Bus hands a tenant's
// items to one consumer at a time, which paces the tenant alone.
type QueuedItem = servicebus.QueuedMessage

// WorkQueue takes a cycle's work items (servicebus.WorkQueue is one).
type WorkQueue interface {
	Enqueue(ctx context.Context, items []QueuedItem) error
}

// ErrBadWorkItem: a work item body that is not one (not JSON, no tenant,
// too many or malformed ids). Redelivering it cannot help.
var ErrBadWorkItem = errors.New("poller: not a work item")

// ParseWorkItem reads and checks a work item body.
func ParseWorkItem(body []byte) (WorkItem, error) {
	var it WorkItem
	if err := json.Unmarshal(body, &it); err != nil {
		return it, fmt.Errorf("%w: %v", ErrBadWorkItem, err)
	}
	switch {
	case strings.TrimSpace(it.TenantID) == "":
		return it, fmt.Errorf("%w: no tenantId", ErrBadWorkItem)
	case len(it.UserIDs) == 0:
		return it, fmt.Errorf("%w: no userIds", ErrBadWorkItem)
	case len(it.UserIDs) > graph.MaxBatch:
		return it, fmt.Errorf("%w: %d userIds, the most is %d", ErrBadWorkItem, len(it.UserIDs), graph.MaxBatch)
	}
	for i, id := range it.UserIDs {
		if !id.Valid() {
			return it, fmt.Errorf("%w: userIds[%d] is not an object id", ErrBadWorkItem, i)
		}
	}
	return it, nil
}

// Plan splits a cycle into work items: everyone active, by tenant (in
// tenant order), in batches of up to graph.MaxBatch people ordered by id.
func (e *Engine) Plan(ctx context.Context) ([]WorkItem, int, error) {
	accounts, err := e.o.Store.Accounts(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("poller: list accounts: %w", err)
	}
	byTenant := map[string]*WorkItem{}
	var tenants []string
	for _, a := range accounts {
		if a.State == StateSignInRequired {
			continue
		}
		key := strings.ToLower(a.TenantID)
		it := byTenant[key]
		if it == nil {
			it = &WorkItem{TenantID: a.TenantID}
			byTenant[key] = it
			tenants = append(tenants, key)
		}
		it.UserIDs = append(it.UserIDs, a.UserID)
	}
	slices.Sort(tenants)
	var items []WorkItem
	for _, key := range tenants {
		all := byTenant[key]
		slices.SortFunc(all.UserIDs, func(a, b presence.UserID) int { return cmp.Compare(a, b) })
		for ids := range chunks(all.UserIDs, graph.MaxBatch) {
			items = append(items, WorkItem{TenantID: all.TenantID, UserIDs: ids})
		}
	}
	return items, len(accounts), nil
}

// Enqueue is a functions-mode timer invocation with a work queue: it plans
// the cycle that starts at cycleStart and puts its items on q (one message
// per item, session = tenant, id <tenantId>:<cycle start ms>:<batch index>,
// the index counting within the tenant). It returns the number of items.
func (e *Engine) Enqueue(ctx context.Context, q WorkQueue, cycleStart time.Time) (int, error) {
	items, people, err := e.Plan(ctx)
	if err != nil {
		return 0, err
	}
	ms := strconv.FormatInt(cycleStart.UnixMilli(), 10)
	queued := make([]QueuedItem, 0, len(items))
	index := map[string]int{}
	for _, it := range items {
		body, err := json.Marshal(it)
		if err != nil {
			return 0, fmt.Errorf("poller: work item: %w", err)
		}
		key := strings.ToLower(it.TenantID)
		queued = append(queued, QueuedItem{MessageID: it.TenantID + ":" + ms + ":" + strconv.Itoa(index[key]), SessionID: it.TenantID, Body: body})
		index[key]++
	}
	if err := q.Enqueue(ctx, queued); err != nil {
		return 0, fmt.Errorf("poller: enqueue work items: %w", err)
	}
	e.log.Debug("refresh cycle enqueued", "people", people, "items", len(queued), "tenants", len(index))
	return len(queued), nil
}

// Work does one work item: reads its people (in one batch for an
// app-only tenant, else each with their own token), compares and
// publishes. A person removed since the item was planned, of another
// tenant, or who must sign in again is skipped. The error is non-nil when
// any read, store write or publish failed: the caller then has the item
// redelivered whole (what went through is not published twice: the
// records say what was sent, and a message sent again keeps its id).
func (e *Engine) Work(ctx context.Context, it WorkItem) (Summary, error) {
	log := e.log.With("tenant", it.TenantID)
	var c counters
	// The accounts are read Options.Concurrency at a time: one store round
	// trip each (Table Storage), 650 of them in an item.
	found := make([]*Account, len(it.UserIDs))
	var mu sync.Mutex
	var errs []error
	e.each(ctx, len(it.UserIDs), func(i int) {
		a, err := e.o.Store.Account(ctx, it.UserIDs[i])
		switch {
		case errors.Is(err, ErrNotFound):
			// forgotten since the cycle was planned
		case err != nil:
			mu.Lock()
			errs = append(errs, fmt.Errorf("poller: work item: %w", err))
			mu.Unlock()
		case !strings.EqualFold(a.TenantID, it.TenantID):
			log.Warn("work item names a person of another tenant; skipped", "user", a.UserID, "their_tenant", a.TenantID)
		case a.State != StateSignInRequired:
			found[i] = &a
		}
	})
	if len(errs) > 0 {
		return c.summary(len(it.UserIDs)), errs[0]
	}
	people := make([]Account, 0, len(it.UserIDs))
	for _, a := range found {
		if a != nil {
			people = append(people, *a)
		}
	}
	if e.AppOnly(it.TenantID) {
		if err := e.batch(ctx, it.TenantID, people, false, &c); err != nil {
			errs = append(errs, err)
		}
	} else {
		e.each(ctx, len(people), func(i int) {
			err := e.refresh(ctx, people[i], false, &c)
			if err != nil && !errors.Is(err, ErrSignInRequired) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	if ctx.Err() != nil {
		errs = append(errs, context.Cause(ctx))
	}
	s := c.summary(len(it.UserIDs))
	level := slog.LevelDebug
	if s.Changes+s.Published+s.Failed+s.SignInRequired > 0 {
		level = slog.LevelInfo
	}
	e.logSummary(ctx, level, "work item", s)
	if len(errs) > 0 {
		return s, fmt.Errorf("poller: work item of tenant %s: %d of %d people not done: %w", it.TenantID, max(s.Failed, 1), len(it.UserIDs), errors.Join(errs...))
	}
	return s, nil
}
