package sbsource

import (
	"bytes"
	"context"
	"fmt"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/google/go-cmp/cmp"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const subName = "home"

func userID(i int) presence.UserID {
	return presence.UserID(fmt.Sprintf("6f1c2a3b-1111-2222-3333-%012d", i))
}

func users(n int) []config.User {
	out := make([]config.User, n)
	for i := range out {
		out[i] = config.User{ID: userID(i), Name: fmt.Sprintf("User%d", i)}
	}
	return out
}

func subscriptions(us []config.User) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.TopicName() + "/" + subName
	}
	return out
}

func subPath(u config.User) string { return u.TopicName() + "/Subscriptions/" + subName }

var t0 = time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)

// v1 is a version 1 body observed n seconds after t0.
func v1[ID ~string](user ID, avail string, n int) []byte {
	return fmt.Appendf(nil, `{"version":1,"userId":%q,"availability":%q,"activity":%q,"observedAt":%q}`,
		user, avail, avail, t0.Add(time.Duration(n)*time.Second).Format(time.RFC3339Nano))
}

type harness struct {
	t      *testing.T
	broker *sbtest.Broker
	core   *fakeCore
	status *statusLog
	logs   *safebuf.Buffer
	cancel context.CancelFunc
	done   chan error
}

// run starts a Source for us against broker with the fake core.
func run(t *testing.T, broker *sbtest.Broker, opts Options) *harness {
	t.Helper()
	return runWith(t, broker, opts, nil)
}

// runWith is run with prepare called on the Source before it runs.
func runWith(t *testing.T, broker *sbtest.Broker, opts Options, prepare func(*Source)) *harness {
	t.Helper()
	h := &harness{t: t, broker: broker, core: newFakeCore(), status: &statusLog{}, logs: &safebuf.Buffer{}, done: make(chan error, 1)}
	if opts.Config.ConnectionString == "" {
		opts.Config.ConnectionString = config.Secret(broker.ConnectionString())
	}
	if opts.Config.Subscription == "" && opts.Config.Queue == "" {
		opts.Config.Subscription = subName
	}
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Status = h.status
	opts.RetryMin = cmpOr(opts.RetryMin, 50*time.Millisecond)
	opts.RetryMax = cmpOr(opts.RetryMax, 500*time.Millisecond)
	opts.ConfigRetry = cmpOr(opts.ConfigRetry, 500*time.Millisecond)
	opts.ClientOptions = &azservicebus.ClientOptions{RetryOptions: azservicebus.RetryOptions{MaxRetries: 1, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond}}
	src, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if prepare != nil {
		prepare(src)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- src.Run(ctx, h.core) }()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("source log:\n%s", h.logs)
		}
	})
	return h
}

func cmpOr[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

// stop cancels the source and waits for Run to return.
func (h *harness) stop() {
	h.t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		h.t.Error("Run did not return within 15s of cancellation")
	}
}

// waitCount waits until entity holds want messages (locked ones included).
func waitCount(t *testing.T, ctx context.Context, b *sbtest.Broker, entity string, sq azservicebus.SubQueue, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		got := b.Count(ctx, entity, sq)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (subqueue %d) holds %d messages, want %d", entity, sq, got, want)
		}
		<-tick.C
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestValidAndLegacyMessagesReachTheCore(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	us := users(2)
	b := sbtest.Start(t, sbtest.Options{Subscriptions: subscriptions(us)})
	h := run(t, b, Options{Users: us})

	b.Send(ctx, us[0].TopicName(), []byte(`{"version":1,"userId":"`+strings.ToUpper(string(us[0].ID))+`","availability":"busy","activity":"InACall","statusMessage":"Back at 3","observedAt":"2026-11-26T20:00:00.123Z","expiresAt":"2026-11-26T20:15:00Z","sequence":"638680000000000000"}`))
	b.Send(ctx, us[1].TopicName(), []byte(`{"ObjectId":"`+us[1].ID+`","Upn":"bo@contoso.com","Availability":"Away","Activity":"Away","PartitionKey":"x","RowKey":"y"}`))

	if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) == 2 }) {
		t.Fatal("the core did not get both updates")
	}
	_, last := h.core.snapshot()
	got0, got1 := last[us[0].ID], last[us[1].ID]
	want0 := presence.Update{UserID: us[0].ID, Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall,
		StatusMessage: "Back at 3", Sequence: "638680000000000000",
		ObservedAt: time.Date(2026, 11, 26, 20, 0, 0, 123e6, time.UTC), ExpiresAt: time.Date(2026, 11, 26, 20, 15, 0, 0, time.UTC)}
	if diff := cmp.Diff(want0, got0); diff != "" {
		t.Errorf("v1 update (-want +got):\n%s", diff)
	}
	if !got1.Legacy || got1.Availability != presence.AvailabilityAway || got1.UPN != "bo@contoso.com" || got1.ObservedAt.IsZero() {
		t.Errorf("legacy update = %+v, want Away from bo@contoso.com ordered by its enqueued time", got1)
	}
	for _, u := range us {
		waitCount(t, ctx, b, subPath(u), 0, 0)
	}
	if c := h.status.last(); !c.OK || c.Component != SourceName {
		t.Errorf("status = %+v, want service_bus ok", c)
	}
}

func TestOutOfOrderAndDuplicatesChangeNothingAndAreCompleted(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	us := users(1)
	b := sbtest.Start(t, sbtest.Options{Subscriptions: subscriptions(us)})
	h := run(t, b, Options{Users: us})
	topic := us[0].TopicName()

	applied := func(n int) func() bool {
		return func() bool { a, _ := h.core.snapshot(); return len(a) == n }
	}
	b.Send(ctx, topic, v1(us[0].ID, "Busy", 10))
	if !h.core.waitFor(ctx, 30*time.Second, applied(1)) {
		t.Fatal("first update not applied")
	}
	waitCount(t, ctx, b, subPath(us[0]), 0, 0)
	// Older, then the same again: separate batches, each judged by the core.
	b.Send(ctx, topic, v1(us[0].ID, "Available", 5))
	waitCount(t, ctx, b, subPath(us[0]), 0, 0)
	b.Send(ctx, topic, v1(us[0].ID, "Busy", 10))
	waitCount(t, ctx, b, subPath(us[0]), 0, 0)

	a, last := h.core.snapshot()
	if len(a) != 1 || last[us[0].ID].Availability != presence.AvailabilityBusy {
		t.Errorf("applied %d updates, last %v; want only the first (Busy)", len(a), last[us[0].ID].Availability)
	}
	if n := b.Count(ctx, subPath(us[0]), azservicebus.SubQueueDeadLetter); n != 0 {
		t.Errorf("%d messages dead-lettered, want 0", n)
	}
}

func TestBadInputIsDeadLetteredAndTheNextMessageFlows(t *testing.T) {
	ctx := ctxFor(t, 90*time.Second)
	us := users(2)
	b := sbtest.Start(t, sbtest.Options{Subscriptions: subscriptions(us)})
	h := run(t, b, Options{Users: us})
	topic := us[0].TopicName()

	cases := []struct {
		name   string
		body   []byte
		reason presence.Reason
	}{
		{"not json", []byte(`{"version":1,`), presence.ReasonInvalidJSON},
		{"not utf-8", []byte{0xff, 0xfe}, presence.ReasonInvalidJSON},
		{"empty body", nil, presence.ReasonInvalidJSON},
		{"no availability", []byte(`{"version":1,"userId":"` + string(us[0].ID) + `","observedAt":"2026-11-26T20:00:00Z"}`), presence.ReasonMissingField},
		{"bad time", []byte(`{"version":1,"userId":"` + string(us[0].ID) + `","availability":"Busy","observedAt":"yesterday"}`), presence.ReasonInvalidField},
		{"too large", append(append([]byte(`{"statusMessage":"`), bytes.Repeat([]byte("x"), presence.MaxBodySize)...), `"}`...), presence.ReasonTooLarge},
		{"other user", v1(us[1].ID, "Busy", 1), presence.ReasonUserMismatch},
	}
	for _, c := range cases {
		b.Send(ctx, topic, c.body)
	}
	b.Send(ctx, topic, v1(us[0].ID, "DoNotDisturb", 2))

	if !h.core.waitFor(ctx, 30*time.Second, func() bool {
		_, l := h.core.snapshot()
		return l[us[0].ID].Availability == presence.AvailabilityDoNotDisturb
	}) {
		t.Fatal("the valid message after the bad ones did not reach the core")
	}
	dead := b.DeadLetters(ctx, subPath(us[0]), len(cases))
	got := map[string]string{}
	for _, m := range dead {
		if m.DeadLetterErrorDescription == nil || *m.DeadLetterErrorDescription == "" {
			t.Errorf("dead letter %q has no description", m.Body)
		} else if len(*m.DeadLetterErrorDescription) > maxDescription {
			t.Errorf("description is %d bytes long", len(*m.DeadLetterErrorDescription))
		}
		got[string(m.Body)] = *m.DeadLetterReason
	}
	want := map[string]string{}
	for _, c := range cases {
		want[string(c.body)] = string(c.reason)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dead-letter reasons by body (-want +got):\n%s", diff)
	}
	if a, _ := h.core.snapshot(); len(a) != 1 {
		t.Errorf("applied %d updates, want 1", len(a))
	}
	waitCount(t, ctx, b, subPath(us[0]), 0, 0)
}

func TestBacklogYieldsOneStatePerUserAndCompletesAll(t *testing.T) {
	ctx := ctxFor(t, 120*time.Second)
	us := users(10)
	b := sbtest.Start(t, sbtest.Options{Queues: []string{"presence"}})
	// 1,000 messages for 10 users, interleaved, in one queue, before the
	// source starts.
	var bodies [][]byte
	for i := range 100 {
		for _, u := range us {
			bodies = append(bodies, v1(u.ID, []string{"Available", "Busy", "Away"}[i%3], i))
		}
	}
	b.Send(ctx, "presence", bodies...)

	h := run(t, b, Options{Users: us, Config: config.ServiceBus{Queue: "presence"}, TimeAfterFirstMessage: 500 * time.Millisecond})
	waitCount(t, ctx, b, "presence", 0, 0)
	applied, last := h.core.snapshot()
	if len(applied) != len(us) {
		t.Errorf("%d state applications, want %d (one per user)", len(applied), len(us))
	}
	for _, u := range us {
		if got := last[u.ID].ObservedAt; !got.Equal(t0.Add(99 * time.Second)) {
			t.Errorf("user %s ends at %v, want the newest (%v)", u.ID, got, t0.Add(99*time.Second))
		}
	}
}

// A user's superseded messages are completed while the newest one still
// waits for the core: only the newest is kept in hand (and in memory).
func TestSupersededMessagesAreCompletedWhileTheNewestWaits(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	us := users(1)
	b := sbtest.Start(t, sbtest.Options{Queues: []string{"presence"}, LockDuration: time.Minute})
	// A long first-receive window so that the five messages form one batch.
	h := run(t, b, Options{Users: us, Config: config.ServiceBus{Queue: "presence"}, TimeAfterFirstMessage: 500 * time.Millisecond})
	h.core.setHold(true) // the newest update is taken but not yet durable
	// The newest (4) arrives second: older ones are superseded both before
	// and after it.
	var bodies [][]byte
	for _, n := range []int{1, 4, 0, 3, 2} {
		bodies = append(bodies, v1(us[0].ID, []string{"Available", "Busy", "Away"}[n%3], n))
	}
	b.Send(ctx, "presence", bodies...)

	if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) > 0 }) {
		t.Fatal("no update submitted")
	}
	waitCount(t, ctx, b, "presence", 0, 1)
	applied, _ := h.core.snapshot()
	if len(applied) != 1 || !applied[0].ObservedAt.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("applied %v, want only the newest (observed at %v)", applied, t0.Add(4*time.Second))
	}
	h.core.setHold(false)
	waitCount(t, ctx, b, "presence", 0, 0)
	waitCount(t, ctx, b, "presence", azservicebus.SubQueueDeadLetter, 0)
}

// Once the broker shows that nothing follows the backlog, the source submits
// it at once instead of waiting BacklogWait for a next receive, also when
// the backlog ends exactly on a full receive; the receive that the source
// cuts short loses nothing that arrives afterwards.
func TestDrainedBacklogIsSubmittedWithoutWaitingForMore(t *testing.T) {
	for _, tc := range []struct {
		name     string
		messages int // per user, 5 users; batches of 50
	}{
		{"ends on a full receive", 50},
		{"ends on a short receive", 47},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t, 60*time.Second)
			us := users(5)
			b := sbtest.Start(t, sbtest.Options{Queues: []string{"presence"}})
			var bodies [][]byte
			for i := range tc.messages {
				for _, u := range us {
					bodies = append(bodies, v1(u.ID, []string{"Available", "Busy", "Away"}[i%3], i))
				}
			}
			b.Send(ctx, "presence", bodies...)
			// Waiting BacklogWait would outlast the test's deadline.
			h := run(t, b, Options{
				Users: us, Config: config.ServiceBus{Queue: "presence"},
				BatchSize: 50, BacklogWait: time.Hour, TimeAfterFirstMessage: 500 * time.Millisecond,
			})
			newest := t0.Add(time.Duration(tc.messages-1) * time.Second)
			if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) >= len(us) }) {
				t.Fatal("the backlog was not submitted")
			}
			waitCount(t, ctx, b, "presence", 0, 0)
			applied, last := h.core.snapshot()
			if len(applied) != len(us) {
				t.Errorf("%d state applications, want %d (one per user)", len(applied), len(us))
			}
			for _, u := range us {
				if got := last[u.ID].ObservedAt; !got.Equal(newest) {
					t.Errorf("user %s ends at %v, want the newest (%v)", u.ID, got, newest)
				}
			}
			// A message sent after the cut-short receive still arrives.
			b.Send(ctx, "presence", v1(us[0].ID, "Busy", tc.messages+1))
			if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) == len(us)+1 }) {
				t.Fatal("the message sent after the backlog was not applied")
			}
			waitCount(t, ctx, b, "presence", 0, 0)
			waitCount(t, ctx, b, "presence", azservicebus.SubQueueDeadLetter, 0)
		})
	}
}

// holdingReceiver holds the completion of the messages whose body contains
// hold until release is closed; held is closed when the first one starts.
type holdingReceiver struct {
	receiver
	hold    []byte
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *holdingReceiver) CompleteMessage(ctx context.Context, m *azservicebus.ReceivedMessage, o *azservicebus.CompleteMessageOptions) error {
	if bytes.Contains(m.Body, h.hold) {
		h.once.Do(func() { close(h.held) })
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.receiver.CompleteMessage(ctx, m, o)
}

// A batch's settlements do not hold up the next batch: while one message's
// completion is still under way, the next message is received and reaches
// the core; both are completed in the end.
func TestNextBatchIsReceivedWhileTheLastIsBeingSettled(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	us := users(2)
	b := sbtest.Start(t, sbtest.Options{Queues: []string{"presence"}, LockDuration: time.Minute})
	hr := &holdingReceiver{hold: []byte(us[0].ID), held: make(chan struct{}), release: make(chan struct{})}
	// A settlement times out only after the test's deadline.
	h := runWith(t, b, Options{Users: us, Config: config.ServiceBus{Queue: "presence"}, SettleTimeout: 5 * time.Minute}, func(s *Source) {
		hr.receiver = s.receivers[0].rcv
		s.receivers[0].rcv = hr
	})
	b.Send(ctx, "presence", v1(us[0].ID, "Busy", 1))
	select {
	case <-hr.held:
	case <-ctx.Done():
		t.Fatal("the first message's completion never started")
	}
	b.Send(ctx, "presence", v1(us[1].ID, "Away", 1))
	if !h.core.waitFor(ctx, 20*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) == 2 }) {
		t.Fatal("the second message did not reach the core while the first was being completed")
	}
	waitCount(t, ctx, b, "presence", 0, 1) // the second completed, the first still locked
	close(hr.release)
	waitCount(t, ctx, b, "presence", 0, 0)
	waitCount(t, ctx, b, "presence", azservicebus.SubQueueDeadLetter, 0)
}

func TestSinkOutageLongerThanThreeLockDurations(t *testing.T) {
	ctx := ctxFor(t, 90*time.Second)
	us := users(1)
	const lock = time.Second
	b := sbtest.Start(t, sbtest.Options{Subscriptions: subscriptions(us), LockDuration: lock, MaxDeliveryCount: 2})
	h := run(t, b, Options{Users: us})
	topic := us[0].TopicName()

	b.Send(ctx, topic, v1(us[0].ID, "Available", 1))
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) == 1 }) {
		t.Fatal("first update not applied")
	}
	waitCount(t, ctx, b, subPath(us[0]), 0, 0)

	h.core.setDown(true)
	// In hand while the sink goes down: applied but not durable.
	b.Send(ctx, topic, v1(us[0].ID, "Busy", 2))
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) == 2 }) {
		t.Fatal("second update not submitted")
	}
	// Arriving during the outage: not taken.
	b.Send(ctx, topic, v1(us[0].ID, "Away", 3), v1(us[0].ID, "DoNotDisturb", 4))

	// Outage of more than three lock durations, measured by the broker's
	// own lock expiry: an unrenewed lock would have expired three times and
	// the message would be dead-lettered (max delivery count 2).
	outage := time.NewTimer(3*lock + lock/2)
	<-outage.C
	if n := b.Count(ctx, subPath(us[0]), azservicebus.SubQueueDeadLetter); n != 0 {
		t.Fatalf("%d messages dead-lettered during the outage", n)
	}
	if a, _ := h.core.snapshot(); len(a) != 2 {
		t.Fatalf("%d updates submitted during the outage, want 2 (nothing taken while not ready)", len(a))
	}
	h.core.setDown(false)

	if !h.core.waitFor(ctx, 30*time.Second, func() bool {
		_, l := h.core.snapshot()
		return l[us[0].ID].Availability == presence.AvailabilityDoNotDisturb
	}) {
		t.Fatal("the newest state did not arrive after the sink came back")
	}
	waitCount(t, ctx, b, subPath(us[0]), 0, 0)
	if n := b.Count(ctx, subPath(us[0]), azservicebus.SubQueueDeadLetter); n != 0 {
		t.Errorf("%d messages dead-lettered", n)
	}
	if n := strings.Count(h.logs.String(), "cannot renew"); n != 0 {
		t.Errorf("%d lock renewals failed:\n%s", n, h.logs)
	}
}

func TestBrokerRestartMidStreamLosesNothing(t *testing.T) {
	ctx := ctxFor(t, 120*time.Second)
	us := users(3)
	b := sbtest.Start(t, sbtest.Options{Subscriptions: subscriptions(us)})
	h := run(t, b, Options{Users: us})

	for i := range 5 {
		for _, u := range us {
			b.Send(ctx, u.TopicName(), v1(u.ID, "Busy", i))
		}
	}
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) >= 3 }) {
		t.Fatal("nothing applied before the restart")
	}
	b.Kill()
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { return !h.status.last().OK }) {
		t.Fatal("status did not go down while the broker was dead")
	}
	b.Restart()
	for i := 5; i < 10; i++ {
		for _, u := range us {
			b.Send(ctx, u.TopicName(), v1(u.ID, []string{"Away", "Available"}[i%2], i))
		}
	}
	for _, u := range us {
		waitCount(t, ctx, b, subPath(u), 0, 0)
	}
	_, last := h.core.snapshot()
	for _, u := range us {
		if got := last[u.ID]; !got.ObservedAt.Equal(t0.Add(9*time.Second)) || got.Availability != presence.AvailabilityAvailable {
			t.Errorf("user %s ends with %v at %v, want Available at +9s", u.ID, got.Availability, got.ObservedAt)
		}
	}
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { return h.status.last().OK }) {
		t.Errorf("status did not recover: %+v", h.status.all())
	}
	if n := strings.Count(h.logs.String(), "service bus connection lost"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, h.logs)
	}
	if n := strings.Count(h.logs.String(), "service bus connection restored"); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
}

func TestShutdownAbandonsMessagesInHand(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	us := users(1)
	b := sbtest.Start(t, sbtest.Options{Subscriptions: subscriptions(us), LockDuration: time.Minute})
	h := run(t, b, Options{Users: us})
	h.core.setHold(true) // the core takes the update but never makes it durable
	b.Send(ctx, us[0].TopicName(), v1(us[0].ID, "Busy", 1))
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) == 1 }) {
		t.Fatal("update not submitted")
	}
	h.stop()
	// Abandoned, not left locked for a minute: another consumer gets it now,
	// as its second delivery.
	got, err := sbtest.Drain(ctx, b.Client(), subPath(us[0]), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].DeliveryCount != 2 {
		t.Errorf("redelivered with delivery count %d, want 2", got[0].DeliveryCount)
	}
}

func TestMissingSubscriptionLeavesOthersWorking(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	us := users(3)
	// No subscription on the second user's topic.
	b := sbtest.Start(t, sbtest.Options{Subscriptions: []string{us[0].TopicName() + "/" + subName, us[2].TopicName() + "/" + subName}, Topics: []string{us[1].TopicName()}})
	h := run(t, b, Options{Users: us})

	b.Send(ctx, us[0].TopicName(), v1(us[0].ID, "Busy", 1))
	b.Send(ctx, us[2].TopicName(), v1(us[2].ID, "Away", 1))
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { a, _ := h.core.snapshot(); return len(a) == 2 }) {
		t.Fatal("the working users' updates did not arrive")
	}
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { return strings.Count(h.logs.String(), "service bus entity not found") > 0 }) {
		t.Fatalf("missing subscription not reported:\n%s", h.logs)
	}
	st := h.status.last()
	if st.OK || !strings.Contains(st.Detail, subPath(us[1])) || !strings.Contains(st.Detail, "not found") {
		t.Errorf("status = %+v, want not ok naming %s", st, subPath(us[1]))
	}
	// Retried with a pause (ConfigRetry 500ms here), not in a hot loop,
	// and logged once.
	if n := strings.Count(h.logs.String(), "service bus entity not found"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
}

func TestWrongKeyIsReportedAsAccessDenied(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	us := users(1)
	b := sbtest.Start(t, sbtest.Options{Subscriptions: subscriptions(us), Keys: map[string]string{"listen": "right"}})
	h := run(t, b, Options{Users: us, Config: config.ServiceBus{Subscription: subName, ConnectionString: config.Secret(b.ConnectionStringWithKey("listen", "wrong"))}})
	if !h.core.waitFor(ctx, 30*time.Second, func() bool { return strings.Count(h.logs.String(), "service bus refused access") > 0 }) {
		t.Fatalf("bad key not reported:\n%s", h.logs)
	}
	if st := h.status.last(); st.OK || !strings.Contains(st.Detail, "access denied") {
		t.Errorf("status = %+v, want access denied", st)
	}
	if strings.Contains(h.logs.String(), "wrong") {
		t.Error("the key appears in the logs")
	}
}

func TestQueueModeTakesUsersFromTheBody(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	us := users(2)
	// Subscriptions auto-forward into one queue.
	b := sbtest.Start(t, sbtest.Options{
		Subscriptions: subscriptions(us),
		Queues:        []string{"all"},
		Forwards:      map[string]string{subPath(us[0]): "all", subPath(us[1]): "all"},
	})
	h := run(t, b, Options{Users: us[:1], Config: config.ServiceBus{Queue: "all"}})
	h.core.mu.Lock()
	h.core.configured = map[presence.UserID]bool{us[0].ID: true}
	h.core.mu.Unlock()
	b.Send(ctx, us[0].TopicName(), v1(us[0].ID, "Busy", 1))
	b.Send(ctx, us[1].TopicName(), v1(us[1].ID, "Away", 1)) // not configured: the core says Unconfigured
	if !h.core.waitFor(ctx, 30*time.Second, func() bool {
		a, _ := h.core.snapshot()
		return len(a) == 1 && h.core.outcomeCount(bridge.Unconfigured) == 1
	}) {
		t.Fatal("updates did not arrive")
	}
	// The other user's message is completed too, not dead-lettered
	// (UserMismatch does not apply in queue mode).
	waitCount(t, ctx, b, "all", 0, 0)
	if n := b.Count(ctx, "all", azservicebus.SubQueueDeadLetter); n != 0 {
		t.Errorf("%d messages dead-lettered", n)
	}
}
