package sbsource

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// countingSink is a durable sink that accepts at once and counts the states
// it is given (the "state applications" that reach MQTT and Hue).
type countingSink struct{ states atomic.Int64 }

func (s *countingSink) Apply(ctx context.Context, states []bridge.State) error {
	s.states.Add(int64(len(states)))
	return nil
}

func (s *countingSink) WaitReady(ctx context.Context) error { return ctx.Err() }

// preload puts the bodies in the queue with a few senders at once.
func preload(b *testing.B, ctx context.Context, broker *sbtest.Broker, queue string, bodies [][]byte) {
	b.Helper()
	const senders = 4
	var wg sync.WaitGroup
	for w := range senders {
		wg.Go(func() {
			var part [][]byte
			for i := w; i < len(bodies); i += senders {
				part = append(part, bodies[i])
			}
			broker.Send(ctx, queue, part...)
		})
	}
	wg.Wait()
}

// bareDrain is the reference: a plain SDK loop that receives batches of 100
// and completes each message, until n are completed.
func bareDrain(b *testing.B, ctx context.Context, broker *sbtest.Broker, queue string, n int) time.Duration {
	b.Helper()
	client, err := sbtest.NewClient(broker.ConnectionString())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close(ctx)
	r, err := client.NewReceiverForQueue(queue, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(ctx)
	start := time.Now()
	for done := 0; done < n; {
		msgs, err := r.ReceiveMessages(ctx, 100, nil)
		if err != nil {
			b.Fatalf("bare receive: %v", err)
		}
		for _, m := range msgs {
			if err := r.CompleteMessage(ctx, m, nil); err != nil {
				b.Fatalf("bare complete: %v", err)
			}
			done++
		}
	}
	return time.Since(start)
}

// pipelineDrain runs the Source (queue mode) with the real core and a
// durable sink until n messages are completed; it returns the time taken
// and the number of states the sink was given.
func pipelineDrain(b *testing.B, ctx context.Context, broker *sbtest.Broker, queue string, users []config.User, n int) (time.Duration, int64) {
	b.Helper()
	ids := make([]presence.UserID, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	sink := &countingSink{}
	core, err := bridge.New(bridge.Options{Users: ids, Sinks: []bridge.SinkSpec{{Name: "mqtt", Sink: sink, Durable: true}}})
	if err != nil {
		b.Fatal(err)
	}
	completed := make(chan struct{}, n)
	src, err := New(Options{
		Users:  users,
		Config: config.ServiceBus{ConnectionString: config.Secret(broker.ConnectionString()), Queue: queue},
		onSettled: func(op string) {
			if op == "complete" {
				completed <- struct{}{}
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = core.Run(runCtx) })
	start := time.Now()
	wg.Go(func() { _ = src.Run(runCtx, core) })
	for range n {
		select {
		case <-completed:
		case <-ctx.Done():
			b.Fatalf("pipeline: timed out")
		}
	}
	took := time.Since(start)
	cancel()
	wg.Wait()
	return took, sink.states.Load()
}

func benchUsers(n int) []config.User {
	us := make([]config.User, n)
	for i := range us {
		us[i] = config.User{ID: userID(i), Name: fmt.Sprintf("U%d", i)}
	}
	return us
}

// BenchmarkThroughput compares receive → decode → core → complete with the
// bare SDK loop on the same stand-in: 2,000 messages, each for a different
// user, so nothing collapses.
func BenchmarkThroughput(b *testing.B) {
	const n = 2000
	users := benchUsers(n)
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = v1(users[i].ID, "Busy", i)
	}
	broker := sbtest.Start(b, sbtest.Options{Queues: []string{"bare", "pipeline"}})
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	var bare, pipe time.Duration
	for b.Loop() {
		b.StopTimer()
		preload(b, ctx, broker, "bare", bodies)
		preload(b, ctx, broker, "pipeline", bodies)
		b.StartTimer()
		bare += bareDrain(b, ctx, broker, "bare", n)
		d, _ := pipelineDrain(b, ctx, broker, "pipeline", users, n)
		pipe += d
	}
	b.ReportMetric(float64(n*b.N)/bare.Seconds(), "bare-msgs/s")
	b.ReportMetric(float64(n*b.N)/pipe.Seconds(), "pipeline-msgs/s")
	b.ReportMetric(bare.Seconds()/pipe.Seconds(), "ratio")
}

// BenchmarkBacklogDrain: 10,000 messages over 100 users, drained by the
// pipeline and by the bare loop; reports the time ratio (pipeline/bare,
// lower is better) and how many states reached the sink.
func BenchmarkBacklogDrain(b *testing.B) {
	const n, nUsers = 10000, 100
	users := benchUsers(nUsers)
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = v1(users[i%nUsers].ID, []string{"Available", "Busy", "Away"}[i%3], i)
	}
	broker := sbtest.Start(b, sbtest.Options{Queues: []string{"bare", "pipeline"}})
	ctx, cancel := context.WithTimeout(b.Context(), 20*time.Minute)
	defer cancel()
	var bare, pipe time.Duration
	var states int64
	for b.Loop() {
		b.StopTimer()
		preload(b, ctx, broker, "bare", bodies)
		preload(b, ctx, broker, "pipeline", bodies)
		b.StartTimer()
		bare += bareDrain(b, ctx, broker, "bare", n)
		d, s := pipelineDrain(b, ctx, broker, "pipeline", users, n)
		pipe += d
		states += s
	}
	b.ReportMetric(bare.Seconds()/float64(b.N), "bare-s")
	b.ReportMetric(pipe.Seconds()/float64(b.N), "pipeline-s")
	b.ReportMetric(pipe.Seconds()/bare.Seconds(), "time-ratio")
	b.ReportMetric(float64(states)/float64(b.N), "states")
	if got := broker.Count(ctx, "pipeline", azservicebus.SubQueueDeadLetter); got != 0 {
		b.Errorf("%d messages dead-lettered", got)
	}
}
