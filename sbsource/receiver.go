package sbsource

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/bridge"
	bo "github.com/presence-bridge/presence-bridge/internal/backoff"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// maxDescription bounds a dead-letter description (Service Bus keeps it in an
// application property).
const maxDescription = 1024

// entityReceiver reads one entity (a user's subscription, or the queue).
type entityReceiver struct {
	opts   *Options
	log    *slog.Logger
	health *health
	rcv    receiver
	// settlement opens a second receiver on the entity; it abandons what was
	// in hand at shutdown, after rcv is closed (see shutdown).
	settlement func() (receiver, error)
	path       string
	// userID is the user whose topic this is; empty in queue mode, where
	// the user comes from the body.
	userID presence.UserID
	// leftover is what was in hand, undecided, when ctx ended.
	leftover []*azservicebus.ReceivedMessage
}

// shutdown closes the receiver and then abandons the messages left in hand.
//
// The order matters: abandoned on the still-open link, a message would come
// straight back to it (the SDK keeps credit on the link after a short batch
// and releases late arrivals), and whatever is in flight when the link
// closes stays locked until its lock expires. Abandoned after the link is
// closed, through a second receiver (the SDK then settles by lock token on
// the management link), it goes to another consumer at once.
func (r *entityReceiver) shutdown(ctx context.Context) {
	_ = r.rcv.Close(ctx)
	if len(r.leftover) == 0 {
		return
	}
	sr, err := r.settlement()
	if err != nil {
		r.log.Warn("cannot abandon the messages in hand; they come back when their locks expire", "count", len(r.leftover), "err", err)
		return
	}
	defer sr.Close(ctx)
	failed := 0
	var last error
	for _, m := range r.leftover {
		if err := sr.AbandonMessage(ctx, m, nil); err != nil {
			failed, last = failed+1, err
		}
	}
	if failed > 0 {
		r.log.Warn("cannot abandon some messages in hand; they come back when their locks expire", "count", failed, "err", last)
	}
	r.leftover = nil
}

// run loops until ctx ends: wait for the core, take a batch, settle it. The
// settlements of a batch run on (bounded by SettleConcurrency) while the
// next batch is received; run returns once they have all finished.
//
// stopCtx ends SettleTimeout after ctx: settlements still running or
// waiting for a slot then, are given up (the message comes back when its
// lock expires, and the core treats it as the duplicate it is), so the whole
// stop fits in SPEC §6's 5 s whatever the broker does.
func (r *entityReceiver) run(ctx, stopCtx context.Context, sub bridge.Submitter) {
	st := newSettler(r, stopCtx)
	defer st.wait()
	inf := newInflight(r, st)
	tracked := make(chan struct{})
	go func() { defer close(tracked); inf.run(ctx) }()
	defer func() { <-tracked }() // leftover is set once it returns
	attempt := 0                 // consecutive failures
	empty := 0                   // consecutive receives that returned nothing
	healthy := false
	var prevBatch, lastBatch time.Time // when the last two batches were taken
	for ctx.Err() == nil {
		if !healthy {
			// Probe the entity (attach, authorise, peek) so that its status
			// is known, and recovery is noticed, without waiting for traffic.
			if err := r.probe(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				attempt++
				r.fail(err)
				if !bo.Sleep(ctx, r.retryDelay(err, attempt)) {
					return
				}
				continue
			}
			healthy, attempt = true, 0
			r.health.ok(r.path)
		}
		if err := sub.WaitReady(ctx); err != nil {
			return
		}
		if !inf.waitRoom(ctx) {
			return
		}
		// A live message waits only TimeAfterFirstMessage for company; in
		// a stream (the last two batches came less than StreamGap apart)
		// the receive waits as a backlog's do, so that it brings several
		// messages per round trip instead of one credit, one flow frame
		// and one delivery at a time.
		window := r.opts.TimeAfterFirstMessage
		stream := !prevBatch.IsZero() && lastBatch.Sub(prevBatch) < r.opts.StreamGap
		if stream {
			window = r.opts.BacklogTimeAfterFirstMessage
		}
		msgs, err := r.rcv.ReceiveMessages(ctx, r.opts.BatchSize, &azservicebus.ReceiveMessagesOptions{TimeAfterFirstMessage: window})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			healthy = false
			attempt++
			r.fail(err)
			if !bo.Sleep(ctx, r.retryDelay(err, attempt)) {
				return
			}
			continue
		}
		if len(msgs) == 0 {
			// The SDK returns nothing, and no error, when the link broke
			// mid-receive; the next receive recovers it or fails. Probe
			// first so that a dead connection is reported, and back off
			// if it keeps happening.
			healthy = false
			empty++
			if empty > 1 && !bo.Sleep(ctx, backoff(r.opts.RetryMin, r.opts.RetryMax, empty-1)) {
				return
			}
			continue
		}
		empty = 0
		// More than one message in a receive after a quiet spell is a
		// backlog (live changes come one at a time): collect it across
		// receives so that it reaches the sinks as one state per user.
		// In a stream the window already gathered what was there; only a
		// full receive says that more is queued behind it.
		collect := len(msgs) > 1 && (!stream || len(msgs) == r.opts.BatchSize)
		r.handleBatch(ctx, sub, st, inf, msgs, collect)
		prevBatch, lastBatch = lastBatch, time.Now()
	}
}

// probe attaches the receiver if needed and checks that the entity answers.
func (r *entityReceiver) probe(ctx context.Context) error {
	_, err := r.rcv.PeekMessages(ctx, 1, nil)
	return err
}

func (r *entityReceiver) fail(err error) {
	r.health.fail(r.path, servicebus.Classify(err), err)
}

// retryDelay is the back-off after the attempt-th consecutive failure:
// exponential for connection problems, a long fixed wait for configuration
// problems (missing entity, rights).
func (r *entityReceiver) retryDelay(err error, attempt int) time.Duration {
	if servicebus.Classify(err) != servicebus.FailConnection {
		return r.opts.ConfigRetry
	}
	return backoff(r.opts.RetryMin, r.opts.RetryMax, attempt)
}

// backoff is the wait after the attempt-th consecutive failure (from 1):
// min·2^(attempt-1), capped at max.
func backoff(minD, maxD time.Duration, attempt int) time.Duration {
	return bo.Step(minD, maxD, attempt-1)
}

// held is one message in hand, with the time its lock must be renewed.
type held struct {
	msg     *azservicebus.ReceivedMessage
	renewAt time.Time
}

// group is the message in hand for one user in a batch: the newest one,
// which is submitted. The messages it superseded were completed when it
// arrived.
type group struct {
	newest presence.Update
	msg    *held
}

type groupOutcome struct {
	g       *group
	outcome bridge.Outcome
}

// batch is the messages in hand, grouped by user.
type batch struct {
	groups   map[presence.UserID]*group
	order    []*group
	received int       // messages taken into the batch, settled or not
	renewBy  time.Time // the earliest renewal due
	lastSeq  int64     // the highest sequence number taken (0: none known)
}

// add decodes msgs into b; invalid ones go to the dead-letter queue at once.
//
// Of one user's messages only the newest is kept in hand; each one it
// supersedes (older, or the same update again) is completed at once: its
// state is never published, because the newer one in hand carries the
// user's state and is completed only once the core has decided on it (if it
// is abandoned instead, it comes back and still carries that state).
// Keeping the superseded messages until then would hold a whole backlog's
// SDK messages (about 1 KB each) in memory.
func (r *entityReceiver) add(b *batch, st *settler, msgs []*azservicebus.ReceivedMessage) {
	now := time.Now()
	for _, m := range msgs {
		b.lastSeq = max(b.lastSeq, seq(m))
		u, err := r.decode(m)
		if err != nil {
			st.deadLetter(m, err)
			continue
		}
		h := &held{msg: m, renewAt: r.renewAt(m, now)}
		if b.renewBy.IsZero() || h.renewAt.Before(b.renewBy) {
			b.renewBy = h.renewAt
		}
		b.received++
		g := b.groups[u.UserID]
		switch {
		case g == nil:
			g = &group{newest: u, msg: h}
			b.groups[u.UserID] = g
			b.order = append(b.order, g)
		case presence.Compare(g.newest, u) > 0:
			st.complete(g.msg.msg)
			g.newest, g.msg = u, h
		default:
			st.complete(m)
		}
	}
}

// handleBatch takes msgs and, with collect, while receives bring more than
// one message (a backlog), more batches up to MaxHeld messages, so that a backlog collapses
// to one update per user; it submits the newest update of each user and
// hands those messages to inf, which settles each once the core has decided
// and renews its lock meanwhile. It returns without waiting for the core:
// the next receive starts at once (see inflight).
func (r *entityReceiver) handleBatch(ctx context.Context, sub bridge.Submitter, st *settler, inf *inflight, msgs []*azservicebus.ReceivedMessage, collect bool) {
	b := &batch{groups: map[presence.UserID]*group{}}
	r.add(b, st, msgs)
	// A backlog: keep receiving while receives bring more than one
	// message, without delaying live messages.
	var peekAfter time.Duration // the first receive of a backlog peeks at once
	for collect && len(msgs) > 1 {
		want := min(r.opts.BatchSize, r.opts.MaxHeld-b.received)
		if want <= 0 || (!b.renewBy.IsZero() && !time.Now().Before(b.renewBy)) {
			break
		}
		// A backlog has its next messages ready: wait no longer than
		// BacklogWait for them, and not at all once the broker shows that
		// nothing follows what was taken.
		rctx, cancel := context.WithTimeout(ctx, r.opts.BacklogWait)
		drained := r.watchDrained(ctx, rctx, cancel, b.lastSeq, peekAfter)
		// Once a receive of the backlog brought messages, they flow: the
		// next receive's peek waits (see watchDrained).
		peekAfter = r.opts.BacklogTimeAfterFirstMessage + peekGrace
		var err error
		msgs, err = r.rcv.ReceiveMessages(rctx, want, &azservicebus.ReceiveMessagesOptions{TimeAfterFirstMessage: r.opts.BacklogTimeAfterFirstMessage})
		cancel()
		end := drained()
		if err != nil {
			break // the backlog is drained, or the next receive reports the failure
		}
		r.add(b, st, msgs)
		if end {
			break
		}
	}
	if len(b.order) == 0 {
		return
	}

	inf.submit(sub, b.order)
}

// watchDrained peeks, after the given delay, while the next receive of a
// backlog runs (under rctx), at the first message after sequence number
// last, and cancels the receive (through cancel) when there is none: the
// backlog is drained, and waiting BacklogWait for more would only hold back
// its states. A peek also shows locked messages, so the ones already on
// their way to this receiver keep the receive going. The function it
// returns says, once the receive has returned, whether the peek cut it
// short (the backlog is drained).
//
// The delay spares the broker a peek per receive while messages flow (a
// flood taken a few at a time): a receive that finds messages returns
// within BacklogTimeAfterFirstMessage, so handleBatch waits that long (and
// peekGrace) before peeking once a receive of the backlog has brought
// messages; the first one, which often finds nothing (two users changed
// at once), peeks at once. No peek starts once the receive has returned,
// and one under way is neither cancelled when it returns (only with ctx)
// nor waited for: cancelling peeks under way cost the SDK its links
// (measured in the household flood: up to 170 token requests to the
// stand-in where none are due, and one flood stalled for 30 s).
func (r *entityReceiver) watchDrained(ctx, rctx context.Context, cancel context.CancelFunc, last int64, delay time.Duration) (drained func() bool) {
	var cut atomic.Bool
	if last == 0 {
		return cut.Load // no sequence numbers: wait as before
	}
	go func() {
		if delay > 0 && !bo.Sleep(rctx, delay) || rctx.Err() != nil {
			return // the receive returned first
		}
		pctx, pcancel := context.WithTimeout(ctx, r.opts.SettleTimeout)
		defer pcancel()
		next := last + 1
		peeked, err := r.rcv.PeekMessages(pctx, 1, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &next})
		if err == nil && len(peeked) == 0 {
			cut.Store(true)
			cancel()
		}
	}()
	return cut.Load
}

// peekGrace is how much longer than BacklogTimeAfterFirstMessage a backlog's
// receive may take, scheduling included, before watchDrained peeks.
const peekGrace = 10 * time.Millisecond

// decode turns a message into an update; the error is a *presence.DecodeError.
func (r *entityReceiver) decode(m *azservicebus.ReceivedMessage) (presence.Update, error) {
	var meta presence.Meta
	if m.EnqueuedTime != nil {
		meta.EnqueuedTime = *m.EnqueuedTime
	}
	u, err := presence.Decode(m.Body, meta)
	if err != nil {
		return u, err
	}
	if r.userID != "" {
		if err := presence.CheckUser(u, r.userID); err != nil {
			return u, err
		}
	}
	return u, nil
}

// renewAt is when a message received at now should have its lock renewed:
// half-way through the lock.
func (r *entityReceiver) renewAt(m *azservicebus.ReceivedMessage, now time.Time) time.Time {
	lock := r.opts.DefaultLockDuration
	if m.LockedUntil != nil {
		if d := m.LockedUntil.Sub(now); d > 0 && d <= 10*time.Minute {
			lock = d
		}
	}
	return now.Add(lock / 2)
}

func (r *entityReceiver) nextRenewal(pending map[*group]bool) time.Time {
	var next time.Time
	for g := range pending {
		if h := g.msg; next.IsZero() || h.renewAt.Before(next) {
			next = h.renewAt
		}
	}
	return next
}

// renewDue renews the locks that are due. A lock that cannot be renewed is
// left alone: the message comes back later and the core then treats it as
// the duplicate it is.
func (r *entityReceiver) renewDue(ctx context.Context, pending map[*group]bool) {
	now := time.Now()
	for g := range pending {
		h := g.msg
		if h.renewAt.After(now) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, r.opts.SettleTimeout)
		err := r.rcv.RenewMessageLock(rctx, h.msg, nil)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("cannot renew a message lock; the message will be delivered again", "sequence_number", seq(h.msg), "err", err)
			h.renewAt = now.Add(r.opts.DefaultLockDuration) // do not retry in a loop
			continue
		}
		h.renewAt = r.renewAt(h.msg, time.Now())
	}
}

// settler runs a receiver's settlements with bounded concurrency.
type settler struct {
	r *entityReceiver
	// stop ends SettleTimeout after the receive context: no settlement
	// starts, or goes on, after it.
	stop    context.Context
	sem     chan struct{}
	wg      sync.WaitGroup
	skipped atomic.Int64 // settlements given up at the stop deadline
}

func newSettler(r *entityReceiver, stop context.Context) *settler {
	return &settler{r: r, stop: stop, sem: make(chan struct{}, r.opts.SettleConcurrency)}
}

func (s *settler) do(op string, m *azservicebus.ReceivedMessage, fn func(ctx context.Context) error) {
	select {
	case s.sem <- struct{}{}:
	case <-s.stop.Done():
		// Stopping, and every slot is taken by a slow broker: leave the
		// message to its lock expiry.
		s.skipped.Add(1)
		return
	}
	s.wg.Go(func() {
		defer func() { <-s.sem }()
		ctx, cancel := context.WithTimeout(s.stop, s.r.opts.SettleTimeout)
		defer cancel()
		if err := fn(ctx); err != nil {
			if s.stop.Err() != nil {
				s.skipped.Add(1)
				return
			}
			// The message comes back once its lock expires; the core then
			// completes it as a duplicate or applies it.
			s.r.log.Warn("cannot settle a message; it will be delivered again", "op", op, "sequence_number", seq(m), "err", err)
		} else if s.r.opts.onSettled != nil {
			s.r.opts.onSettled(op)
		}
	})
}

// wait waits for the settlements in flight (they end by the stop deadline)
// and says how many were left to their lock expiry.
func (s *settler) wait() {
	s.wg.Wait()
	if n := s.skipped.Load(); n > 0 {
		s.r.log.Warn("stopped before some settlements finished; those messages come back when their locks expire", "count", n)
	}
}

func (s *settler) complete(m *azservicebus.ReceivedMessage) {
	s.do("complete", m, func(ctx context.Context) error { return s.r.rcv.CompleteMessage(ctx, m, nil) })
}

func (s *settler) abandon(m *azservicebus.ReceivedMessage) {
	s.do("abandon", m, func(ctx context.Context) error { return s.r.rcv.AbandonMessage(ctx, m, nil) })
}

func (s *settler) deadLetter(m *azservicebus.ReceivedMessage, err error) {
	reason, desc := deadLetterReason(err)
	s.r.log.Warn("invalid message dead-lettered", "reason", reason, "description", desc, "sequence_number", seq(m), "message_id", m.MessageID)
	s.do("dead-letter", m, func(ctx context.Context) error {
		return s.r.rcv.DeadLetterMessage(ctx, m, &azservicebus.DeadLetterOptions{Reason: &reason, ErrorDescription: &desc})
	})
}

// deadLetterReason gives the dead-letter reason (the presence package's code)
// and a short description for a decode failure.
func deadLetterReason(err error) (reason, description string) {
	var de *presence.DecodeError
	if errors.As(err, &de) {
		reason = string(de.Reason)
		description = de.Detail
		if de.Field != "" {
			description = de.Field + ": " + de.Detail
		}
	} else {
		reason, description = string(presence.ReasonInvalidJSON), err.Error()
	}
	if len(description) > maxDescription {
		description = description[:maxDescription]
	}
	return reason, description
}

func seq(m *azservicebus.ReceivedMessage) int64 {
	if m.SequenceNumber == nil {
		return 0
	}
	return *m.SequenceNumber
}

// inflight holds the messages whose updates the core has not decided on
// yet, renews their locks, and settles each once its outcome arrives. It
// runs beside the receive loop, so that a receive is pending while the core
// waits for the durable sink (a PUBACK): the SDK releases every message that
// arrives while no receive is pending (they come back, costing the broker a
// second delivery each), which made the household flood half the bare
// loop's pace (measured: 956 releases for 2,000 messages, none now).
type inflight struct {
	r  *entityReceiver
	st *settler

	mu      sync.Mutex
	added   []*group       // submitted, not yet tracked by run
	decided []groupOutcome // outcomes not yet settled by run
	held    int            // messages added and not yet decided
	wake    chan struct{}  // run has work
	room    chan struct{}  // held dropped below MaxHeld
}

func newInflight(r *entityReceiver, st *settler) *inflight {
	return &inflight{r: r, st: st, wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// submit hands each group's newest update to the core and tracks its
// message until the outcome arrives. The callbacks never block the core.
func (f *inflight) submit(sub bridge.Submitter, groups []*group) {
	f.mu.Lock()
	f.added = append(f.added, groups...)
	f.held += len(groups)
	f.mu.Unlock()
	signal(f.wake)
	for _, g := range groups {
		sub.Submit(g.newest, SourceName, func(o bridge.Outcome) {
			f.mu.Lock()
			f.decided = append(f.decided, groupOutcome{g, o})
			f.mu.Unlock()
			signal(f.wake)
		})
	}
}

// waitRoom blocks while MaxHeld messages wait for the core (a durable sink
// that is up but slow), so that memory stays bounded; false once ctx ends.
func (f *inflight) waitRoom(ctx context.Context) bool {
	for {
		f.mu.Lock()
		full := f.held >= f.r.opts.MaxHeld
		f.mu.Unlock()
		if !full {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-f.room:
		}
	}
}

// run settles decided messages and renews the locks of the others until
// ctx ends; then it leaves the undecided ones to the receiver's shutdown,
// which abandons them once the link is closed (another consumer gets them
// at once).
func (f *inflight) run(ctx context.Context) {
	pending := map[*group]bool{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		f.harvest(pending)
		if len(pending) > 0 {
			timer.Reset(time.Until(f.r.nextRenewal(pending)))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			f.harvest(pending)
			for g := range pending {
				f.r.leftover = append(f.r.leftover, g.msg.msg)
			}
			return
		case <-f.wake:
		case <-timer.C:
			f.r.renewDue(ctx, pending)
		}
	}
}

// harvest moves newly submitted groups into pending and settles the ones
// the core decided on.
func (f *inflight) harvest(pending map[*group]bool) {
	f.mu.Lock()
	added, decided := f.added, f.decided
	f.added, f.decided = nil, nil
	f.held -= len(decided)
	f.mu.Unlock()
	for _, g := range added {
		pending[g] = true
	}
	for _, res := range decided {
		delete(pending, res.g)
		if res.outcome.Settle() {
			f.st.complete(res.g.msg.msg)
		} else {
			f.st.abandon(res.g.msg.msg)
		}
	}
	if len(decided) > 0 {
		signal(f.room)
	}
}
