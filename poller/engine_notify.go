package poller

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// This file is the engine's side of change notifications (poller/notify).
// A notification is received into the person's record (Receive: one small
// store write, after which the webhook answers Graph), then opened (Open:
// decryption, the costly part) and applied as a change without a Graph
// read, and published (Process). People a healthy subscription covers are
// read only every ReconcileInterval; in between a cycle opens what they
// received, publishes what they have pending and their heartbeats
// (keepAlive).

// MaxInbox bounds the notifications a person may have received and not
// opened yet; Receive refuses more (the webhook then asks Graph to
// deliver again later).
const MaxInbox = 256

// ErrInboxFull: the person has MaxInbox notifications waiting to be opened.
var ErrInboxFull = errors.New("poller: too many notifications waiting to be opened")

// Receive stores a change notification as received for the person, once:
// one whose id is already waiting is not stored again.
func (e *Engine) Receive(ctx context.Context, a Account, in Inbound) error {
	for attempt := 0; attempt < 8; attempt++ {
		rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
		if err != nil {
			return fmt.Errorf("poller: read presence: %w", err)
		}
		if slices.ContainsFunc(rec.Inbox, func(x Inbound) bool { return x.ID == in.ID }) {
			return nil
		}
		if len(rec.Inbox) >= MaxInbox {
			return ErrInboxFull
		}
		rec.Inbox = append(rec.Inbox, in)
		_, err = e.o.Store.PutPresence(ctx, a.UserID, rec, tag)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poller: store presence: %w", err)
		}
		return nil
	}
	return fmt.Errorf("poller: store presence: %w", ErrConflict)
}

// Process opens what the person received, applies each presence as a
// change (ordered by sequenceNumber; a duplicate, a presence older than
// the newest known or the same state is none), and publishes what is
// pending. A notification without a sequenceNumber only makes the person
// be read (its order cannot be told).
func (e *Engine) Process(ctx context.Context, a Account) error {
	err := e.open(ctx, a)
	if perr := e.Publish(ctx, a); err == nil {
		err = perr
	}
	return err
}

// open turns the person's received notifications into changes; one
// without a sequence number makes the person be read.
func (e *Engine) open(ctx context.Context, a Account) error {
	read, err := e.openInbox(ctx, a)
	if read {
		var c counters
		_ = e.refresh(ctx, a, false, &c)
	}
	return err
}

// openInbox opens and applies what the person received; read tells
// whether a notification asked for a read instead.
func (e *Engine) openInbox(ctx context.Context, a Account) (bool, error) {
	mu := e.lock(&e.opening, a.UserID)
	mu.Lock()
	defer mu.Unlock()
	log := e.log.With("user", a.UserID, "tenant", a.TenantID)
	opened := map[string]*presence.Update{} // by inbound id; nil: dropped
	for attempt := 0; attempt < 8; attempt++ {
		rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
		if err != nil {
			return false, fmt.Errorf("poller: read presence: %w", err)
		}
		if len(rec.Inbox) == 0 {
			return false, nil
		}
		var ups []presence.Update
		read := false
		for _, in := range rec.Inbox {
			u, done := opened[in.ID]
			if !done {
				u = e.openOne(ctx, a, in, log)
				opened[in.ID] = u
			}
			switch {
			case u == nil:
			case u.Sequence == "":
				read = true
			default:
				ups = append(ups, *u)
			}
		}
		slices.SortStableFunc(ups, func(x, y presence.Update) int {
			return -presence.Compare(presence.Update{Sequence: x.Sequence}, presence.Update{Sequence: y.Sequence})
		})
		for _, u := range ups {
			if err := e.applyNotified(&rec, a, u); err != nil {
				return false, err
			}
		}
		rec.Inbox = nil
		_, err = e.o.Store.PutPresence(ctx, a.UserID, rec, tag)
		if errors.Is(err, ErrConflict) {
			continue // a notification arrived, or a read wrote, meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("poller: store presence: %w", err)
		}
		return read, nil
	}
	return false, fmt.Errorf("poller: store presence: %w", ErrConflict)
}

// openOne opens one received notification; nil when it is dropped.
func (e *Engine) openOne(ctx context.Context, a Account, in Inbound, log interface {
	Warn(string, ...any)
}) *presence.Update {
	if e.o.Open == nil {
		return nil
	}
	u, err := e.o.Open(ctx, a, in.Content)
	if err == nil && u.UserID != a.UserID {
		err = fmt.Errorf("poller: the notification is about %s", u.UserID)
	}
	if err != nil {
		if _, seen := e.dropped.LoadOrStore(err.Error(), true); !seen {
			log.Warn("received notification dropped; it changes nothing", "err", err)
		}
		return nil
	}
	u.ObservedAt = in.ReceivedAt
	return &u
}

// applyNotified applies one opened presence to the record: a change is
// recorded as pending; the same state under a newer sequence number only
// moves Seen.
func (e *Engine) applyNotified(rec *PresenceRecord, a Account, u presence.Update) error {
	e.logUnknown(u, e.log)
	u.UPN, u.TenantID = a.UPN, a.TenantID
	if !changedFrom(*rec, u) {
		if newerSequence(*rec, u) {
			rec.Seen = u.Sequence
		}
		return nil
	}
	// observedAt (and so the message id) must grow per person: two
	// changes received in the same millisecond would share an id, and
	// Service Bus would drop the second as a duplicate.
	at := u.ObservedAt.UTC().Truncate(time.Millisecond)
	if floor := rec.Last.ObservedAt.UTC().Truncate(time.Millisecond); !at.After(floor) {
		at = floor.Add(time.Millisecond)
	}
	for _, p := range rec.Pending {
		if id := string(a.UserID) + ":" + fmt.Sprint(at.UnixMilli()); p.ID == id {
			at = at.Add(time.Millisecond)
		}
	}
	u.ObservedAt = at
	u.ExpiresAt = at.Add(3 * e.o.Heartbeat)
	p, err := pendingOf(u)
	if err != nil {
		return err
	}
	rec.Last = u
	rec.Last.ExpiresAt = time.Time{}
	rec.LastChange = at
	rec.Pending = append(rec.Pending, p)
	return nil
}

// Publish sends what is pending for the person, in order. A publish that
// fails leaves the messages pending for the next cycle.
func (e *Engine) Publish(ctx context.Context, a Account) error {
	rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
	if err != nil {
		return fmt.Errorf("poller: read presence: %w", err)
	}
	if len(rec.Pending) == 0 {
		return nil
	}
	var c counters
	if _, _, err := e.flush(ctx, a, rec, tag, false, &c); err != nil && !errors.Is(err, ErrConflict) {
		return err // a conflict: another caller publishes them
	}
	return nil
}

// Refresh reads one person now and publishes a change.
func (e *Engine) Refresh(ctx context.Context, a Account) error {
	var c counters
	return e.refresh(ctx, a, false, &c)
}

// keepAlive is a cycle's step for a person covered by notifications whose
// reconcile read is not due: open what they received, publish what is
// pending, and a heartbeat when one is due (the last presence again, newer
// observedAt), without reading Graph.
func (e *Engine) keepAlive(ctx context.Context, a Account, c *counters) error {
	rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
	if err != nil {
		c.failed.Add(1)
		return err
	}
	if len(rec.Inbox) > 0 {
		if err := e.open(ctx, a); err != nil {
			e.log.Warn("received notifications not opened yet", "user", a.UserID, "err", err)
		}
		if rec, tag, err = e.o.Store.Presence(ctx, a.UserID); err != nil {
			c.failed.Add(1)
			return err
		}
	}
	if rec.Lease.Held(time.Now()) {
		c.busy.Add(1)
		return nil // another caller publishes this person
	}
	if len(rec.Pending) > 0 {
		_, _, err := e.flush(ctx, a, rec, tag, false, c)
		if errors.Is(err, ErrConflict) {
			c.busy.Add(1)
			return nil
		}
		if err != nil {
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
	if floor := lastMillis(rec); now.UnixMilli() <= floor {
		now = time.UnixMilli(floor + 1).UTC() // message ids never repeat
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
	if _, _, err := e.flush(ctx, a, rec, tag, false, c); err != nil && !errors.Is(err, ErrConflict) {
		c.failed.Add(1)
		c.pending.Add(1)
		return err
	}
	return nil
}

// covered asks Options.Covered; without it (or when it fails) nobody is
// covered and everyone is read.
func (e *Engine) covered(ctx context.Context) map[presence.UserID]bool {
	if e.o.Covered == nil {
		return nil
	}
	m, err := e.o.Covered(ctx)
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

func (e *Engine) publishLock(id presence.UserID) *sync.Mutex { return e.lock(&e.publishing, id) }

func (e *Engine) lock(stripes *[64]sync.Mutex, id presence.UserID) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(string(id))))
	return &stripes[h.Sum32()%uint32(len(stripes))]
}
