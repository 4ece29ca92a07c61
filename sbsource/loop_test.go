package sbsource

// Tests of the receive / settle / renew loop against the in-memory entity
// of memqueue_test.go and the fake core: they need nothing external, run in
// `go test -short`, and use testing/synctest for lock durations, renewals
// and the stop deadline. The same behaviours are tested against the AMQP
// stand-in in source_test.go.

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/presence"
)

type memHarness struct {
	src    *Source
	core   *fakeCore
	cancel context.CancelFunc
	done   chan error
	logs   *safebuf.Buffer
	once   sync.Once
	took   time.Duration
	err    error
}

// runMem runs a source on one subscription (user 0's) of the in-memory
// entity e, or in queue mode.
func runMem(t *testing.T, e *memEntity, opts Options, queue bool) *memHarness {
	t.Helper()
	h := &memHarness{core: newFakeCore(), done: make(chan error, 1), logs: &safebuf.Buffer{}}
	opts.Config.ConnectionString = "Endpoint=sb://fake/;SharedAccessKeyName=k;SharedAccessKey=v"
	if queue {
		opts.Config.Queue = "presence"
	} else {
		opts.Config.Subscription = subName
	}
	if opts.Users == nil {
		opts.Users = users(1)
	}
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.openReceiver == nil {
		opts.openReceiver = e.receiver
	}
	src, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.src = src
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- src.Run(ctx, h.core) }()
	t.Cleanup(func() { h.stop(t) }) // also when the test fails: nothing left in the bubble
	return h
}

func (h *memHarness) stop(t *testing.T) time.Duration {
	t.Helper()
	h.once.Do(func() {
		began := time.Now()
		h.cancel()
		h.err = <-h.done
		h.took = time.Since(began)
	})
	if h.err != nil {
		t.Fatal(h.err)
	}
	return h.took
}

// TestLoopCompletesOnlyOnceDurable: a message is completed only once the
// core reports the change durable; while it waits its lock is renewed, for
// longer than three lock durations, and it is never abandoned.
func TestLoopCompletesOnlyOnceDurable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEntity(30 * time.Second)
		h := runMem(t, e, Options{}, false)
		h.core.setHold(true)
		e.send(v1(userID(0), "Busy", 1))
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if n := e.count("complete"); n != 0 {
			t.Fatalf("completed %d before the change was durable", n)
		}
		if n := e.count("renew"); n < 6 {
			t.Errorf("renewed %d times in 2 minutes of a 30 s lock, want ≥ 6", n)
		}
		if n := e.count("abandon") + len(e.deadLettered()); n != 0 {
			t.Errorf("abandoned or dead-lettered %d messages while waiting", n)
		}
		h.core.setHold(false)
		synctest.Wait()
		if n := e.count("complete"); n != 1 || e.active() != 0 {
			t.Errorf("after the durable ack: %d completed, %d left", n, e.active())
		}
		h.stop(t)
	})
}

// TestLoopTakesNothingWhileTheSinkIsDown: while the durable sink is down the
// source takes no new message: the one a receive already brought is held
// (its lock renewed), the next stays on the broker for other consumers.
func TestLoopTakesNothingWhileTheSinkIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEntity(30 * time.Second)
		h := runMem(t, e, Options{}, false)
		synctest.Wait()
		h.core.setDown(true)
		e.send(v1(userID(0), "Busy", 1))
		synctest.Wait()
		e.send(v1(userID(0), "Away", 2))
		time.Sleep(time.Minute)
		synctest.Wait()
		if applied, _ := h.core.snapshot(); len(applied) != 1 {
			t.Fatalf("%d updates taken while the sink is down, want only the one already received", len(applied))
		}
		if n := e.count("abandon") + e.count("complete"); n != 0 {
			t.Errorf("%d settlements while the sink is down", n)
		}
		h.core.setDown(false)
		synctest.Wait()
		if e.count("complete") != 2 || e.active() != 0 {
			t.Errorf("after the sink came back: %d completed, %d left; want 2 and 0", e.count("complete"), e.active())
		}
		h.stop(t)
	})
}

// TestLoopDeadLettersInvalidAndGoesOn: an invalid message is dead-lettered
// with its reason; the next one is processed.
func TestLoopDeadLettersInvalidAndGoesOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEntity(30 * time.Second)
		h := runMem(t, e, Options{}, false)
		e.send([]byte(`{"userId":`), v1(userID(1), "Busy", 1), v1(userID(0), "Busy", 2))
		synctest.Wait()
		got := e.deadLettered()
		slices.Sort(got) // settlements run concurrently
		if len(got) != 2 || got[0] != "InvalidJSON" || got[1] != "UserMismatch" {
			t.Errorf("dead-letter reasons %q, want InvalidJSON and UserMismatch", got)
		}
		if e.count("complete") != 1 || e.active() != 0 {
			t.Errorf("the valid message: %d completed, %d left", e.count("complete"), e.active())
		}
		h.stop(t)
	})
}

// sendBacklog puts n messages for users on e, alternating users and
// availabilities; user i's newest is observed at t0 + (n-len(users)+i) s.
func sendBacklog(e *memEntity, us []config.User, n int) {
	var bodies [][]byte
	for i := range n {
		bodies = append(bodies, v1(us[i%len(us)].ID, []string{"Busy", "Away"}[i/len(us)%2], i))
	}
	e.send(bodies...)
}

// TestLoopBacklogYieldsOneStatePerUser: a backlog reaches the core as one
// update per user, the newest, and every message is completed.
func TestLoopBacklogYieldsOneStatePerUser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEntity(30 * time.Second)
		us := users(10)
		sendBacklog(e, us, 500)
		h := runMem(t, e, Options{Users: us}, true)
		time.Sleep(time.Second) // the last receive's peek waits BacklogTimeAfterFirstMessage first
		synctest.Wait()
		applied, last := h.core.snapshot()
		if len(applied) != 10 {
			t.Errorf("%d updates applied, want one per user (10)", len(applied))
		}
		if got := last[us[3].ID].ObservedAt; !got.Equal(t0.Add(493 * time.Second)) {
			t.Errorf("user 3's state observed at %v, want the newest", got)
		}
		if e.count("complete") != 500 || e.active() != 0 {
			t.Errorf("%d completed, %d left; want all 500 completed", e.count("complete"), e.active())
		}
		h.stop(t)
	})
}

// TestLoopBacklogPeeksOnlyWhenAReceiveWaits: a backlog taken five messages
// at a time is collected without a peek per receive (the broker was asked
// once per receive before: 100 peeks here, up to 389 per 2,000 messages in
// the household flood); the first receive peeks, and the one that finds
// nothing is still cut short by a peek instead of waiting BacklogWait (an
// hour here).
func TestLoopBacklogPeeksOnlyWhenAReceiveWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEntity(30 * time.Second)
		us := users(10)
		sendBacklog(e, us, 500)
		h := runMem(t, e, Options{Users: us, BatchSize: 5, BacklogWait: time.Hour}, true)
		time.Sleep(time.Second) // the last receive's peek waits BacklogTimeAfterFirstMessage first
		synctest.Wait()
		// A second, not BacklogWait's hour: the peek cut the last receive short.
		applied, _ := h.core.snapshot()
		if len(applied) != 10 {
			t.Errorf("%d updates applied within a second, want one per user (10)", len(applied))
		}
		// The probe at start, the first receive's and the last one's.
		if got := e.count("peek"); got > 3 {
			t.Errorf("%d peeks for 100 receives that found messages, want at most 3", got)
		}
		if e.count("complete") != 500 || e.active() != 0 {
			t.Errorf("%d completed, %d left; want all 500 completed", e.count("complete"), e.active())
		}
		h.stop(t)
	})
}

// slowPeeks answers peeks after delay, and counts the ones whose context
// ended first.
type slowPeeks struct {
	receiver
	delay     time.Duration
	cancelled atomic.Int32
}

func (p *slowPeeks) PeekMessages(ctx context.Context, n int, o *azservicebus.PeekMessagesOptions) ([]*azservicebus.ReceivedMessage, error) {
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		p.cancelled.Add(1)
		return nil, ctx.Err()
	}
	return p.receiver.PeekMessages(ctx, n, o)
}

// TestLoopBacklogLetsAPeekUnderWayFinish: a backlog's receive that returns
// while its peek is under way does not cancel the peek (cancelled peeks
// cost the SDK its links: token requests and a stalled flood against the
// stand-in), and every message still reaches the core.
func TestLoopBacklogLetsAPeekUnderWayFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEntity(30 * time.Second)
		us := users(5)
		var bodies [][]byte
		for i, u := range us {
			bodies = append(bodies, v1(u.ID, "Busy", i))
		}
		e.send(bodies...)
		peeks := &slowPeeks{delay: 50 * time.Millisecond}
		open := func(path string) (receiver, error) {
			r, err := e.receiver(path)
			peeks.receiver = r
			return peeks, err
		}
		h := runMem(t, e, Options{Users: us, BatchSize: 5, BacklogWait: time.Hour, openReceiver: open}, true)
		// The probe's peek, the first receive (the five), and the next one
		// waits with its peek under way: a message arrives meanwhile.
		time.Sleep(60 * time.Millisecond)
		e.send(v1(us[0].ID, "Away", 10))
		time.Sleep(time.Second)
		synctest.Wait()
		if n := peeks.cancelled.Load(); n != 0 {
			t.Errorf("%d peeks cancelled under way, want none", n)
		}
		if e.count("complete") != 6 || e.active() != 0 {
			t.Errorf("%d completed, %d left; want all 6 completed", e.count("complete"), e.active())
		}
		_, last := h.core.snapshot()
		if got := last[us[0].ID].Availability; got != presence.AvailabilityAway {
			t.Errorf("user 0 ends %q, want Away", got)
		}
		h.stop(t)
	})
}

// TestLoopStopsWithinTheSettleTimeout: with a broker whose settlements hang
// and a 100-message backlog, the source still stops within SettleTimeout of
// the cancellation (SPEC §6: exit 0 within 5 s). Before the fix the
// settlement slots ignored the stop and each settlement got a fresh
// timeout: 21 s. What is not settled is left to its lock expiry.
func TestLoopStopsWithinTheSettleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEntity(30 * time.Second)
		e.settleDelay = time.Hour
		us := users(10)
		var bodies [][]byte
		for i := range 100 {
			bodies = append(bodies, v1(us[i%10].ID, "Busy", i))
		}
		e.send(bodies...)
		h := runMem(t, e, Options{Users: us, SettleTimeout: 3 * time.Second}, true)
		time.Sleep(time.Second)
		synctest.Wait()
		if took := h.stop(t); took > 3500*time.Millisecond {
			t.Errorf("stopped %v after the cancellation, want ≤ 3.5 s", took)
		}
		if e.count("complete") != 0 || e.active() != 100 {
			t.Errorf("nothing could be settled, yet %d completed and %d left", e.count("complete"), e.active())
		}
	})
}

// TestLoopShutdownAbandonsWhatIsInHand: a message whose change the core has
// not made durable is abandoned at the stop, so another consumer gets it at
// once, and not completed.
func TestLoopShutdownAbandonsWhatIsInHand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newMemEntity(30 * time.Second)
		h := runMem(t, e, Options{}, false)
		h.core.setHold(true)
		e.send(v1(userID(0), "Busy", 1))
		synctest.Wait()
		h.stop(t)
		if e.count("abandon") != 1 || e.count("complete") != 0 {
			t.Errorf("at the stop: %d abandoned, %d completed; want 1 and 0", e.count("abandon"), e.count("complete"))
		}
		if h.core.outcomeCount(bridge.Applied) != 1 {
			t.Errorf("the core saw %d applications", h.core.outcomeCount(bridge.Applied))
		}
	})
}
