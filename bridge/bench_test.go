package bridge_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/presence"
)

// instantSink is a durable sink that accepts everything at once.
type instantSink struct{ applied atomic.Int64 }

func (s *instantSink) Apply(_ context.Context, states []bridge.State) error {
	s.applied.Add(int64(len(states)))
	return nil
}
func (s *instantSink) WaitReady(ctx context.Context) error { return ctx.Err() }

func userIDs(n int) []presence.UserID {
	ids := make([]presence.UserID, n)
	for i := range ids {
		ids[i] = presence.UserID(fmt.Sprintf("%08x-1111-2222-3333-444455556666", i))
	}
	return ids
}

// bodies encodes rounds of changing presence for every user, in order.
func bodies(b *testing.B, users []presence.UserID, rounds int) [][]byte {
	t0 := time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)
	avail := presence.Availabilities()
	var out [][]byte
	for r := range rounds {
		for i, id := range users {
			body, err := presence.Encode(presence.Update{
				UserID: id, UPN: "someone@contoso.com",
				Availability: avail[(r+i)%len(avail)], Activity: presence.ActivityInACall,
				Sequence:   fmt.Sprint(1000 + r),
				ObservedAt: t0.Add(time.Duration(r) * time.Second),
				ExpiresAt:  t0.Add(time.Hour),
			})
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, body)
		}
	}
	return out
}

// BenchmarkDecodeApply measures the whole home-side hot path: decode a wire
// message and apply it through the core to a durable sink, 1,000 users.
// Run with -cpu 1 for the one-core budget (≥ 200,000 updates/s).
func BenchmarkDecodeApply(b *testing.B) {
	users := userIDs(1000)
	msgs := bodies(b, users, 32)
	var settled atomic.Int64
	done := func(bridge.Outcome) { settled.Add(1) }
	newCore := func() (*bridge.Core, context.CancelFunc) {
		c, err := bridge.New(bridge.Options{Users: users, Sinks: []bridge.SinkSpec{{Name: "mqtt", Sink: &instantSink{}, Durable: true}}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go c.Run(ctx)
		return c, cancel
	}
	c, cancel := newCore()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(msgs) { // every message applied once: start a fresh core
			b.StopTimer()
			cancel()
			c, cancel = newCore()
			i = 0
			b.StartTimer()
		}
		u, err := presence.Decode(msgs[i], presence.Meta{})
		if err != nil {
			b.Fatal(err)
		}
		c.Submit(u, "bench", done)
		i++
	}
	b.StopTimer()
	cancel()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}

// BenchmarkApply is the core alone, without decoding.
func BenchmarkApply(b *testing.B) {
	users := userIDs(1000)
	c, err := bridge.New(bridge.Options{Users: users, Sinks: []bridge.SinkSpec{{Name: "mqtt", Sink: &instantSink{}, Durable: true}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	t0 := time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)
	avail := presence.Availabilities()
	done := func(bridge.Outcome) {}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		c.Submit(presence.Update{
			UserID: users[n%len(users)], Availability: avail[n%len(avail)],
			ObservedAt: t0.Add(time.Duration(n) * time.Millisecond),
		}, "bench", done)
		n++
	}
}

// BenchmarkHeapPerUser reports the steady-state heap of the core per
// configured user at 10,000 users, each with a state applied (budget 2 KiB).
func BenchmarkHeapPerUser(b *testing.B) {
	const n = 10_000
	for b.Loop() {
		users := userIDs(n)
		before := heapInUse()
		c, err := bridge.New(bridge.Options{Users: users, Sinks: []bridge.SinkSpec{
			{Name: "mqtt", Sink: &instantSink{}, Durable: true},
			{Name: "hue", Sink: &instantSink{}},
		}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() { c.Run(ctx); close(stopped) }()
		t0 := time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)
		var settled atomic.Int64
		for i, id := range users {
			c.Submit(presence.Update{
				UserID: id, UPN: "someone@contoso.com", Availability: presence.AvailabilityBusy,
				Activity: presence.ActivityInACall, StatusMessage: "In a meeting until 3",
				Sequence: fmt.Sprint(1000 + i), ObservedAt: t0, ExpiresAt: t0.Add(time.Hour),
			}, "bench", func(bridge.Outcome) { settled.Add(1) })
		}
		for settled.Load() < n {
			runtime.Gosched()
		}
		after := heapInUse()
		b.ReportMetric(float64(after-before)/n, "heap-B/user")
		runtime.KeepAlive(users)
		cancel()
		<-stopped
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
