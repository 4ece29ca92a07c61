package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// BenchmarkHouseholdFlood is the household shape under a flood: 10 users,
// one subscription each, floods of 2,000 messages (200 per user, the
// availability alternating, sent as fast as one client can over one sender
// link per topic). Floods alternate between the bridge binary (with real
// mosquitto) and bare receive-and-complete loops (ReceiveMessages(ctx, 10),
// then complete each) on ten other topics of the same stand-in; each rate
// runs from the first send to the last message completed. The stand-in is
// single-threaded and the bottleneck of both, so the ratio says how much
// more work per message the bridge makes it do.
func BenchmarkHouseholdFlood(b *testing.B) {
	requireBinary(b)
	const users, perUser = 10, 200
	var subs []string
	for i := range users {
		subs = append(subs, string(guid(i))+"/home", "raw-"+string(guid(i))+"/raw")
	}
	sb := sbtest.Start(b, sbtest.Options{Subscriptions: subs})
	mq := mosquitto.Start(b, mosquitto.WithConfig("max_queued_messages 0"))
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	client := sdkClient(b, sb)
	bridgeSenders := make([]*azservicebus.Sender, users)
	rawSenders := make([]*azservicebus.Sender, users)
	for i := range users {
		bridgeSenders[i] = sender(b, client, string(guid(i)))
		rawSenders[i] = sender(b, client, "raw-"+string(guid(i)))
	}
	cfg := fmt.Sprintf("health_addr: \"\"\nlog_level: warn\n%sservice_bus:\n  connection_string: ${SB}\n  subscription: home\nmqtt:\n  url: %s\n", usersYAML(users), mq.URL())
	p := startBridge(b, cfg, "SB="+sb.ConnectionString())
	defer func() {
		if code, _ := p.stop(b); code != 0 {
			b.Errorf("bridge exit %d:\n%s", code, p.logs.String())
		}
	}()
	online := watch(b, mq.URL(), "presence-bridge/bridge/state")
	online.waitFor(b, ctx, "bridge online", func(ms []received) bool { return has(ms, "presence-bridge/bridge/state", "online") })

	var bridgeRate, rawRate, standInRaw, standInBridge float64
	var round int
	for b.Loop() {
		round++
		s0, c0 := sb.Stats(b), cpuOf(sb.Pid())
		raw := rawFlood(b, ctx, client, rawSenders, perUser, round)
		s1, c1, p1 := sb.Stats(b), cpuOf(sb.Pid()), cpuOf(p.cmd.Process.Pid)
		var s2 map[string]int
		var c2, p2 time.Duration
		br := bridgeFlood(b, ctx, sb, mq.URL(), bridgeSenders, perUser, round, func() {
			s2, c2, p2 = sb.Stats(b), cpuOf(sb.Pid()), cpuOf(p.cmd.Process.Pid)
		})
		b.Logf("round %d: stand-in work, bare loops: CPU %v %v", round, c1-c0, statsDelta(s0, s1))
		b.Logf("round %d: stand-in work, bridge:     CPU %v %v; the bridge's CPU %v", round, c2-c1, statsDelta(s1, s2), p2-p1)
		standInRaw += (c1 - c0).Seconds()
		standInBridge += (c2 - c1).Seconds()
		rawRate += raw
		bridgeRate += br
		b.Logf("round %d: bridge %.0f msgs/s, bare loops %.0f msgs/s, ratio %.2f", round, br, raw, br/raw)
	}
	n := float64(b.N)
	b.ReportMetric(bridgeRate/n, "bridge-msgs/s")
	b.ReportMetric(rawRate/n, "raw-msgs/s")
	b.ReportMetric(bridgeRate/rawRate, "ratio")
	// The stand-in's CPU per 1,000 messages on each side: the work the
	// consumer makes it do, whatever else shares the cores.
	b.ReportMetric(standInRaw*1000/n/float64(users*perUser)*1000, "standin-raw-ms/1k")
	b.ReportMetric(standInBridge*1000/n/float64(users*perUser)*1000, "standin-bridge-ms/1k")
}

// flood sends perUser messages to each topic, one goroutine per sender,
// the last of each marked with the status message "final <round>".
func flood(b *testing.B, ctx context.Context, senders []*azservicebus.Sender, perUser, round int) {
	b.Helper()
	start := time.Now().UTC()
	avail := []presence.Availability{presence.AvailabilityBusy, presence.AvailabilityAvailable}
	var wg sync.WaitGroup
	var failed atomic.Value
	for u, s := range senders {
		wg.Go(func() {
			for k := range perUser {
				upd := presence.Update{UserID: guid(u), Availability: avail[k%2], ObservedAt: start.Add(time.Duration(k) * time.Millisecond)}
				if k == perUser-1 {
					upd.StatusMessage = fmt.Sprintf("final %d", round)
				}
				if err := s.SendMessage(ctx, jsonMessage(body(b, upd)), nil); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("send: %v", err)
	}
}

// rawFlood runs bare receive-and-complete loops on the raw subscriptions
// while a flood arrives, and returns messages per second.
func rawFlood(b *testing.B, ctx context.Context, client *azservicebus.Client, senders []*azservicebus.Sender, perUser, round int) float64 {
	b.Helper()
	total := int64(len(senders) * perUser)
	var done atomic.Int64
	var last atomic.Int64
	var wg sync.WaitGroup
	loopCtx, stop := context.WithCancel(ctx)
	defer stop()
	for i := range senders {
		r, err := client.NewReceiverForSubscription("raw-"+string(guid(i)), "raw", nil)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			defer r.Close(context.WithoutCancel(ctx))
			for loopCtx.Err() == nil {
				msgs, err := r.ReceiveMessages(loopCtx, 10, nil)
				if err != nil {
					return
				}
				for _, m := range msgs {
					if err := r.CompleteMessage(ctx, m, nil); err != nil {
						b.Errorf("raw complete: %v", err)
						return
					}
					last.Store(time.Now().UnixNano())
					if done.Add(1) == total {
						stop()
					}
				}
			}
		})
	}
	began := time.Now()
	flood(b, ctx, senders, perUser, round)
	wg.Wait()
	if done.Load() != total {
		b.Fatalf("bare loops completed %d of %d", done.Load(), total)
	}
	return float64(total) / time.Unix(0, last.Load()).Sub(began).Seconds()
}

// bridgeFlood sends a flood to the bridge's topics and returns messages per
// second until every user's final state is on MQTT (the newest message of
// each user, completed once its state is acknowledged); done runs then,
// before the untimed check that everything was settled.
func bridgeFlood(b *testing.B, ctx context.Context, sb *sbtest.Broker, url string, senders []*azservicebus.Sender, perUser, round int, done func()) float64 {
	b.Helper()
	marker := fmt.Sprintf(`"status_message":"final %d"`, round)
	w := watch(b, url, "presence-bridge/+/state")
	began := time.Now()
	flood(b, ctx, senders, perUser, round)
	w.waitFor(b, ctx, "every final state", func(ms []received) bool {
		n := 0
		for _, m := range ms {
			if strings.Contains(m.payload, marker) {
				n++
			}
		}
		return n >= len(senders)
	})
	took := time.Since(began)
	done()
	// Not timed: every message settled (the superseded ones are completed
	// as they arrive, the newest once its state is on MQTT).
	for i := range senders {
		path := string(guid(i)) + "/Subscriptions/home"
		for sb.Count(ctx, path, 0) != 0 {
			if ctx.Err() != nil {
				b.Fatalf("%s never drained", path)
			}
			time.Sleep(5 * time.Millisecond) // polling the broker's count, bounded by ctx
		}
		if n := sb.Count(ctx, path, azservicebus.SubQueueDeadLetter); n != 0 {
			b.Errorf("%s: %d messages dead-lettered", path, n)
		}
	}
	return float64(len(senders)*perUser) / took.Seconds()
}

// statsDelta is what the stand-in did between two Stats calls.
func statsDelta(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
