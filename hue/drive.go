package hue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/backoff"
)

// driver is the goroutine of one Hue bridge: it resolves the configured
// groups, sends at most one command per min_interval (the group commanded
// least recently first), and backs off while the bridge fails. Its fields
// are owned by that goroutine; the groups' state is guarded by Sink.mu.
type driver struct {
	s   *Sink
	b   *bridgeLoop
	log *slog.Logger

	bo        backoff.Backoff // after a failure of the bridge
	resolveBo backoff.Backoff // between look-ups of groups not found

	notBefore    time.Time // min_interval after the last command
	retryAt      time.Time // back-off after a failure of the bridge
	resolveAt    time.Time // next look-up of groups not found
	unauthorized bool      // the key is rejected (logged and reported)
	failing      bool      // an outage was logged
	groupProblem string    // groups not found, while the bridge works
}

func (s *Sink) runBridge(ctx context.Context, b *bridgeLoop) {
	d := &driver{
		s: s, b: b, log: s.log.With("bridge", b.host),
		bo:        backoff.Backoff{Min: max(s.interval, time.Second), Max: backoffMax, Jitter: true},
		resolveBo: backoff.Backoff{Min: time.Second, Max: backoffMax, Jitter: true},
	}
	for ctx.Err() == nil && d.step(ctx) {
	}
}

// step does one thing: wait out a back-off, look groups up, wait for work or
// for min_interval, or send one command. It returns false once ctx ends.
func (d *driver) step(ctx context.Context) bool {
	now := time.Now()
	if !d.retryAt.IsZero() && now.Before(d.retryAt) {
		return d.wait(ctx, d.retryAt, false)
	}
	if d.s.unresolved(d.b) && !now.Before(d.resolveAt) {
		if !d.resolve(ctx) {
			return ctx.Err() == nil
		}
	}
	j, ok := d.s.next(d.b)
	if !ok {
		until := time.Now().Add(24 * time.Hour)
		if !d.resolveAt.IsZero() && d.s.unresolved(d.b) {
			until = d.resolveAt
		}
		return d.wait(ctx, until, true)
	}
	if time.Now().Before(d.notBefore) {
		// The look may change meanwhile: the next step picks again.
		return d.wait(ctx, d.notBefore, false)
	}
	d.send(ctx, j)
	return ctx.Err() == nil
}

// wait sleeps until the given time, or until the bridge's work changes when
// wake is set; it returns false once ctx ends.
func (d *driver) wait(ctx context.Context, until time.Time, wake bool) bool {
	dur := time.Until(until)
	if dur <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(dur)
	defer t.Stop()
	var wakeCh <-chan struct{}
	if wake {
		wakeCh = d.b.wake
	}
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wakeCh:
	}
	return true
}

// resolve looks the groups up; it returns false when the bridge failed
// (the back-off is set).
func (d *driver) resolve(ctx context.Context) bool {
	err := d.s.resolve(ctx, d.b)
	switch {
	case ctx.Err() != nil:
		return false
	case err == nil:
		if d.groupProblem != "" {
			d.log.Info("hue groups found")
		}
		d.groupProblem, d.resolveAt = "", time.Time{}
		d.resolveBo.Reset()
		d.succeeded()
	case errors.Is(err, ErrUnknownGroup):
		// The bridge works: drive the groups found, look for the others
		// again later.
		if err.Error() != d.groupProblem {
			d.log.Error("hue group not found", "err", err)
		}
		d.groupProblem = err.Error()
		d.resolveAt = time.Now().Add(d.resolveBo.Next())
		d.succeeded()
	default:
		d.failed(err)
		return false
	}
	return true
}

// send sends one command and records what the bridge made of it.
func (d *driver) send(ctx context.Context, j job) {
	err := d.b.client.SetGroupAction(ctx, j.id, j.action)
	// The next command waits min_interval from this one's end, so two
	// commands never reach the bridge closer than that.
	d.notBefore = time.Now().Add(d.s.interval)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		d.s.commandFailed(d.log, j, err)
		if errors.Is(err, ErrNotAvailable) {
			d.resolveAt = time.Time{} // look the group up again now
		} else if !permanent(err) {
			d.failed(err)
		}
		return
	}
	d.succeeded()
	d.s.mu.Lock()
	j.group.applied(j.action, j.look)
	if j.action.On != nil && !*j.action.On {
		d.b.switchedOff(j.group)
	}
	d.s.mu.Unlock()
	d.log.Debug("hue group set", "group", j.group.ref, "group_id", j.id, "look", j.look.String(), "action", j.action.String())
	if d.s.onCommand != nil {
		d.s.onCommand(Command{Bridge: d.b.host, Group: j.group.ref, GroupID: j.id, Look: j.look, Action: j.action})
	}
}

// failed logs the bridge's failure once per outage, reports it, and sets
// the back-off. A rejected key is retried rarely: only pairing again fixes
// it.
func (d *driver) failed(err error) {
	d.bo.Max = backoffMax
	switch {
	case errors.Is(err, ErrUnauthorized):
		d.bo.Max = unauthorizedBackoffMax
		if !d.unauthorized {
			d.unauthorized = true
			d.log.Error("hue bridge rejected the api key; press the link button and run `presence-bridge hue pair`", "err", err)
			d.s.setProblem(d.b.host, fmt.Sprintf("hue bridge %s rejected the API key: press its link button, run `presence-bridge hue pair -host %s` and set the new username", d.b.host, d.b.host))
		}
	case errors.Is(err, ErrRateLimited):
		// Busy, not broken: the health status stays as it is.
		if !d.failing {
			d.log.Warn("hue bridge is rate limiting; backing off", "err", err)
		}
		d.failing = true
	default:
		// Once per outage; the retries log at debug level.
		if !d.failing {
			d.log.Warn("hue bridge call failed; retrying with back-off", "err", err)
		} else {
			d.log.Debug("hue bridge call failed again", "err", err)
		}
		d.failing = true
		d.s.setProblem(d.b.host, fmt.Sprintf("hue bridge %s: %v", d.b.host, err))
	}
	d.retryAt = time.Now().Add(d.bo.Next())
}

// succeeded ends an outage: logged once, reported, back-off reset.
func (d *driver) succeeded() {
	if d.unauthorized {
		d.log.Info("hue bridge accepts the api key again")
	} else if d.failing {
		d.log.Info("hue bridge answers again")
	}
	d.unauthorized, d.failing = false, false
	d.bo.Reset()
	d.retryAt = time.Time{}
	d.s.setProblem(d.b.host, d.groupProblem)
}
