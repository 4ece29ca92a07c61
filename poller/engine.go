package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/presence"
)

// Options configure an Engine.
type Options struct {
	Store     Store
	Reader    PresenceReader
	Publisher Publisher
	Tokens    TokenSource
	// Heartbeat republishes an unchanged presence this often; expiresAt is
	// publish time + 3 × Heartbeat.
	Heartbeat time.Duration
	// Concurrency bounds the people of one tenant read at once; default 64.
	Concurrency int
	// Grace bounds how long a person's publish may run on after the cycle's
	// context ends (SIGTERM): it is finished or abandoned with its message
	// still pending. Default 2 s.
	Grace  time.Duration
	Logger *slog.Logger
	// Covered, when set, tells which people a healthy change-notification
	// subscription covers (poller/notify's Manager.Covered). A cycle reads
	// such a person only once ReconcileInterval has passed since their last
	// read; in between it only opens their received notifications,
	// publishes what is pending and heartbeats.
	Covered func(ctx context.Context) (map[presence.UserID]bool, error)
	// ReconcileInterval is how often a covered person is still read
	// (Graph can miss or drop notifications); default 5 minutes.
	ReconcileInterval time.Duration
	// Open reads a received change notification's content (poller/notify
	// decrypts and checks it) into the presence it carries; an error drops
	// the notification (forged or damaged). Nil drops every one.
	Open func(ctx context.Context, a Account, content []byte) (presence.Update, error)
}

// Engine runs refresh cycles. One cycle runs at a time; a second caller
// waits for it.
type Engine struct {
	o   Options
	log *slog.Logger

	cycle sync.Mutex
	// unknown remembers availability/activity values already logged.
	unknown sync.Map
	// lastRead is when each person was last read from Graph
	// (presence.UserID → time.Time).
	lastRead sync.Map
	// publishing serialises one person's publishes within this process
	// (a cycle and a notification may both flush a person's pending
	// messages), striped by user id; opening serialises the opening of a
	// person's received notifications.
	publishing [64]sync.Mutex
	opening    [64]sync.Mutex
	// dropped remembers the reasons already logged for dropping a
	// received notification.
	dropped sync.Map
}

// New makes an Engine.
func New(o Options) *Engine {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Minute
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Grace <= 0 {
		o.Grace = 2 * time.Second
	}
	if o.ReconcileInterval <= 0 {
		o.ReconcileInterval = 5 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{o: o, log: o.Logger}
}

// Summary is what one cycle did.
type Summary struct {
	People         int `json:"people"`
	Read           int `json:"read"`
	Changes        int `json:"changes"`
	Heartbeats     int `json:"heartbeats"`
	Published      int `json:"published"`
	Pending        int `json:"pending"`
	Failed         int `json:"failed"`
	SignInRequired int `json:"signinRequired"`
	// Covered counts the people a change-notification subscription covers
	// who were not read in this cycle (their reconcile read is not due).
	Covered int `json:"covered"`
}

type counters struct {
	read, changes, heartbeats, published, pending, failed, signin, covered atomic.Int64
}

// Cycle reads everyone active once, publishes what changed (and what was
// still pending), and returns a summary. It returns early, with what it did,
// when ctx ends; a publish in progress then gets Options.Grace to finish.
func (e *Engine) Cycle(ctx context.Context) (Summary, error) {
	e.cycle.Lock()
	defer e.cycle.Unlock()
	accounts, err := e.o.Store.Accounts(ctx)
	if err != nil {
		return Summary{}, fmt.Errorf("poller: list accounts: %w", err)
	}
	covered := e.covered(ctx)
	byTenant := map[string][]Account{}
	for _, a := range accounts {
		if a.State == StateSignInRequired {
			continue
		}
		key := strings.ToLower(a.TenantID)
		byTenant[key] = append(byTenant[key], a)
	}
	var c counters
	var wg sync.WaitGroup
	for _, people := range byTenant {
		// Each tenant has its own dispatcher and workers: a tenant that is
		// throttled or slow never holds up another's reads.
		wg.Go(func() {
			var tw sync.WaitGroup
			defer tw.Wait()
			sem := make(chan struct{}, e.o.Concurrency)
			for _, a := range people {
				select {
				case <-ctx.Done():
					return
				case sem <- struct{}{}:
				}
				tw.Go(func() {
					defer func() { <-sem }()
					if covered[a.UserID] && !e.readDue(a.UserID) {
						c.covered.Add(1)
						_ = e.keepAlive(ctx, a, &c)
						return
					}
					_ = e.refresh(ctx, a, false, &c)
				})
			}
		})
	}
	wg.Wait()
	s := Summary{
		People: len(accounts), Read: int(c.read.Load()), Changes: int(c.changes.Load()), Heartbeats: int(c.heartbeats.Load()),
		Published: int(c.published.Load()), Pending: int(c.pending.Load()), Failed: int(c.failed.Load()), SignInRequired: int(c.signin.Load()),
		Covered: int(c.covered.Load()),
	}
	level := slog.LevelDebug // a quiet cycle is not news
	if s.Changes+s.Published+s.Failed+s.SignInRequired > 0 {
		level = slog.LevelInfo
	}
	e.log.Log(ctx, level, "refresh cycle", "people", s.People, "read", s.Read, "changes", s.Changes, "heartbeats", s.Heartbeats,
		"published", s.Published, "pending", s.Pending, "failed", s.Failed, "signin_required", s.SignInRequired, "covered", s.Covered)
	return s, context.Cause(ctx)
}

// RefreshNow reads one person at once and publishes their presence even
// when it did not change (the sign-in page's "publish the current presence
// at once").
func (e *Engine) RefreshNow(ctx context.Context, a Account) (Summary, error) {
	var c counters
	err := e.refresh(ctx, a, true, &c)
	return Summary{People: 1, Read: int(c.read.Load()), Changes: int(c.changes.Load()), Heartbeats: int(c.heartbeats.Load()),
		Published: int(c.published.Load()), Pending: int(c.pending.Load()), Failed: int(c.failed.Load())}, err
}

// refresh is one person's step: publish what is pending, read, detect a
// change or a due heartbeat, store it as pending, publish it.
func (e *Engine) refresh(ctx context.Context, a Account, force bool, c *counters) error {
	log := e.log.With("user", a.UserID, "tenant", a.TenantID)
	rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
	if err != nil {
		c.failed.Add(1)
		log.Warn("presence record unreadable", "err", err)
		return err
	}
	// Open what was received but not opened (a process stopped in
	// between), then publish what an earlier cycle (or process) left
	// pending first, so that nothing goes out of order.
	if len(rec.Inbox) > 0 {
		// This step reads the person anyway: a notification asking for a
		// read is served by it.
		if _, err := e.openInbox(ctx, a); err != nil {
			log.Warn("received notifications not opened yet", "err", err)
		}
		if rec, tag, err = e.o.Store.Presence(ctx, a.UserID); err != nil {
			c.failed.Add(1)
			return err
		}
	}
	if len(rec.Pending) > 0 {
		if rec, tag, err = e.flush(ctx, a, rec, tag, c); err != nil {
			c.failed.Add(1)
			log.Warn("pending presence not published yet", "pending", len(rec.Pending), "err", err)
		}
	}
	tok, err := e.o.Tokens.Token(ctx, a)
	if errors.Is(err, ErrSignInRequired) {
		c.signin.Add(1)
		e.signInRequired(ctx, a, log)
		return err
	}
	if err != nil {
		c.failed.Add(1)
		log.Warn("no access token", "err", err)
		return err
	}
	u, err := e.o.Reader.Me(ctx, a.TenantID, tok)
	if err != nil {
		if ctx.Err() != nil {
			return err // stopping, not failing
		}
		c.failed.Add(1)
		if errors.Is(err, graph.ErrThrottled) {
			log.Debug("presence not read: the tenant is throttled", "err", err)
		} else {
			log.Warn("presence not read", "err", err)
		}
		return err
	}
	c.read.Add(1)
	e.lastRead.Store(a.UserID, time.Now())
	if u.UserID != a.UserID {
		c.failed.Add(1)
		log.Error("graph answered for another person", "got", u.UserID)
		return fmt.Errorf("poller: graph answered for %s", u.UserID)
	}
	e.logUnknown(u, log)
	now := time.Now().UTC()
	u.ObservedAt = now
	u.UPN, u.TenantID = a.UPN, a.TenantID
	u.ExpiresAt = now.Add(3 * e.o.Heartbeat)
	changed := changedFrom(rec, u)
	heartbeat := !changed && len(rec.Pending) == 0 && !rec.PublishedAt.IsZero() &&
		(force || now.Sub(rec.PublishedAt) >= e.o.Heartbeat)
	if !changed && !heartbeat && !(force && len(rec.Pending) == 0) {
		// Nothing to publish. Only a newer sequence number of the same
		// state is written, so that a notification older than this read
		// that arrives late is recognised as older.
		if newerSequence(rec, u) {
			rec.Seen = u.Sequence
			_, _ = e.o.Store.PutPresence(context.WithoutCancel(ctx), a.UserID, rec, tag)
		}
		return nil
	}
	if changed || rec.PublishedAt.IsZero() {
		c.changes.Add(1)
		rec.Last = u
		rec.Last.ExpiresAt = time.Time{}
		rec.LastChange = now
	} else {
		c.heartbeats.Add(1)
		hb := rec.Last
		hb.ObservedAt, hb.ExpiresAt, hb.UPN = now, u.ExpiresAt, a.UPN
		u = hb
	}
	p, err := pendingOf(u)
	if err != nil {
		c.failed.Add(1)
		return err
	}
	rec.Pending = append(rec.Pending, p)
	// Store before sending: a crash after the send republishes the same id,
	// which duplicate detection removes.
	tag, err = e.o.Store.PutPresence(context.WithoutCancel(ctx), a.UserID, rec, tag)
	if errors.Is(err, ErrConflict) {
		return nil // another instance handled this person meanwhile
	}
	if err != nil {
		c.failed.Add(1)
		log.Warn("presence not stored", "err", err)
		return err
	}
	if rec, _, err = e.flush(ctx, a, rec, tag, c); err != nil {
		c.failed.Add(1)
		c.pending.Add(int64(len(rec.Pending)))
		log.Warn("presence change kept pending", "pending", len(rec.Pending), "err", err)
		return err
	}
	return nil
}

// changedFrom tells whether u is a change against the record: by Graph's
// sequenceNumber when both have one (equal: unchanged; lower: a stale read,
// not a change), otherwise by the state shown.
func changedFrom(rec PresenceRecord, u presence.Update) bool {
	if rec.Last.UserID == "" {
		return true
	}
	if seen := rec.seen(); seen != "" && u.Sequence != "" {
		if seen == u.Sequence {
			return false
		}
		if presence.Compare(presence.Update{Sequence: seen}, presence.Update{Sequence: u.Sequence}) < 0 {
			return false
		}
	}
	return !rec.Last.SameState(u)
}

func pendingOf(u presence.Update) (Pending, error) {
	body, err := presence.Encode(u)
	if err != nil {
		return Pending{}, fmt.Errorf("poller: %w", err)
	}
	return Pending{
		ID:           string(u.UserID) + ":" + strconv.FormatInt(u.ObservedAt.UnixMilli(), 10),
		Body:         body,
		Availability: u.Availability.String(),
		Activity:     u.Activity.String(),
	}, nil
}

// flush publishes the pending messages in order, removing each once
// accepted. The sends and the store writes run on for Options.Grace after
// ctx ends, so that a stop finishes the message in hand or leaves it
// pending, never half-recorded.
func (e *Engine) flush(ctx context.Context, a Account, rec PresenceRecord, tag ETag, c *counters) (PresenceRecord, ETag, error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.o.Grace)
	defer cancel()
	// One flush of a person at a time; the one that waited re-reads the
	// record, so that it never sends again what the other just sent.
	mu := e.publishLock(a.UserID)
	mu.Lock()
	defer mu.Unlock()
	if cur, curTag, err := e.o.Store.Presence(wctx, a.UserID); err == nil && curTag != tag {
		rec, tag = cur, curTag
		if len(rec.Pending) == 0 {
			return rec, tag, nil
		}
	}
	sent := 0
	var sendErr error
	for _, p := range rec.Pending {
		if sent > 0 && ctx.Err() != nil {
			break // stopping: leave the rest for the next process
		}
		err := e.o.Publisher.Publish(wctx, a.Namespace, a.Topic, Message{ID: p.ID, Body: p.Body, UserID: string(a.UserID), Availability: p.Availability, Activity: p.Activity})
		if err != nil {
			sendErr = err
			break
		}
		sent++
	}
	if sent == 0 {
		if sendErr == nil {
			sendErr = context.Cause(ctx)
		}
		return rec, tag, sendErr
	}
	done := rec.Pending[:sent]
	for attempt := 0; ; attempt++ {
		next := rec
		next.Pending = dropSent(rec.Pending, done)
		next.PublishedAt = time.Now().UTC()
		newTag, err := e.o.Store.PutPresence(wctx, a.UserID, next, tag)
		if err == nil {
			c.published.Add(int64(sent))
			return next, newTag, sendErr
		}
		if !errors.Is(err, ErrConflict) || attempt == 3 {
			return rec, tag, fmt.Errorf("poller: record the publish: %w", err)
		}
		// Another instance wrote meanwhile: re-read and remove what we sent
		// if it is still there.
		if rec, tag, err = e.o.Store.Presence(wctx, a.UserID); err != nil {
			return rec, tag, err
		}
	}
}

// dropSent removes the sent messages (by id) from pending.
func dropSent(pending, sent []Pending) []Pending {
	ids := make(map[string]bool, len(sent))
	for _, p := range sent {
		ids[p.ID] = true
	}
	var out []Pending
	for _, p := range pending {
		if !ids[p.ID] {
			out = append(out, p)
		}
	}
	return out
}

// signInRequired marks the person once; later cycles skip them until they
// sign in again.
func (e *Engine) signInRequired(ctx context.Context, a Account, log *slog.Logger) {
	cur, err := e.o.Store.Account(ctx, a.UserID)
	if err != nil || cur.State == StateSignInRequired {
		return
	}
	cur.State = StateSignInRequired
	if err := e.o.Store.PutAccount(context.WithoutCancel(ctx), cur); err != nil {
		log.Warn("sign-in state not stored", "err", err)
		return
	}
	log.Warn("sign-in required: the person's refresh token no longer works; they must sign in again", "upn", a.UPN)
}

func (e *Engine) logUnknown(u presence.Update, log *slog.Logger) {
	for _, v := range []string{u.UnknownAvailability, u.UnknownActivity} {
		if v == "" {
			continue
		}
		if _, seen := e.unknown.LoadOrStore(v, true); !seen {
			log.Warn("graph sent an unknown presence value; it is published as PresenceUnknown", "value", v)
		}
	}
}
