package poller

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/presence"
)

// batches reads the people of an app-only tenant in batches of up to
// graph.MaxBatch (one Graph request each: ⌈N/650⌉ requests for N people),
// Options.BatchConcurrency at a time, and returns every batch's failure.
func (e *Engine) batches(ctx context.Context, tenantID string, people []Account, c *counters) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, e.o.BatchConcurrency)
	for chunk := range chunks(people, graph.MaxBatch) {
		select {
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, context.Cause(ctx))...)
		case sem <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := e.batch(ctx, tenantID, chunk, false, c); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// chunks yields s in slices of at most n.
func chunks[T any](s []T, n int) func(func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k:k]) {
				return
			}
			s = s[k:]
		}
	}
}

// batch is refresh for up to graph.MaxBatch people of an app-only tenant
// read in one request with the app's token: every person's record is read
// (and what they had pending published) before the Graph read, so that a
// record another caller writes meanwhile makes this one's write conflict,
// exactly as for a person read alone. A person Graph does not answer for
// is counted missing, not failed (Graph leaves out ids it does not know:
// a deleted user). The error joins every failure: the token, the read,
// and each person's store write or publish.
func (e *Engine) batch(ctx context.Context, tenantID string, people []Account, force bool, c *counters) error {
	if len(people) > graph.MaxBatch {
		return fmt.Errorf("poller: %d people in one batch, the limit is %d", len(people), graph.MaxBatch)
	}
	log := e.log.With("tenant", tenantID)
	type prepared struct {
		a   Account
		rec PresenceRecord
		tag ETag
	}
	var (
		mu    sync.Mutex
		errs  []error
		ready []prepared
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	e.each(ctx, len(people), func(i int) {
		a := people[i]
		rec, tag, ok, err := e.prepare(ctx, a, c, log.With("user", a.UserID))
		if err != nil {
			fail(err)
		}
		if ok {
			mu.Lock()
			ready = append(ready, prepared{a, rec, tag})
			mu.Unlock()
		}
	})
	if len(ready) == 0 || ctx.Err() != nil {
		return errors.Join(append(errs, context.Cause(ctx))...)
	}
	ids := make([]presence.UserID, len(ready))
	for i, p := range ready {
		ids[i] = p.a.UserID
	}
	tok, err := e.o.AppTokens.AppToken(ctx, tenantID)
	if err != nil {
		c.failed.Add(int64(len(ready)))
		log.Warn("no app token for the tenant (has its admin granted Presence.Read.All to the app?)", "err", err)
		return errors.Join(append(errs, err)...)
	}
	got, err := e.o.Reader.ByUserIDs(ctx, tenantID, tok, ids)
	if err != nil {
		if ctx.Err() != nil {
			return errors.Join(append(errs, err)...)
		}
		c.failed.Add(int64(len(ready)))
		if errors.Is(err, graph.ErrThrottled) {
			log.Debug("batch not read: the tenant is throttled", "people", len(ready), "err", err)
		} else {
			log.Warn("batch not read", "people", len(ready), "err", err)
		}
		return errors.Join(append(errs, err)...)
	}
	byID := make(map[presence.UserID]presence.Update, len(got))
	for _, u := range got {
		byID[presence.CanonicalUserID(string(u.UserID))] = u
	}
	var missing []presence.UserID
	e.each(ctx, len(ready), func(i int) {
		a := ready[i].a
		u, ok := byID[presence.CanonicalUserID(string(a.UserID))]
		if !ok {
			c.missing.Add(1)
			mu.Lock()
			missing = append(missing, a.UserID)
			mu.Unlock()
			return
		}
		u.UserID = a.UserID
		if err := e.apply(ctx, a, ready[i].rec, ready[i].tag, u, force, c, log.With("user", a.UserID)); err != nil {
			fail(err)
		}
	})
	if len(missing) > 0 {
		log.Info("graph did not answer for some people of an app-only tenant (deleted or not in the tenant?)", "missing", len(missing), "first", missing[0])
	}
	return errors.Join(errs...)
}

// each runs fn(0), ..., fn(n-1), Options.Concurrency at a time, and
// returns when all are done (or, once ctx ends, when those started are).
func (e *Engine) each(ctx context.Context, n int, fn func(int)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, e.o.Concurrency)
	for i := range n {
		select {
		case <-ctx.Done():
			return
		case sem <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
}
