package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

const (
	alex presence.UserID = "6f1c2a3b-1111-2222-3333-444455556666"
	sam  presence.UserID = "0a1b2c3d-1111-2222-3333-444455556666"
)

// upper is id as a person may type it: in upper case.
func upper(id presence.UserID) presence.UserID { return presence.UserID(strings.ToUpper(string(id))) }

// fakeSink records what it is asked to apply. While gate is non-nil, Apply
// waits for a value on it; failures fails the next calls.
type fakeSink struct {
	mu       sync.Mutex
	applied  []State
	calls    int
	gate     chan struct{}
	failures int
	ready    chan struct{} // closed when ready; nil means always ready
}

func (f *fakeSink) Apply(ctx context.Context, states []State) error {
	f.mu.Lock()
	gate := f.gate
	f.calls++
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return errors.New("broker said no")
	}
	f.applied = append(f.applied, states...)
	return nil
}

func (f *fakeSink) WaitReady(ctx context.Context) error {
	f.mu.Lock()
	ready := f.ready
	f.mu.Unlock()
	if ready == nil {
		return ctx.Err()
	}
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeSink) states() []State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]State(nil), f.applied...)
}

func (f *fakeSink) last(user presence.UserID) (State, bool) {
	s := f.states()
	for i := len(s) - 1; i >= 0; i-- {
		if s[i].UserID == user {
			return s[i], true
		}
	}
	return State{}, false
}

// outcomes records the outcome of each submitted message.
type outcomes struct {
	mu  sync.Mutex
	got map[int]Outcome
}

func (o *outcomes) done(i int) func(Outcome) {
	return func(out Outcome) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.got == nil {
			o.got = make(map[int]Outcome)
		}
		if prev, twice := o.got[i]; twice {
			panic(fmt.Sprintf("message %d settled twice: %v then %v", i, prev, out))
		}
		o.got[i] = out
	}
}

func (o *outcomes) of(i int) Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.got[i]
}

func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.got)
}

var t0 = time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)

func update(user presence.UserID, a presence.Availability, seq int) presence.Update {
	return presence.Update{
		UserID:       user,
		Availability: a,
		Activity:     presence.ActivityAvailable,
		Sequence:     fmt.Sprint(seq),
		ObservedAt:   t0.Add(time.Duration(seq) * time.Second),
	}
}

// start runs a core with a durable sink and a second, plain sink.
func start(t *testing.T, durable, other *fakeSink) (*Core, context.CancelFunc, chan struct{}) {
	t.Helper()
	specs := []SinkSpec{{Name: "mqtt", Sink: durable, Durable: true}}
	if other != nil {
		specs = append(specs, SinkSpec{Name: "hue", Sink: other})
	}
	c, err := New(Options{Users: []presence.UserID{alex, upper(sam)}, Sinks: specs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = c.Run(ctx)
	}()
	return c, cancel, stopped
}

func TestAcknowledgedOnlyWhenDurable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{gate: make(chan struct{})}
		c, cancel, stopped := start(t, mqtt, nil)
		var o outcomes
		c.Submit(update(alex, presence.AvailabilityBusy, 1), "test", o.done(1))
		synctest.Wait()
		if got := o.of(1); got != 0 {
			t.Fatalf("settled as %v before the durable sink accepted", got)
		}
		mqtt.gate <- struct{}{}
		synctest.Wait()
		if got := o.of(1); got != Applied {
			t.Fatalf("outcome %v after the sink accepted, want applied", got)
		}
		s, _ := mqtt.last(alex)
		if s.Availability != presence.AvailabilityBusy || !s.Online || s.Source != "test" || s.Version != 1 {
			t.Errorf("sink got %+v", s)
		}
		cancel()
		<-stopped
	})
}

func TestOrderingAndHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{}
		c, cancel, stopped := start(t, mqtt, nil)
		defer func() { cancel(); <-stopped }()
		var o outcomes
		submit := func(i int, u presence.Update) Outcome {
			c.Submit(u, "test", o.done(i))
			synctest.Wait()
			return o.of(i)
		}
		if got := submit(1, update(alex, presence.AvailabilityBusy, 5)); got != Applied {
			t.Fatalf("first: %v", got)
		}
		if got := submit(2, update(alex, presence.AvailabilityAway, 4)); got != Stale {
			t.Errorf("older sequence: %v, want stale", got)
		}
		if got := submit(3, update(alex, presence.AvailabilityBusy, 5)); got != Stale {
			t.Errorf("duplicate: %v, want stale", got)
		}
		hb := update(alex, presence.AvailabilityBusy, 5)
		hb.ObservedAt = hb.ObservedAt.Add(time.Minute)
		if got := submit(4, hb); got != Heartbeat {
			t.Errorf("same sequence, newer time: %v, want heartbeat", got)
		}
		if got := submit(5, update(alex, presence.AvailabilityBusy, 6)); got != Heartbeat {
			t.Errorf("newer message with the same state: %v, want heartbeat", got)
		}
		if got := submit(6, update(alex, presence.AvailabilityAway, 7)); got != Applied {
			t.Errorf("newer state: %v, want applied", got)
		}
		if n := len(mqtt.states()); n != 2 {
			t.Errorf("sink applied %d states, want 2 (heartbeats and stale messages publish nothing)", n)
		}
		if got := submit(7, update("00000000-0000-0000-0000-000000000000", presence.AvailabilityAway, 1)); got != Unconfigured {
			t.Errorf("unknown user: %v", got)
		}
		// Ids of any case reach the same user.
		if got := submit(8, update(sam, presence.AvailabilityAway, 1)); got != Applied {
			t.Errorf("user configured in upper case: %v", got)
		}
	})
}

func TestSlowSinkNeverDelaysAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{}
		hue := &fakeSink{gate: make(chan struct{})} // never answers
		c, cancel, stopped := start(t, mqtt, hue)
		var o outcomes
		for i := 1; i <= 10; i++ {
			c.Submit(update(alex, presence.Availabilities()[i%9], i), "test", o.done(i))
			synctest.Wait()
		}
		if o.count() != 10 {
			t.Errorf("%d of 10 messages settled while the other sink hung", o.count())
		}
		if s, _ := mqtt.last(alex); s.Version != 10 {
			t.Errorf("durable sink is at version %d, want 10", s.Version)
		}
		cancel()
		<-stopped
	})
}

func TestBacklogCollapsesToNewest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{gate: make(chan struct{})}
		c, cancel, stopped := start(t, mqtt, nil)
		defer func() { cancel(); <-stopped }()
		var o outcomes
		c.Submit(update(alex, presence.AvailabilityBusy, 1), "test", o.done(0))
		synctest.Wait() // the sink is now busy with the first state
		for i := 1; i <= 100; i++ {
			c.Submit(update(alex, presence.Availabilities()[i%9], i+1), "test", o.done(i))
			c.Submit(update(sam, presence.Availabilities()[i%9], i+1), "test", o.done(1000+i))
		}
		close(mqtt.gate)
		synctest.Wait()
		if o.count() != 201 {
			t.Fatalf("%d of 201 messages settled", o.count())
		}
		for i, out := range o.got {
			if out != Applied {
				t.Errorf("message %d: %v", i, out)
			}
		}
		var perUser = map[presence.UserID]int{}
		for _, s := range mqtt.states() {
			perUser[s.UserID]++
		}
		if perUser[alex] != 2 || perUser[sam] != 1 {
			t.Errorf("applications per user %v, want alex 2 (first, newest) and sam 1", perUser)
		}
		if s, _ := mqtt.last(alex); s.Version != 101 {
			t.Errorf("newest version %d, want 101", s.Version)
		}
	})
}

func TestFailedApplyIsRetriedWithNewestState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{failures: 3}
		c, cancel, stopped := start(t, mqtt, nil)
		defer func() { cancel(); <-stopped }()
		var o outcomes
		start := time.Now()
		c.Submit(update(alex, presence.AvailabilityBusy, 1), "test", o.done(1))
		synctest.Wait()
		c.Submit(update(alex, presence.AvailabilityAway, 2), "test", o.done(2))
		for o.count() < 2 {
			time.Sleep(10 * time.Millisecond) // fake time: advances the back-off
		}
		if o.of(1) != Applied || o.of(2) != Applied {
			t.Errorf("outcomes %v", o.got)
		}
		if got := mqtt.states(); len(got) != 1 || got[0].Availability != presence.AvailabilityAway {
			t.Errorf("after retries the sink applied %+v, want only the newest state", got)
		}
		if took := time.Since(start); took < 3*retryMin/2 || took > 10*time.Second {
			t.Errorf("three failures took %v; want a growing back-off", took)
		}
	})
}

func TestShutdownDropsWhatIsNotDurable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{gate: make(chan struct{})}
		c, cancel, stopped := start(t, mqtt, nil)
		var o outcomes
		c.Submit(update(alex, presence.AvailabilityBusy, 1), "test", o.done(1))
		synctest.Wait()
		cancel()
		<-stopped
		if got := o.of(1); got != Dropped {
			t.Errorf("in-hand message after shutdown: %v, want dropped", got)
		}
		c.Submit(update(alex, presence.AvailabilityAway, 2), "test", o.done(2))
		if got := o.of(2); got != Dropped {
			t.Errorf("message after shutdown: %v, want dropped", got)
		}
	})
}

func TestExpiryMarksUserUnavailableUntilNextMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{}
		c, cancel, stopped := start(t, mqtt, nil)
		defer func() { cancel(); <-stopped }()
		var o outcomes
		u := update(alex, presence.AvailabilityBusy, 1)
		u.ExpiresAt = time.Now().Add(15 * time.Minute)
		c.Submit(u, "test", o.done(1))
		other := update(sam, presence.AvailabilityAway, 1)
		other.ExpiresAt = time.Now().Add(time.Hour)
		c.Submit(other, "test", o.done(2))

		time.Sleep(14 * time.Minute)
		synctest.Wait()
		if s, _ := mqtt.last(alex); !s.Online {
			t.Fatal("offline before expiresAt")
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		s, _ := mqtt.last(alex)
		if s.Online || s.Availability != presence.AvailabilityBusy {
			t.Fatalf("after expiresAt: %+v, want offline with the last availability", s)
		}
		if s, _ := mqtt.last(sam); !s.Online {
			t.Error("a user with a later expiry went offline too")
		}
		// A heartbeat (same state) brings the user back.
		hb := update(alex, presence.AvailabilityBusy, 2)
		c.Submit(hb, "test", o.done(3))
		synctest.Wait()
		if s, _ := mqtt.last(alex); !s.Online {
			t.Error("still offline after a new message")
		}
		if o.of(3) != Applied {
			t.Errorf("heartbeat that revives the user: %v, want applied (it changes what is shown)", o.of(3))
		}
		// A message without expiresAt promises nothing: no expiry.
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if s, _ := mqtt.last(alex); !s.Online {
			t.Error("expired although the last message had no expiresAt")
		}
		if s, _ := mqtt.last(sam); s.Online {
			t.Error("sam did not expire after an hour")
		}
	})
}

func TestExpiryRescheduledByEarlierMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{}
		c, cancel, stopped := start(t, mqtt, nil)
		defer func() { cancel(); <-stopped }()
		var o outcomes
		late := update(sam, presence.AvailabilityAway, 1)
		late.ExpiresAt = time.Now().Add(time.Hour)
		c.Submit(late, "test", o.done(1))
		synctest.Wait()
		early := update(alex, presence.AvailabilityBusy, 1)
		early.ExpiresAt = time.Now().Add(time.Minute)
		c.Submit(early, "test", o.done(2))
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if s, _ := mqtt.last(alex); s.Online {
			t.Error("the earlier expiry was not honoured")
		}
	})
}

func TestWithoutDurableSinkAcknowledgedWhenQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hue := &fakeSink{gate: make(chan struct{})}
		c, err := New(Options{Users: []presence.UserID{alex}, Sinks: []SinkSpec{{Name: "hue", Sink: hue}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		go c.Run(ctx)
		defer cancel()
		var o outcomes
		c.Submit(update(alex, presence.AvailabilityBusy, 1), "test", o.done(1))
		if o.of(1) != Applied {
			t.Errorf("outcome %v, want applied as soon as the hue queue took it", o.of(1))
		}
		if err := c.WaitReady(ctx); err != nil {
			t.Errorf("WaitReady without a durable sink: %v", err)
		}
	})
}

func TestWaitReadyFollowsDurableSink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{ready: make(chan struct{})}
		c, cancel, stopped := start(t, mqtt, nil)
		defer func() { cancel(); <-stopped }()
		ready := make(chan error, 1)
		go func() { ready <- c.WaitReady(t.Context()) }()
		synctest.Wait()
		select {
		case err := <-ready:
			t.Fatalf("ready (%v) while the durable sink is not", err)
		default:
		}
		close(mqtt.ready)
		synctest.Wait()
		if err := <-ready; err != nil {
			t.Fatal(err)
		}
	})
}

func TestNewRejectsBadOptions(t *testing.T) {
	s := &fakeSink{}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no users", Options{}, "no users"},
		{"duplicate user", Options{Users: []presence.UserID{alex, upper(alex)}}, "twice"},
		{"two durable sinks", Options{Users: []presence.UserID{alex}, Sinks: []SinkSpec{{Name: "a", Sink: s, Durable: true}, {Name: "b", Sink: s, Durable: true}}}, "both durable"},
		{"nil sink", Options{Users: []presence.UserID{alex}, Sinks: []SinkSpec{{Name: "a"}}}, "nil"},
		{"durable without WaitReady", Options{Users: []presence.UserID{alex}, Sinks: []SinkSpec{{Name: "a", Sink: plainSink{}, Durable: true}}}, "WaitReady"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

type plainSink struct{}

func (plainSink) Apply(context.Context, []State) error { return nil }

func TestUnknownValuesAndUsersLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	c, err := New(Options{Users: []presence.UserID{alex}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		u := update(alex, presence.AvailabilityPresenceUnknown, i)
		u.UnknownAvailability = "Sleeping"
		u.Availability = presence.Availabilities()[i]
		c.Submit(u, "test", func(Outcome) {})
		c.Submit(update(sam, presence.AvailabilityBusy, i), "test", func(Outcome) {})
	}
	out := buf.String()
	if n := strings.Count(out, "Sleeping"); n != 1 {
		t.Errorf("unknown value logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, string(sam)); n != 1 {
		t.Errorf("unconfigured user logged %d times, want once:\n%s", n, out)
	}
}

// TestMixedCaseSubmitIsAcknowledged: a source that hands the core an id in
// upper case still gets its message acknowledged once the durable sink took
// the state, and the sinks see the canonical id.
func TestMixedCaseSubmitIsAcknowledged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{}
		c, cancel, stopped := start(t, mqtt, nil)
		var o outcomes
		c.Submit(update(upper(alex), presence.AvailabilityBusy, 1), "test", o.done(1))
		c.Submit(update(sam, presence.AvailabilityBusy, 1), "test", o.done(2))
		synctest.Wait()
		if got, got2 := o.of(1), o.of(2); got != Applied || got2 != Applied {
			t.Fatalf("outcomes %v, %v; want applied for both (the first was submitted in upper case)", got, got2)
		}
		if s, ok := mqtt.last(alex); !ok || s.UserID != alex {
			t.Errorf("sink got %+v, want the canonical id %s", s, alex)
		}
		cancel()
		<-stopped
	})
}

// versionRecorder is a sink that fails the test's check when a user's
// versions arrive out of order.
type versionRecorder struct {
	mu        sync.Mutex
	last      map[presence.UserID]uint64
	backwards []string
	applied   int
}

func (r *versionRecorder) Apply(_ context.Context, states []State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range states {
		if prev := r.last[s.UserID]; s.Version <= prev {
			r.backwards = append(r.backwards, fmt.Sprintf("%s: version %d after %d", s.UserID, s.Version, prev))
		}
		r.last[s.UserID] = s.Version
		r.applied++
	}
	return nil
}

func (r *versionRecorder) WaitReady(context.Context) error { return nil }

// TestSinksNeverSeeOlderVersions races submissions of one user against each
// other and against the expiry loop (every update expires almost at once,
// so expiries and late heartbeats interleave): every sink must receive each
// user's versions in increasing order. It runs on real goroutines, not in a
// bubble, so that the scheduler interleaves them.
func TestSinksNeverSeeOlderVersions(t *testing.T) {
	durable := &versionRecorder{last: map[presence.UserID]uint64{}}
	plain := &versionRecorder{last: map[presence.UserID]uint64{}}
	c, err := New(Options{Users: []presence.UserID{alex, sam}, Sinks: []SinkSpec{
		{Name: "mqtt", Sink: durable, Durable: true}, {Name: "hue", Sink: plain},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = c.Run(ctx) }()

	var seq atomic.Int64
	var wg sync.WaitGroup
	const writers, each = 8, 2000
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := alex
				if (w+i)%2 == 0 {
					id = sam
				}
				n := seq.Add(1)
				u := presence.Update{
					UserID:       id,
					Availability: presence.Availabilities()[n%3+1],
					ObservedAt:   t0.Add(time.Duration(n) * time.Millisecond),
					ExpiresAt:    time.Now().Add(time.Duration(n%3) * time.Microsecond),
				}
				c.Submit(u, "test", func(Outcome) {})
			}
		})
	}
	wg.Wait()
	cancel()
	<-stopped
	for name, r := range map[string]*versionRecorder{"durable": durable, "plain": plain} {
		r.mu.Lock()
		if len(r.backwards) > 0 {
			t.Errorf("%s sink saw versions go backwards %d times, first: %s", name, len(r.backwards), r.backwards[0])
		}
		if r.applied == 0 {
			t.Errorf("%s sink applied nothing", name)
		}
		r.mu.Unlock()
	}
}

// TestOutcomesThatChangeNothingAreLoggedAtDebug: a person looking at debug
// logs can see why a message changed nothing (stale, duplicate, heartbeat),
// with the user, the sequence and observedAt; at info level nothing.
func TestOutcomesThatChangeNothingAreLoggedAtDebug(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		var buf bytes.Buffer
		c, err := New(Options{Users: []presence.UserID{alex}, Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))})
		if err != nil {
			t.Fatal(err)
		}
		c.Submit(update(alex, presence.AvailabilityBusy, 5), "test", func(Outcome) {})
		c.Submit(update(alex, presence.AvailabilityAway, 4), "test", func(Outcome) {}) // stale
		c.Submit(update(alex, presence.AvailabilityBusy, 5), "test", func(Outcome) {}) // duplicate
		hb := update(alex, presence.AvailabilityBusy, 5)
		hb.ObservedAt = hb.ObservedAt.Add(time.Minute)
		c.Submit(hb, "test", func(Outcome) {}) // heartbeat
		out := buf.String()
		if level == slog.LevelInfo {
			if strings.Contains(out, "changed nothing") {
				t.Errorf("logged at info level:\n%s", out)
			}
			continue
		}
		for _, want := range []string{
			`outcome=stale why="older than the state shown" sequence=4 observed_at=2026-11-26T20:00:04`,
			"outcome=stale why=duplicate sequence=5 observed_at=2026-11-26T20:00:05",
			"outcome=heartbeat sequence=5 observed_at=2026-11-26T20:01:05",
		} {
			if !strings.Contains(out, want) || !strings.Contains(out, "user_id="+string(alex)) {
				t.Errorf("debug log lacks %q:\n%s", want, out)
			}
		}
	}
}
