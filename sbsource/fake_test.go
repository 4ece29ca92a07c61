package sbsource

import (
	"context"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/presence"
)

// fakeCore is a Submitter that applies the ordering rule like the real core,
// counts applications, and can play a durable sink that is down: WaitReady
// blocks and applied updates get their outcome only once it is up again.
type fakeCore struct {
	mu       sync.Mutex
	last     map[presence.UserID]presence.Update
	applied  []presence.Update
	outcomes map[bridge.Outcome]int
	down     bool          // WaitReady blocks
	hold     bool          // Applied outcomes wait until released
	upCh     chan struct{} // closed while up
	// configured users (lower-case ids); nil: every user is configured.
	configured map[presence.UserID]bool
	held       []func()
	changed    chan struct{} // signalled after every Submit
}

var _ bridge.Submitter = (*fakeCore)(nil)

func newFakeCore() *fakeCore {
	up := make(chan struct{})
	close(up)
	return &fakeCore{last: map[presence.UserID]presence.Update{}, outcomes: map[bridge.Outcome]int{}, upCh: up, changed: make(chan struct{}, 1)}
}

func (f *fakeCore) Submit(u presence.Update, source string, done func(bridge.Outcome)) {
	f.mu.Lock()
	var out bridge.Outcome
	if f.configured != nil && !f.configured[u.UserID] {
		out = bridge.Unconfigured
	} else if last, ok := f.last[u.UserID]; ok && presence.Compare(last, u) <= 0 {
		out = bridge.Stale
	} else {
		f.last[u.UserID] = u
		f.applied = append(f.applied, u)
		out = bridge.Applied
	}
	f.outcomes[out]++
	if out == bridge.Applied && f.hold {
		f.held = append(f.held, func() { done(bridge.Applied) })
		out = 0
	}
	f.mu.Unlock()
	if out != 0 {
		done(out)
	}
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeCore) WaitReady(ctx context.Context) error {
	f.mu.Lock()
	up := f.upCh
	f.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// setDown makes the durable sink unavailable (true): WaitReady blocks and
// applied updates get no outcome; or available again, releasing the held
// outcomes.
func (f *fakeCore) setDown(down bool) {
	f.mu.Lock()
	if down != f.down {
		f.down = down
		if down {
			f.upCh = make(chan struct{})
		} else {
			close(f.upCh)
		}
	}
	f.mu.Unlock()
	f.setHold(down)
}

// setHold keeps Applied outcomes back (true) or releases them.
func (f *fakeCore) setHold(hold bool) {
	f.mu.Lock()
	f.hold = hold
	var release []func()
	if !hold {
		release, f.held = f.held, nil
	}
	f.mu.Unlock()
	for _, fn := range release {
		fn()
	}
}

func (f *fakeCore) snapshot() (applied []presence.Update, last map[presence.UserID]presence.Update) {
	f.mu.Lock()
	defer f.mu.Unlock()
	last = make(map[presence.UserID]presence.Update, len(f.last))
	for k, v := range f.last {
		last[k] = v
	}
	return append([]presence.Update(nil), f.applied...), last
}

// waitFor polls cond after every Submit until it holds or the deadline
// passes; it reports whether cond held.
func (f *fakeCore) waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond) // also catches changes made outside Submit
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-f.changed:
		case <-tick.C:
		}
	}
	return true
}

// statusLog records SetStatus calls.
type statusLog struct {
	mu    sync.Mutex
	calls []statusCall
}

type statusCall struct {
	Component string
	OK        bool
	Detail    string
}

func (s *statusLog) SetStatus(component string, ok bool, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, statusCall{component, ok, detail})
}

func (s *statusLog) last() statusCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) == 0 {
		return statusCall{}
	}
	return s.calls[len(s.calls)-1]
}

func (s *statusLog) all() []statusCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]statusCall(nil), s.calls...)
}

func (f *fakeCore) outcomeCount(o bridge.Outcome) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.outcomes[o]
}
