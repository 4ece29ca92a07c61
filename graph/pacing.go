package graph

import (
	"context"
	"strings"
	"sync"
	"time"
)

// tenants keeps one pacer per tenant (ids compared without case), made on
// first use; both Graph clients (reads and subscription writes) use it.
type tenants struct {
	budget, concurrency int
	window              time.Duration

	mu sync.Mutex
	m  map[string]*tenant
}

func newTenants(budget int, window time.Duration, concurrency int) *tenants {
	return &tenants{budget: budget, window: window, concurrency: concurrency, m: make(map[string]*tenant)}
}

func (ts *tenants) get(id string) *tenant {
	key := strings.ToLower(id)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := ts.m[key]
	if t == nil {
		t = &tenant{id: id, slots: make(chan struct{}, ts.concurrency), budget: ts.budget, window: ts.window}
		ts.m[key] = t
	}
	return t
}

// tenant is one tenant's pacing: a sliding window of the last request
// times (at most budget of them in any window), a Retry-After block, and
// a semaphore bounding requests in flight.
type tenant struct {
	id     string
	budget int
	window time.Duration
	slots  chan struct{}

	mu sync.Mutex
	// sent holds the start times (UnixNano) of the requests inside the
	// window, oldest first: it grows with demand up to budget entries, so a
	// tenant of one person keeps one entry, not a budget's worth.
	sent    []int64
	blocked time.Time
}

// acquire waits for a slot in the window and in flight, or fails at once
// while the tenant is inside a Retry-After. The returned func releases the
// in-flight slot.
func (t *tenant) acquire(ctx context.Context) (func(), error) {
	for {
		wait, err := t.reserve(time.Now())
		if err != nil {
			return nil, err
		}
		if wait == 0 {
			break
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, context.Cause(ctx)
		case <-timer.C:
		}
	}
	select {
	case t.slots <- struct{}{}:
		return func() { <-t.slots }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// reserve takes a place in the window at now, or says how long to wait for
// one.
func (t *tenant) reserve(now time.Time) (time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Before(t.blocked) {
		return 0, &ThrottledError{TenantID: t.id, Status: 429, Until: t.blocked}
	}
	n := now.UnixNano()
	expired := 0
	for expired < len(t.sent) && n-t.sent[expired] >= int64(t.window) {
		expired++
	}
	if expired > 0 {
		t.sent = t.sent[:copy(t.sent, t.sent[expired:])]
	}
	if len(t.sent) >= t.budget {
		return time.Duration(t.sent[0] + int64(t.window) - n), nil
	}
	t.sent = append(t.sent, n)
	return 0, nil
}

// block refuses requests until until (a Retry-After), never shortening an
// earlier block.
func (t *tenant) block(until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if until.After(t.blocked) {
		t.blocked = until
	}
}
