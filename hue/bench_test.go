package hue

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
	"github.com/presence-bridge/presence-bridge/presence"
)

// startBenchSink runs a sink against a fake bridge on loopback (real
// sockets, real clock).
func startBenchSink(b *testing.B, fake *huetest.Bridge, cfg config.Hue, users []config.User) *Sink {
	b.Helper()
	cfg.Bridges[0].Host = fake.Host()
	s, err := New(Options{Config: cfg, Users: users, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return s
}

func percentile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return float64(s[i]) / float64(time.Millisecond)
}

// BenchmarkIdleChangeLatency: on an idle bridge, the time from Apply to
// the command's arrival at the bridge. Quality bar: p99 ≤ 20 ms.
func BenchmarkIdleChangeLatency(b *testing.B) {
	const interval = 5 * time.Millisecond
	fake := huetest.Start(b, huetest.Options{MinInterval: interval})
	cfg := oneGroup()
	cfg.MinInterval = config.Duration(interval)
	s := startBenchSink(b, fake, cfg, testUsers)
	ctx := b.Context()
	var lat []time.Duration
	var ver uint64
	b.ReportAllocs()
	for b.Loop() {
		// Let the bridge go idle: past min_interval since the last command.
		time.Sleep(2 * interval)
		ver++
		av := presence.AvailabilityBusy
		if ver%2 == 0 {
			av = presence.AvailabilityAvailable
		}
		n := len(fake.Commands())
		start := time.Now()
		_ = s.Apply(ctx, []bridge.State{{UserID: alexID, Availability: av, Online: true, Version: ver}})
		if err := fake.WaitCommands(ctx, func(c []huetest.Command) bool { return len(c) > n }); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, fake.Commands()[n].At.Sub(start))
	}
	if fake.RateLimited() > 0 {
		b.Errorf("%d commands rejected for rate", fake.RateLimited())
	}
	b.ReportMetric(percentile(lat, 0.5), "p50-ms")
	b.ReportMetric(percentile(lat, 0.99), "p99-ms")
	b.ReportMetric(percentile(lat, 1), "max-ms")
}

// BenchmarkFlappingSoak: four users flap every 50 ms over three groups of
// one bridge that enforces Hue's one group command per second. Zero
// commands may be rejected for rate, and every group must end on its final
// look. HUE_SOAK_DURATION sets the length (default 10s; the quality bar's
// run is 10m).
func BenchmarkFlappingSoak(b *testing.B) {
	dur := 10 * time.Second
	if v := os.Getenv("HUE_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > time.Hour {
			b.Fatalf("HUE_SOAK_DURATION=%q: want a duration up to 1h", v)
		}
		dur = d
	}
	users := []config.User{
		{ID: alexID, Name: "Alex"}, {ID: blakeID, Name: "Blake"},
		{ID: "8b3e4c5d-0000-1111-2222-333344445555", Name: "Casey"},
		{ID: "9c4f5d6e-0000-1111-2222-333344445555", Name: "Drew"},
	}
	for b.Loop() {
		fake := huetest.Start(b, huetest.Options{Groups: []huetest.Group{
			{ID: "1", Name: "Office", Type: "Room", Lights: []string{"1"}},
			{ID: "2", Name: "Kitchen", Type: "Room", Lights: []string{"2"}},
			{ID: "3", Name: "Hall", Type: "Zone", Lights: []string{"3"}},
		}})
		cfg := oneGroup(
			config.HueGroup{Group: "Office", Users: []string{"Alex", "Blake"}},
			config.HueGroup{Group: "Kitchen", Users: []string{"Casey"}},
			config.HueGroup{Group: "Hall", Users: []string{"Alex", "Casey", "Drew"}},
		)
		s := startBenchSink(b, fake, cfg, users)
		rng := rand.New(rand.NewPCG(1, 2))
		avs := presence.Availabilities()
		acs := presence.Activities()
		final := map[presence.UserID]bridge.State{}
		var ver uint64
		changes := 0
		tick := time.NewTicker(50 * time.Millisecond)
		deadline := time.Now().Add(dur)
		for time.Now().Before(deadline) {
			<-tick.C
			ver++
			u := users[rng.IntN(len(users))]
			st := bridge.State{UserID: u.ID, Availability: avs[rng.IntN(len(avs))], Activity: acs[rng.IntN(len(acs))], Online: rng.IntN(10) > 0, Version: ver}
			final[u.ID] = st
			_ = s.Apply(context.Background(), []bridge.State{st})
			changes++
		}
		tick.Stop()
		// Three groups at one command per second settle within a few seconds.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		settled := func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, g := range s.bridges[0].groups {
				if g.hasDesired && !actionFor(g).Empty() {
					return false
				}
			}
			return true
		}
		poll := time.NewTicker(20 * time.Millisecond) // the sink's own state has no signal
		for !settled() && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-poll.C:
			}
		}
		poll.Stop()
		cancel()
		// The lamps show what the users' final states ask for.
		wrong := 0
		for gi, id := range []string{"1", "2", "3"} {
			s.mu.Lock()
			want := s.bridges[0].groups[gi].desired
			s.mu.Unlock()
			act, _ := fake.GroupAction(id)
			xy, _ := xyOf(act)
			if act["on"] != want.On || want.On && (act["bri"] != float64(want.Bri) || want.Effect != EffectColorloop && xy != want.XY) {
				wrong++
				b.Errorf("group %s shows %v, want %v", id, act, want)
			}
		}
		cmds := fake.Commands()
		if fake.RateLimited() > 0 {
			b.Errorf("%d of %d commands rejected for rate", fake.RateLimited(), len(cmds))
		}
		b.ReportMetric(float64(fake.RateLimited()), "rate-rejected")
		b.ReportMetric(float64(len(cmds)), "commands")
		b.ReportMetric(float64(changes), "changes")
		b.ReportMetric(float64(len(cmds))/dur.Seconds(), "cmds/s")
		b.ReportMetric(float64(wrong), "groups-wrong")
		_ = fake.Close()
	}
}

// BenchmarkApply: the cost of handing one state to the sink (the core's
// goroutine pays it).
func BenchmarkApply(b *testing.B) {
	cfg := oneGroup(
		config.HueGroup{Group: "Office", Users: []string{"Alex", "Blake"}},
		config.HueGroup{Group: "Kitchen", Users: []string{"Blake"}},
	)
	s, err := New(Options{Config: cfg, Users: testUsers, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	states := []bridge.State{{UserID: alexID, Online: true}}
	avs := presence.Availabilities()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		states[0].Availability = avs[i%len(avs)]
		states[0].Version = uint64(i)
		_ = s.Apply(context.Background(), states)
	}
}
