package backoff

import (
	"testing"
	"time"
)

func TestStepDoublesUpToMax(t *testing.T) {
	var got []time.Duration
	for n := range 7 {
		got = append(got, Step(time.Second, 30*time.Second, n))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("steps %v, want %v", got, want)
		}
	}
	if d := Step(time.Second, time.Millisecond, 3); d != time.Second {
		t.Errorf("max below min: %v, want min", d)
	}
	if d := Step(time.Second, time.Hour, 1000); d != time.Hour {
		t.Errorf("many failures: %v, want max (no overflow)", d)
	}
}

func TestJitterStaysWithinHalfStepAndStep(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Jitter: true}
	for i := range 50 {
		step := Step(b.Min, b.Max, i)
		d := b.Next()
		if d < step/2 || d > step {
			t.Fatalf("failure %d: wait %v outside [%v, %v]", i, d, step/2, step)
		}
	}
	seen := map[time.Duration]bool{}
	b2 := Backoff{Min: time.Second, Max: time.Minute, Jitter: true}
	for range 12 {
		seen[b2.Next()] = true
	}
	if len(seen) < 6 {
		t.Errorf("only %d distinct waits in 12: no jitter", len(seen))
	}
	if b.Failures() != 50 {
		t.Errorf("failures %d", b.Failures())
	}
	b.Reset()
	if d := b.Next(); d > b.Min {
		t.Errorf("after reset: %v, want at most min", d)
	}
}
