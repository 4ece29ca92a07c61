package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/backoff"
	"github.com/presence-bridge/presence-bridge/presence"
)

// SinkSpec names a sink for the core. At most one sink is Durable; its
// acceptance of a change is what lets the source complete the message.
type SinkSpec struct {
	Name    string
	Sink    Sink
	Durable bool
}

// Options configure a Core.
type Options struct {
	// Users are the configured user ids.
	Users  []presence.UserID
	Sinks  []SinkSpec
	Logger *slog.Logger
}

// Core holds every user's state and drives the sinks. Create it with New and
// run it with Run; Submit and WaitReady may be called before Run starts.
type Core struct {
	log     *slog.Logger
	workers []*sinkWorker
	durable DurableSink // nil when no sink is durable

	mu      sync.Mutex
	users   map[presence.UserID]*user
	stopped bool
	// nextExpiry is the earliest expiry the expiry timer is set for; a user
	// that expires earlier wakes the timer through expiryWake.
	nextExpiry time.Time
	expiryWake chan struct{}
	logged     map[string]struct{} // values logged once: unknown presence values, unconfigured users
}

type user struct {
	last      presence.Update // the last update applied; for ordering
	hasLast   bool
	state     State
	expiresAt time.Time // zero: the sender promised nothing
	acks      []pendingAck
}

type pendingAck struct {
	version uint64
	done    func(Outcome)
}

var _ Submitter = (*Core)(nil)

// maxLogged bounds the set of values logged once, so hostile input cannot grow
// it without end.
const maxLogged = 256

// New returns a core for the configured users and sinks.
func New(opts Options) (*Core, error) {
	if len(opts.Users) == 0 {
		return nil, errors.New("bridge: no users configured")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Core{
		log:        logger,
		users:      make(map[presence.UserID]*user, len(opts.Users)),
		expiryWake: make(chan struct{}, 1),
		logged:     make(map[string]struct{}),
	}
	for _, id := range opts.Users {
		id = presence.CanonicalUserID(string(id))
		if _, dup := c.users[id]; dup {
			return nil, fmt.Errorf("bridge: user %s configured twice", id)
		}
		c.users[id] = &user{}
	}
	for i, s := range opts.Sinks {
		if s.Sink == nil {
			return nil, fmt.Errorf("bridge: sink %d (%s) is nil", i, s.Name)
		}
		w := newSinkWorker(c, s)
		c.workers = append(c.workers, w)
		if !s.Durable {
			continue
		}
		if c.durable != nil {
			return nil, fmt.Errorf("bridge: sinks %s and %s are both durable; at most one may be", c.workerDurableName(), s.Name)
		}
		ds, ok := s.Sink.(DurableSink)
		if !ok {
			return nil, fmt.Errorf("bridge: durable sink %s has no WaitReady", s.Name)
		}
		c.durable = ds
	}
	return c, nil
}

func (c *Core) workerDurableName() string {
	for _, w := range c.workers {
		if w.durable {
			return w.name
		}
	}
	return ""
}

// WaitReady blocks while the durable sink cannot take states (a source then
// takes no new messages), and returns ctx's error if ctx ends first.
func (c *Core) WaitReady(ctx context.Context) error {
	if c.durable == nil {
		return ctx.Err()
	}
	return c.durable.WaitReady(ctx)
}

// Submit applies u, produced by the named source, and calls done once the
// message can be settled: at once when it changes nothing, otherwise once the
// durable sink (without one: every sink's queue) has taken the new state.
func (c *Core) Submit(u presence.Update, source string, done func(Outcome)) {
	u.UserID = presence.CanonicalUserID(string(u.UserID))
	if outcome := c.apply(u, source, done); outcome != 0 {
		done(outcome)
	}
}

// logNothing says at debug level why a message changed nothing (why, say,
// a lamp did not change): outcome stale (why: older or duplicate) or
// heartbeat.
func (c *Core) logNothing(u presence.Update, o Outcome, why string) {
	ctx := context.Background()
	if !c.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{slog.String("user_id", string(u.UserID)), slog.String("outcome", o.String())}
	if why != "" {
		attrs = append(attrs, slog.String("why", why))
	}
	attrs = append(attrs, slog.String("sequence", u.Sequence), slog.Time("observed_at", u.ObservedAt))
	c.log.LogAttrs(ctx, slog.LevelDebug, "message changed nothing", attrs...)
}

// apply updates the user's state under the lock and hands a changed state to
// every sink's queue before the lock is released, so that no sink can see a
// user's versions out of order. It returns the outcome to report now (0 when
// done is kept until the durable sink confirms).
func (c *Core) apply(u presence.Update, source string, done func(Outcome)) Outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return Dropped
	}
	usr := c.users[u.UserID]
	if usr == nil {
		c.logOnce("user:"+string(u.UserID), "message for a user that is not configured; completing it", slog.String("user_id", string(u.UserID)))
		return Unconfigured
	}
	if u.UnknownAvailability != "" {
		c.logOnce("availability:"+u.UnknownAvailability, "unknown availability value; showing PresenceUnknown", slog.String("value", u.UnknownAvailability))
	}
	if u.UnknownActivity != "" {
		c.logOnce("activity:"+u.UnknownActivity, "unknown activity value; showing PresenceUnknown", slog.String("value", u.UnknownActivity))
	}
	if usr.hasLast {
		switch cmp := presence.Compare(usr.last, u); {
		case cmp < 0:
			c.logNothing(u, Stale, "older than the state shown")
			return Stale
		case cmp == 0:
			c.logNothing(u, Stale, "duplicate")
			return Stale
		}
	}
	same := usr.hasLast && usr.last.SameState(u)
	usr.last, usr.hasLast = u, true
	usr.expiresAt = u.ExpiresAt
	c.scheduleExpiry(u.ExpiresAt)
	if same && usr.state.Online {
		c.logNothing(u, Heartbeat, "")
		return Heartbeat
	}
	usr.state = State{
		UserID:        u.UserID,
		Availability:  u.Availability,
		Activity:      u.Activity,
		StatusMessage: u.StatusMessage,
		OutOfOffice:   u.OutOfOffice,
		ObservedAt:    u.ObservedAt,
		Source:        source,
		Online:        true,
		Version:       usr.state.Version + 1,
	}
	c.fanOutLocked(usr.state)
	if c.durable == nil {
		return Applied
	}
	usr.acks = append(usr.acks, pendingAck{version: usr.state.Version, done: done})
	return 0
}

// fanOutLocked queues s for every sink. The caller holds c.mu: versions are
// computed and queued in one critical section, so they reach each queue in
// order.
func (c *Core) fanOutLocked(s State) {
	for _, w := range c.workers {
		w.enqueue(s)
	}
}

// logOnce logs msg the first time key is seen. The caller holds c.mu.
func (c *Core) logOnce(key, msg string, attrs ...slog.Attr) {
	if _, seen := c.logged[key]; seen || len(c.logged) >= maxLogged {
		return
	}
	c.logged[key] = struct{}{}
	c.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}

// scheduleExpiry wakes the expiry loop when t is earlier than the time it
// waits for. The caller holds c.mu.
func (c *Core) scheduleExpiry(t time.Time) {
	if t.IsZero() || (!c.nextExpiry.IsZero() && !t.Before(c.nextExpiry)) {
		return
	}
	c.nextExpiry = t
	select {
	case c.expiryWake <- struct{}{}:
	default:
	}
}

// durableDone acknowledges every message whose state the durable sink has
// now accepted (a newer version covers the older ones it superseded).
func (c *Core) durableDone(states []State) {
	var ready []pendingAck
	c.mu.Lock()
	for _, s := range states {
		usr := c.users[s.UserID]
		if usr == nil {
			continue
		}
		n := 0
		for _, a := range usr.acks {
			if a.version <= s.Version {
				ready = append(ready, a)
				continue
			}
			usr.acks[n] = a
			n++
		}
		clear(usr.acks[n:])
		usr.acks = usr.acks[:n]
	}
	c.mu.Unlock()
	for _, a := range ready {
		a.done(Applied)
	}
}

// Run drives the sinks and the expiry of users until ctx ends. Then it stops
// taking updates and reports Dropped for every change not yet durable, so
// that the source gives those messages back.
func (c *Core) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range c.workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Go(func() { c.expireLoop(ctx) })
	<-ctx.Done()
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	wg.Wait()

	var dropped []pendingAck
	c.mu.Lock()
	for _, usr := range c.users {
		dropped = append(dropped, usr.acks...)
		usr.acks = nil
	}
	c.mu.Unlock()
	for _, a := range dropped {
		a.done(Dropped)
	}
	return nil
}

// expireLoop marks users unavailable when their sender's promised refresh
// does not come in time.
func (c *Core) expireLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		c.mu.Lock()
		next := c.nextExpiry
		c.mu.Unlock()
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-c.expiryWake:
			timer.Stop()
			continue
		case <-timer.C:
		}
		for _, id := range c.expire(time.Now()) {
			c.log.Info("presence expired; user shown unavailable", "user_id", id)
		}
	}
}

// expire takes every user whose expiry has passed offline, queues their
// states for the sinks, and computes the next expiry to wait for. It returns
// the users it took offline.
func (c *Core) expire(now time.Time) []presence.UserID {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []presence.UserID
	c.nextExpiry = time.Time{}
	for _, usr := range c.users {
		if usr.expiresAt.IsZero() {
			continue
		}
		if usr.expiresAt.After(now) {
			if c.nextExpiry.IsZero() || usr.expiresAt.Before(c.nextExpiry) {
				c.nextExpiry = usr.expiresAt
			}
			continue
		}
		usr.expiresAt = time.Time{}
		if !usr.state.Online {
			continue
		}
		usr.state.Online = false
		usr.state.Version++
		c.fanOutLocked(usr.state)
		out = append(out, usr.state.UserID)
	}
	return out
}

// Snapshot returns the current state of every user that has one.
func (c *Core) Snapshot() []State {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]State, 0, len(c.users))
	for _, usr := range c.users {
		if usr.state.Version != 0 {
			out = append(out, usr.state)
		}
	}
	return out
}

// sinkWorker feeds one sink from a latest-wins queue: a user's newer state
// replaces the one still waiting, so a backlog collapses to the newest.
type sinkWorker struct {
	core    *Core
	name    string
	sink    Sink
	durable bool

	mu      sync.Mutex
	pending map[presence.UserID]State
	spare   map[presence.UserID]State
	wake    chan struct{}
}

func newSinkWorker(c *Core, s SinkSpec) *sinkWorker {
	return &sinkWorker{
		core: c, name: s.Name, sink: s.Sink, durable: s.Durable,
		pending: make(map[presence.UserID]State),
		spare:   make(map[presence.UserID]State),
		wake:    make(chan struct{}, 1),
	}
}

func (w *sinkWorker) enqueue(s State) {
	w.mu.Lock()
	if old, ok := w.pending[s.UserID]; !ok || old.Version < s.Version {
		w.pending[s.UserID] = s
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take swaps out the waiting states.
func (w *sinkWorker) take(buf []State) []State {
	w.mu.Lock()
	batch := w.pending
	w.pending, w.spare = w.spare, batch
	w.mu.Unlock()
	for _, s := range batch {
		buf = append(buf, s)
	}
	clear(batch)
	return buf
}

// requeue puts back the states of a failed batch that nothing newer replaced.
func (w *sinkWorker) requeue(states []State) {
	w.mu.Lock()
	for _, s := range states {
		if old, ok := w.pending[s.UserID]; !ok || old.Version < s.Version {
			w.pending[s.UserID] = s
		}
	}
	w.mu.Unlock()
}

const (
	retryMin = 100 * time.Millisecond
	// retryMax is short: after an MQTT outage the messages held meanwhile are
	// completed at most this long after the broker is back.
	retryMax = 2 * time.Second
)

func (w *sinkWorker) run(ctx context.Context) {
	var (
		buf    []State
		bo     = backoff.Backoff{Min: retryMin, Max: retryMax, Jitter: true}
		failed bool
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		buf = w.take(buf[:0])
		if len(buf) == 0 {
			continue
		}
		err := w.sink.Apply(ctx, buf)
		if err == nil {
			if failed {
				w.core.log.Info("sink recovered", "sink", w.name)
				failed = false
			}
			bo.Reset()
			if w.durable {
				w.core.durableDone(buf)
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if !failed {
			w.core.log.Warn("sink failed; retrying", "sink", w.name, "err", err)
			failed = true
		}
		w.requeue(buf)
		if !backoff.Sleep(ctx, bo.Next()) {
			return
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}
