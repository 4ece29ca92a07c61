// Package bridge is the core of the home bridge: it owns every configured
// user's presence state, applies the ordering and duplicate rules of the wire
// format, fans each change out to the sinks (Home Assistant over MQTT, Hue) and
// tells the source when a message may be settled.
//
// Sources call Core.Submit for each decoded update and settle the message in
// the callback. Sinks implement Sink; each runs in a goroutine of its own with
// a latest-wins queue, so a sink that blocks never delays another, and a
// backlog for one user collapses to its newest state. One sink may be durable
// (the MQTT sink): a change is acknowledged to the source only once that sink
// has accepted it, and sources wait on Core.WaitReady while it cannot.
package bridge

import (
	"context"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// State is what the sinks show for one user.
type State struct {
	UserID        presence.UserID
	Availability  presence.Availability
	Activity      presence.Activity
	StatusMessage string
	OutOfOffice   bool
	ObservedAt    time.Time
	// Source names the source that produced the state ("service_bus", "demo").
	Source string
	// Online is false once the sender's expiresAt has passed without a
	// refresh: Home Assistant then shows the user unavailable.
	Online bool
	// Version increases with every change of this user's state; a sink never
	// sees an older version after a newer one.
	Version uint64
}

// Sink turns user states into effects.
type Sink interface {
	// Apply makes states take effect, one state per user at most. It returns
	// nil once every state is accepted (for the durable sink: acknowledged by
	// the broker). On error the core retries the states not superseded since,
	// with back-off; Apply must therefore be idempotent.
	Apply(ctx context.Context, states []State) error
}

// DurableSink is a sink whose acceptance makes a change durable, so that the
// source's message may be completed.
type DurableSink interface {
	Sink
	// WaitReady blocks until the sink can accept states, or ctx ends.
	WaitReady(ctx context.Context) error
}

// Outcome says what the core made of a submitted update; the source settles
// the message accordingly.
type Outcome uint8

// Outcomes. Every outcome but Dropped means the message can be completed.
const (
	// Applied: the update changed the user's state and the durable sink (or,
	// without one, every sink's queue) has taken it.
	Applied Outcome = iota + 1
	// Heartbeat: same state, newer message: only the expiry was extended.
	Heartbeat
	// Stale: older than, or a duplicate of, what was applied already.
	Stale
	// Unconfigured: the update is for a user that is not configured.
	Unconfigured
	// Dropped: the core stopped before the change became durable; the source
	// should give the message back (abandon) so it is delivered again.
	Dropped
)

// String names the outcome for logs.
func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Heartbeat:
		return "heartbeat"
	case Stale:
		return "stale"
	case Unconfigured:
		return "unconfigured"
	case Dropped:
		return "dropped"
	}
	return "unknown"
}

// Settle reports whether the message should be completed (true) or abandoned.
func (o Outcome) Settle() bool { return o != Dropped }

// Submitter is what a source needs from the core.
type Submitter interface {
	// Submit hands an update to the core. done is called exactly once, from
	// another goroutine possibly, when the message can be settled. It must
	// not block for long.
	Submit(u presence.Update, source string, done func(Outcome))
	// WaitReady blocks while the durable sink cannot accept states.
	WaitReady(ctx context.Context) error
}

// StatusReporter receives the health of a component ("service_bus", "mqtt",
// "hue"): ok, and a short human-readable detail when not ok.
type StatusReporter interface {
	SetStatus(component string, ok bool, detail string)
}
