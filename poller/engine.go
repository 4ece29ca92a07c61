package poller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	Grace time.Duration
	// AppOnly are the tenants read with the app's own token (AppTokens) in
	// batches of up to graph.MaxBatch people (entra.app_only_tenants).
	AppOnly   []string
	AppTokens AppTokenSource
	// BatchConcurrency bounds the batch reads of one app-only tenant in
	// flight in a cycle; default 4.
	BatchConcurrency int
	// Instance names this engine in the leases it takes (default: random);
	// LeaseFor is how long a lease lasts when its owner never releases it
	// (a crash); default 30 s, and never under 5 × Grace.
	Instance string
	LeaseFor time.Duration
	Logger   *slog.Logger
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
	appOnly map[string]bool
	leases  atomic.Uint64
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
	if o.BatchConcurrency <= 0 {
		o.BatchConcurrency = 4
	}
	if o.LeaseFor <= 0 {
		o.LeaseFor = 30 * time.Second
	}
	o.LeaseFor = max(o.LeaseFor, 5*o.Grace)
	if o.Instance == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		o.Instance = hex.EncodeToString(b)
	}
	e := &Engine{o: o, log: o.Logger, appOnly: map[string]bool{}}
	for _, t := range o.AppOnly {
		e.appOnly[strings.ToLower(t)] = true
	}
	return e
}

// AppOnly reports whether the tenant is read with the app's own token.
func (e *Engine) AppOnly(tenantID string) bool {
	return e.o.AppTokens != nil && e.appOnly[strings.ToLower(tenantID)]
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
	// Busy counts people another caller was publishing (leased) and so
	// were left to it; Missing people an app-only batch read did not
	// answer for.
	Busy    int `json:"busy,omitempty"`
	Missing int `json:"missing,omitempty"`
}

type counters struct {
	read, changes, heartbeats, published, pending, failed, signin, covered, busy, missing atomic.Int64
}

func (c *counters) summary(people int) Summary {
	return Summary{
		People: people, Read: int(c.read.Load()), Changes: int(c.changes.Load()), Heartbeats: int(c.heartbeats.Load()),
		Published: int(c.published.Load()), Pending: int(c.pending.Load()), Failed: int(c.failed.Load()), SignInRequired: int(c.signin.Load()),
		Covered: int(c.covered.Load()), Busy: int(c.busy.Load()), Missing: int(c.missing.Load()),
	}
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
	for key, people := range byTenant {
		// Each tenant has its own dispatcher and workers: a tenant that is
		// throttled or slow never holds up another's reads.
		if e.AppOnly(key) {
			wg.Go(func() { _ = e.batches(ctx, people[0].TenantID, people, &c) })
			continue
		}
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
	s := c.summary(len(accounts))
	level := slog.LevelDebug // a quiet cycle is not news
	if s.Changes+s.Published+s.Failed+s.SignInRequired > 0 {
		level = slog.LevelInfo
	}
	e.logSummary(ctx, level, "refresh cycle", s)
	return s, context.Cause(ctx)
}

func (e *Engine) logSummary(ctx context.Context, level slog.Level, msg string, s Summary) {
	e.log.Log(ctx, level, msg, "people", s.People, "read", s.Read, "changes", s.Changes, "heartbeats", s.Heartbeats,
		"published", s.Published, "pending", s.Pending, "failed", s.Failed, "signin_required", s.SignInRequired,
		"covered", s.Covered, "busy", s.Busy, "missing", s.Missing)
}

// RefreshNow reads one person at once and publishes their presence even
// when it did not change (the sign-in page's "publish the current presence
// at once").
func (e *Engine) RefreshNow(ctx context.Context, a Account) (Summary, error) {
	var c counters
	var err error
	if e.AppOnly(a.TenantID) {
		err = e.batch(ctx, a.TenantID, []Account{a}, true, &c)
	} else {
		err = e.refresh(ctx, a, true, &c)
	}
	return c.summary(1), err
}

// refresh is one person's step: publish what is pending, read, detect a
// change or a due heartbeat, store it as pending, publish it. It returns
// the first failure (a read, a store write, a publish), nil when the person
// needed nothing or was left to another caller, ErrSignInRequired when the
// person must sign in again.
func (e *Engine) refresh(ctx context.Context, a Account, force bool, c *counters) error {
	log := e.log.With("user", a.UserID, "tenant", a.TenantID)
	rec, tag, ok, flushErr := e.prepare(ctx, a, c, log)
	if !ok {
		return flushErr
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
	e.lastRead.Store(a.UserID, time.Now())
	if u.UserID != a.UserID {
		c.read.Add(1)
		c.failed.Add(1)
		log.Error("graph answered for another person", "got", u.UserID)
		return fmt.Errorf("poller: graph answered for %s", u.UserID)
	}
	return errors.Join(flushErr, e.apply(ctx, a, rec, tag, u, force, c, log))
}

// prepare reads the person's record, opens the change notifications they
// received, and publishes what an earlier cycle (or process) left pending, so that nothing goes out of order. ok is false
// when the person is to be left alone: another caller holds their lease,
// or their record cannot be read (err says why).
func (e *Engine) prepare(ctx context.Context, a Account, c *counters, log *slog.Logger) (PresenceRecord, ETag, bool, error) {
	rec, tag, err := e.o.Store.Presence(ctx, a.UserID)
	if err != nil {
		c.failed.Add(1)
		log.Warn("presence record unreadable", "err", err)
		return rec, tag, false, err
	}
	// Open what was received but not opened (a process stopped in
	// between) before anything is published, so that nothing goes out of
	// order. This step reads the person anyway: a notification asking for
	// a read is served by it.
	if len(rec.Inbox) > 0 {
		if _, err := e.openInbox(ctx, a); err != nil {
			log.Warn("received notifications not opened yet", "err", err)
		}
		if rec, tag, err = e.o.Store.Presence(ctx, a.UserID); err != nil {
			c.failed.Add(1)
			return rec, tag, false, err
		}
	}
	if rec.Lease.Held(time.Now()) {
		c.busy.Add(1)
		log.Debug("another caller is publishing this person's presence; left to it")
		return rec, tag, false, nil
	}
	if len(rec.Pending) == 0 {
		return rec, tag, true, nil
	}
	rec, tag, err = e.flush(ctx, a, rec, tag, false, c)
	if errors.Is(err, ErrConflict) {
		c.busy.Add(1)
		return rec, tag, false, nil // another caller took them meanwhile
	}
	if err != nil {
		c.failed.Add(1)
		log.Warn("pending presence not published yet", "pending", len(rec.Pending), "err", err)
	}
	return rec, tag, true, err
}

// apply compares a presence just read with the record (read before the
// read, so that a record written meanwhile makes the write conflict) and,
// when it is a change or a heartbeat is due, stores it as pending under a
// lease and publishes it.
func (e *Engine) apply(ctx context.Context, a Account, rec PresenceRecord, tag ETag, u presence.Update, force bool, c *counters, log *slog.Logger) error {
	c.read.Add(1)
	e.logUnknown(u, log)
	// A message id is <objectId>:<observedAt ms>: it must never repeat
	// for a person, or duplicate detection would drop a newer message.
	now := time.Now().UTC()
	if floor := lastMillis(rec); now.UnixMilli() <= floor {
		now = time.UnixMilli(floor + 1).UTC()
	}
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
	rec, _, err = e.flush(ctx, a, rec, tag, true, c)
	switch {
	case errors.Is(err, ErrConflict):
		return nil // another caller wrote this person meanwhile: theirs is newer
	case err != nil:
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

// lastMillis is the newest observedAt (in ms) among the record's messages:
// the last change, the last publish, and what is pending.
func lastMillis(rec PresenceRecord) int64 {
	last := max(rec.Last.ObservedAt.UnixMilli(), rec.PublishedAt.UnixMilli())
	for _, p := range rec.Pending {
		if i := strings.LastIndexByte(p.ID, ':'); i >= 0 {
			if ms, err := strconv.ParseInt(p.ID[i+1:], 10, 64); err == nil {
				last = max(last, ms)
			}
		}
	}
	return last
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

// flush publishes the pending messages in order under a lease, removing
// each once accepted. It first writes rec with a fresh lease, conditional
// on tag (stored says that rec's last pending message is new and is written
// with it); ErrConflict means another caller wrote the record since it was
// read, and nothing was published. The sends and the store writes run on
// for Options.Grace after ctx ends, so that a stop finishes the message in
// hand or leaves it pending, never half-recorded. The returned record and
// ETag are what the store holds afterwards.
func (e *Engine) flush(ctx context.Context, a Account, rec PresenceRecord, tag ETag, fresh bool, c *counters) (PresenceRecord, ETag, error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.o.Grace)
	defer cancel()
	// One flush of a person at a time in this process (a cycle and a
	// notification may both publish a person's pending messages); the one
	// that waited re-reads the record, so that it never sends again what
	// the other just sent.
	mu := e.publishLock(a.UserID)
	mu.Lock()
	defer mu.Unlock()
	if !fresh {
		if cur, curTag, err := e.o.Store.Presence(wctx, a.UserID); err == nil && curTag != tag {
			rec, tag = cur, curTag
			if len(rec.Pending) == 0 {
				return rec, tag, nil
			}
			if rec.Lease.Held(time.Now()) {
				return rec, tag, ErrConflict // another instance publishes them
			}
		}
	}
	lease := &Lease{Owner: fmt.Sprintf("%s/%d", e.o.Instance, e.leases.Add(1)), Until: time.Now().Add(e.o.LeaseFor).UTC()}
	held := rec
	held.Lease = lease
	// Store before sending: a crash after the send republishes the same id,
	// which duplicate detection removes; the lease keeps every other caller
	// from sending these messages (or newer ones) until this call is done.
	newTag, err := e.o.Store.PutPresence(wctx, a.UserID, held, tag)
	if errors.Is(err, ErrConflict) {
		return rec, tag, err
	}
	if err != nil {
		if fresh {
			rec.Pending = rec.Pending[:len(rec.Pending)-1] // it was never stored
		}
		return rec, tag, fmt.Errorf("poller: store presence: %w", err)
	}
	rec, tag = held, newTag
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
	if sent == 0 && sendErr == nil {
		sendErr = context.Cause(ctx)
	}
	if wctx.Err() != nil {
		// The grace is spent: release the lease in a short write of its own,
		// so that the next process need not wait for it to lapse.
		var cancelRelease context.CancelFunc
		wctx, cancelRelease = context.WithTimeout(context.WithoutCancel(ctx), min(e.o.Grace, time.Second))
		defer cancelRelease()
	}
	done := rec.Pending[:sent]
	for attempt := 0; ; attempt++ {
		next := rec
		next.Pending = dropSent(rec.Pending, done)
		if sent > 0 {
			next.PublishedAt = time.Now().UTC()
		}
		if next.Lease != nil && next.Lease.Owner == lease.Owner {
			next.Lease = nil
		}
		newTag, err := e.o.Store.PutPresence(wctx, a.UserID, next, tag)
		if err == nil {
			c.published.Add(int64(sent))
			return next, newTag, sendErr
		}
		if !errors.Is(err, ErrConflict) || attempt == 3 {
			// The lease lapses on its own; what was sent stays pending and
			// goes out again with the same id, which duplicate detection
			// removes.
			c.published.Add(int64(sent))
			return rec, tag, errors.Join(sendErr, fmt.Errorf("poller: record the publish: %w", err))
		}
		// Our lease lapsed and another caller wrote meanwhile: re-read and
		// remove what we sent if it is still there.
		if rec, tag, err = e.o.Store.Presence(wctx, a.UserID); err != nil {
			c.published.Add(int64(sent))
			return rec, tag, errors.Join(sendErr, err)
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
