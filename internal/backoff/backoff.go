// Package backoff is the one retry back-off of both programs: exponential
// from Min to Max, optionally with equal jitter (half fixed, half random) so
// that several clients retrying after one outage spread out.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff counts consecutive failures and says how long to wait after each.
// The zero value is not useful: set Min and Max.
type Backoff struct {
	Min, Max time.Duration
	// Jitter makes each wait a random duration between half the step and
	// the step.
	Jitter bool

	failures int
}

// Next records a failure and returns the wait before the next attempt:
// Min·2^(failures-1), capped at Max, jittered when Jitter is set.
func (b *Backoff) Next() time.Duration {
	d := Step(b.Min, b.Max, b.failures)
	b.failures++
	if b.Jitter && d > 1 {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}

// Reset forgets the failures: the next wait is Min again.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures is the number of failures since the last Reset.
func (b *Backoff) Failures() int { return b.failures }

// Step is the un-jittered wait after n earlier failures: min·2^n, capped at
// max (and never below min).
func Step(minD, maxD time.Duration, n int) time.Duration {
	if maxD < minD {
		maxD = minD
	}
	d := minD
	for i := 0; i < n && d < maxD; i++ {
		d *= 2
	}
	return min(max(d, minD), maxD)
}

// Sleep waits d or until ctx ends; it reports whether ctx is still alive.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
