package discovery_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/presence"
)

// BenchmarkApply publishes batches of 1,000 users' states (state and
// availability, QoS 1, retained) to a real mosquitto and waits for every
// PUBACK: the sink's own throughput, in states per second.
func BenchmarkApply(b *testing.B) {
	if testing.Short() {
		b.Skip("needs mosquitto")
	}
	const n = 1000
	users := make([]config.User, n)
	for i := range users {
		users[i] = config.User{ID: presence.UserID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)), Name: fmt.Sprintf("U%d", i)}
	}
	mq := mosquitto.Start(b)
	s, err := discovery.New(options(mq.URL(), users...))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := s.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	states := make([]bridge.State, n)
	b.ReportAllocs()
	var version uint64
	for b.Loop() {
		version++
		for i, u := range users {
			states[i] = bridge.State{UserID: u.ID, Availability: presence.Availability(version % 9), Online: true, Version: version, Source: "bench"}
		}
		if err := s.Apply(ctx, states); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "states/s")
}
