package poller

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// This file is the engine's side of change notifications (poller/notify):
// a presence Graph pushed is recorded as a change without a read (Notified)
// and published (Publish); people covered by a healthy subscription are
// read only every ReconcileInterval, and in between a cycle only publishes
// what they have pending and their heartbeats (keepAlive).

// Notified records a presence that Graph pushed for the person as a change
// (stored as pending, the store's compare-and-swap deciding against
// concurrent reads and notifications), without publishing it: the webhook
// answers Graph once it returned, then calls Publish. It reports whether a
// change was recorded: a duplicate, a presence older than the newest known
// (by sequenceNumber) or the same state is not one.
func (e *Engine) Notified(ctx context.Context, a Account, u presence.Update) (bool, error) {
	if u.UserID != a.UserID {
		return false, fmt.Errorf("poller: a notification for %s applied to %s", u.UserID, a.UserID)
	}
	log := e.log.With("user", a.UserID, "tenant", a.TenantID)
	e.logUnknown(u, log)
	for attempt := 0; attempt < 8; attempt++ {
		rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
		if err != nil {
			return false, fmt.Errorf("poller: read presence: %w", err)
		}
		now := time.Now().UTC()
		u.ObservedAt = now
		u.UPN, u.TenantID = a.UPN, a.TenantID
		u.ExpiresAt = now.Add(3 * e.o.Heartbeat)
		if !changedFrom(rec, u) {
			if newerSequence(rec, u) {
				rec.Seen = u.Sequence
				if _, err := e.o.Store.PutPresence(ctx, a.UserID, rec, tag); errors.Is(err, ErrConflict) {
					continue
				}
			}
			return false, nil
		}
		rec.Last = u
		rec.Last.ExpiresAt = time.Time{}
		rec.LastChange = now
		p, err := pendingOf(u)
		if err != nil {
			return false, err
		}
		rec.Pending = append(rec.Pending, p)
		_, err = e.o.Store.PutPresence(ctx, a.UserID, rec, tag)
		if errors.Is(err, ErrConflict) {
			continue // a read or another notification wrote meanwhile: decide again
		}
		if err != nil {
			return false, fmt.Errorf("poller: store presence: %w", err)
		}
		return true, nil
	}
	return false, fmt.Errorf("poller: store presence: %w", ErrConflict)
}

// Publish sends what is pending for the person, in order (after Notified).
// A publish that fails leaves the messages pending for the next cycle.
func (e *Engine) Publish(ctx context.Context, a Account) error {
	rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
	if err != nil {
		return fmt.Errorf("poller: read presence: %w", err)
	}
	if len(rec.Pending) == 0 {
		return nil
	}
	var c counters
	if _, _, err := e.flush(ctx, a, rec, tag, &c); err != nil {
		return err
	}
	return nil
}

// Refresh reads one person now and publishes a change (a notification
// without a sequenceNumber is only a hint: the read, which has one,
// decides).
func (e *Engine) Refresh(ctx context.Context, a Account) error {
	var c counters
	return e.refresh(ctx, a, false, &c)
}

// keepAlive is a cycle's step for a person covered by notifications whose
// reconcile read is not due: publish what is pending, and a heartbeat when
// one is due (the last presence again, newer observedAt), without reading
// Graph.
func (e *Engine) keepAlive(ctx context.Context, a Account, c *counters) error {
	rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
	if err != nil {
		c.failed.Add(1)
		return err
	}
	if len(rec.Pending) > 0 {
		if _, _, err := e.flush(ctx, a, rec, tag, c); err != nil {
			c.failed.Add(1)
			c.pending.Add(int64(len(rec.Pending)))
			e.log.Warn("pending presence not published yet", "user", a.UserID, "pending", len(rec.Pending), "err", err)
		}
		return err
	}
	now := time.Now().UTC()
	if rec.Last.UserID == "" || rec.PublishedAt.IsZero() || now.Sub(rec.PublishedAt) < e.o.Heartbeat {
		return nil
	}
	hb := rec.Last
	hb.ObservedAt, hb.ExpiresAt, hb.UPN, hb.TenantID = now, now.Add(3*e.o.Heartbeat), a.UPN, a.TenantID
	p, err := pendingOf(hb)
	if err != nil {
		return err
	}
	rec.Pending = append(rec.Pending, p)
	if tag, err = e.o.Store.PutPresence(context.WithoutCancel(ctx), a.UserID, rec, tag); err != nil {
		if errors.Is(err, ErrConflict) {
			return nil // a notification or another instance wrote meanwhile
		}
		c.failed.Add(1)
		return err
	}
	c.heartbeats.Add(1)
	if _, _, err := e.flush(ctx, a, rec, tag, c); err != nil {
		c.failed.Add(1)
		c.pending.Add(1)
		return err
	}
	return nil
}

// covered asks Options.Notified; without it (or when it fails) nobody is
// covered and everyone is read.
func (e *Engine) covered(ctx context.Context) map[presence.UserID]bool {
	if e.o.Notified == nil {
		return nil
	}
	m, err := e.o.Notified(ctx)
	if err != nil {
		e.log.Warn("subscriptions unreadable: everyone is read this cycle", "err", err)
		return nil
	}
	return m
}

// readDue tells whether a covered person's reconcile read is due.
func (e *Engine) readDue(id presence.UserID) bool {
	v, ok := e.lastRead.Load(id)
	return !ok || time.Since(v.(time.Time)) >= e.o.ReconcileInterval
}

// newerSequence tells whether u carries a sequence number newer than any
// the record knows.
func newerSequence(rec PresenceRecord, u presence.Update) bool {
	seen := rec.seen()
	return u.Sequence != "" && seen != "" && presence.Compare(presence.Update{Sequence: seen}, presence.Update{Sequence: u.Sequence}) > 0
}

func (e *Engine) publishLock(id presence.UserID) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &e.publishing[h.Sum32()%uint32(len(e.publishing))]
}
