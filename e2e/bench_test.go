package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

func sdkClient(b *testing.B, sb *sbtest.Broker) *azservicebus.Client {
	b.Helper()
	c, err := sbtest.NewClient(sb.ConnectionString())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func sender(b *testing.B, c *azservicebus.Client, entity string) *azservicebus.Sender {
	b.Helper()
	s, err := c.NewSender(entity, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func jsonMessage(body []byte) *azservicebus.Message {
	ct := "application/json"
	return &azservicebus.Message{Body: body, ContentType: &ct}
}

// BenchmarkLatency sends 10 updates/s for 10 s. Each tick measures, one
// after the other: the stand-in alone (send → an SDK receiver), mosquitto
// alone (QoS 1 publish → a subscriber), and end to end (send to the user's
// topic → the bridge binary → mosquitto → a subscriber). bridge-p50/p99 are
// the percentiles of each tick's end to end minus its two raw hops.
func BenchmarkLatency(b *testing.B) {
	requireBinary(b)
	const ticks, rate = 100, 10
	sb := sbtest.Start(b, sbtest.Options{Subscriptions: []string{alexID + "/home"}, Queues: []string{"raw"}})
	mq := mosquitto.Start(b)
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()

	// Raw hop 1: a receiver that always has a receive outstanding.
	client := sdkClient(b, sb)
	rawSend, userSend := sender(b, client, "raw"), sender(b, client, alexID)
	rcv, err := client.NewReceiverForQueue("raw", nil)
	if err != nil {
		b.Fatal(err)
	}
	sbGot := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			msgs, err := rcv.ReceiveMessages(ctx, 1, nil)
			if err != nil {
				return
			}
			at := time.Now()
			for _, m := range msgs {
				_ = rcv.CompleteMessage(ctx, m, nil)
			}
			sbGot <- at
		}
	}()
	// Raw hop 2 and the end of the pipeline: one subscriber.
	mqttGot, stateGot := make(chan time.Time, 1), make(chan string, 16)
	sub := newClient(b, mq.URL())
	awaitToken(b, sub.SubscribeMultiple(map[string]byte{"raw/latency": 1, "presence-bridge/" + alexID + "/state": 1}, func(_ mqtt.Client, m mqtt.Message) {
		at := time.Now()
		if m.Topic() == "raw/latency" {
			mqttGot <- at
			return
		}
		if !m.Retained() {
			stateGot <- fmt.Sprintf("%d %s", at.UnixNano(), m.Payload())
		}
	}), "subscribe")
	pub := newClient(b, mq.URL())

	cfg := fmt.Sprintf(`
health_addr: ""
log_level: warn
users:
  - {id: %s, name: Alex}
service_bus:
  connection_string: ${SB}
  subscription: home
mqtt:
  url: %s
`, alexID, mq.URL())
	logs := startBridge(b, cfg, "SB="+sb.ConnectionString()).logs
	online := watch(b, mq.URL(), "presence-bridge/bridge/state")
	online.waitFor(b, ctx, "bridge online", func(ms []received) bool { return has(ms, "presence-bridge/bridge/state", "online") })

	waitTime := func(ch <-chan time.Time, what string) time.Time {
		select {
		case at := <-ch:
			return at
		case <-ctx.Done():
			b.Fatalf("%s: timed out", what)
			return time.Time{}
		}
	}
	var sbLat, mqttLat, e2eLat, share []time.Duration
	seq := 0
	for b.Loop() {
		tick := time.NewTicker(time.Second / rate)
		for range ticks {
			<-tick.C
			seq++
			// The stand-in alone.
			t0 := time.Now()
			if err := rawSend.SendMessage(ctx, jsonMessage([]byte(`{}`)), nil); err != nil {
				b.Fatal(err)
			}
			hop1 := waitTime(sbGot, "raw receive").Sub(t0)
			// Mosquitto alone.
			t0 = time.Now()
			pub.Publish("raw/latency", 1, false, "x")
			hop2 := waitTime(mqttGot, "raw mqtt").Sub(t0)
			// End to end.
			marker := fmt.Sprintf("n%d", seq)
			msg := jsonMessage(body(b, presence.Update{
				UserID: alexID, Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall,
				StatusMessage: marker, ObservedAt: time.Now().UTC(),
			}))
			t0 = time.Now()
			if err := userSend.SendMessage(ctx, msg, nil); err != nil {
				b.Fatal(err)
			}
			var e2e time.Duration
			for e2e == 0 {
				select {
				case s := <-stateGot:
					if strings.Contains(s, `"status_message":"`+marker+`"`) {
						var ns int64
						fmt.Sscan(s, &ns)
						e2e = time.Unix(0, ns).Sub(t0)
					}
				case <-ctx.Done():
					b.Fatalf("state %s never arrived:\n%s", marker, logs.String())
				}
			}
			sbLat, mqttLat, e2eLat = append(sbLat, hop1), append(mqttLat, hop2), append(e2eLat, e2e)
			share = append(share, e2e-hop1-hop2)
		}
		tick.Stop()
	}
	for _, s := range [][]time.Duration{sbLat, mqttLat, e2eLat, share} {
		slices.Sort(s)
	}
	b.ReportMetric(ms(percentile(sbLat, .5)), "sb-p50-ms")
	b.ReportMetric(ms(percentile(sbLat, .99)), "sb-p99-ms")
	b.ReportMetric(ms(percentile(mqttLat, .5)), "mqtt-p50-ms")
	b.ReportMetric(ms(percentile(mqttLat, .99)), "mqtt-p99-ms")
	b.ReportMetric(ms(percentile(e2eLat, .5)), "e2e-p50-ms")
	b.ReportMetric(ms(percentile(e2eLat, .99)), "e2e-p99-ms")
	b.ReportMetric(ms(percentile(share, .5)), "bridge-p50-ms")
	b.ReportMetric(ms(percentile(share, .99)), "bridge-p99-ms")
}

// preloadQueue sends the bodies to a queue with a few concurrent senders.
func preloadQueue(b *testing.B, ctx context.Context, c *azservicebus.Client, queue string, bodies [][]byte) {
	b.Helper()
	const senders = 8
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range senders {
		s := sender(b, c, queue)
		wg.Go(func() {
			for i := w; i < len(bodies); i += senders {
				if err := s.SendMessage(ctx, jsonMessage(bodies[i]), nil); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("preload %s: %v", queue, err)
	}
}

// BenchmarkThroughput: 2,000 messages, each for a different user (queue
// mode), drained by the bridge binary into mosquitto, beside the two raw
// hops in the same run: the stand-in alone (receive batches of 100 and
// complete each) and mosquitto alone (QoS 1 publishes to a subscriber).
// Rates run from the first message out to the last one in.
func BenchmarkThroughput(b *testing.B) {
	requireBinary(b)
	const n = 2000
	sb := sbtest.Start(b, sbtest.Options{Queues: []string{"raw", "bridge"}})
	// A subscriber falling behind a burst must not lose messages (the
	// default queues 1,000 per client, then drops).
	mq := mosquitto.Start(b, mosquitto.WithConfig("max_queued_messages 0"))
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	client := sdkClient(b, sb)
	bodies := make([][]byte, n)
	now := time.Now().UTC()
	for i := range bodies {
		bodies[i] = body(b, presence.Update{UserID: guid(i), Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall, ObservedAt: now})
	}
	cfg := fmt.Sprintf("health_addr: \"\"\nlog_level: warn\n%sservice_bus:\n  connection_string: ${SB}\n  queue: bridge\nmqtt:\n  url: %s\n", usersYAML(n), mq.URL())

	var sbRate, mqttRate, e2eRate float64
	for b.Loop() {
		b.StopTimer()
		preloadQueue(b, ctx, client, "raw", bodies)
		preloadQueue(b, ctx, client, "bridge", bodies)
		b.StartTimer()
		sbRate += drainRate(b, ctx, client, "raw", n)
		mqttRate += mqttPublishRate(b, mq.URL(), n)
		e2eRate += bridgeRate(b, ctx, cfg, sb, mq.URL(), n)
	}
	runs := float64(b.N)
	sbRate, mqttRate, e2eRate = sbRate/runs, mqttRate/runs, e2eRate/runs
	b.ReportMetric(sbRate, "sb-msgs/s")
	b.ReportMetric(mqttRate, "mqtt-msgs/s")
	b.ReportMetric(e2eRate, "e2e-msgs/s")
	b.ReportMetric(e2eRate/min(sbRate, mqttRate), "ratio")
}

func drainRate(b *testing.B, ctx context.Context, c *azservicebus.Client, queue string, n int) float64 {
	b.Helper()
	r, err := c.NewReceiverForQueue(queue, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(context.WithoutCancel(ctx))
	var first time.Time
	for done := 0; done < n; {
		msgs, err := r.ReceiveMessages(ctx, 100, nil)
		if err != nil {
			b.Fatalf("raw receive: %v", err)
		}
		if first.IsZero() {
			first = time.Now()
		}
		for _, m := range msgs {
			if err := r.CompleteMessage(ctx, m, nil); err != nil {
				b.Fatalf("raw complete: %v", err)
			}
			done++
		}
	}
	return float64(n-1) / time.Since(first).Seconds()
}

func mqttPublishRate(b *testing.B, url string, n int) float64 {
	b.Helper()
	got := make(chan struct{}, n)
	sub := newClient(b, url)
	awaitToken(b, sub.Subscribe("raw/rate/#", 1, func(mqtt.Client, mqtt.Message) { got <- struct{}{} }), "subscribe")
	pub := newClient(b, url)
	toks := make([]mqtt.Token, n)
	payload := []byte(`{"availability":"Busy","activity":"InACall","in_call":"ON","busy":"ON","status_message":"","out_of_office":false,"observed_at":"2026-11-26T20:00:00.000Z","source":"service_bus"}`)
	first := time.Now()
	for i := range toks {
		toks[i] = pub.Publish(fmt.Sprintf("raw/rate/%d", i), 1, false, payload)
	}
	for _, t := range toks {
		awaitToken(b, t, "publish")
	}
	for range n {
		select {
		case <-got:
		case <-time.After(wait):
			b.Fatal("raw mqtt: messages lost")
		}
	}
	took := time.Since(first)
	sub.Unsubscribe("raw/rate/#")
	return float64(n-1) / took.Seconds()
}

// bridgeRate starts the bridge on the preloaded queue and times it from its
// "online" (the start of its MQTT session) to the n-th user's state. The
// window includes the bridge's start-up on MQTT (announcing the n users'
// devices, during which it takes no messages), which the raw hops' clocks
// leave out. The bridge's own status (presence-bridge/bridge/state) marks
// the start; it is not one of the users' states.
func bridgeRate(b *testing.B, ctx context.Context, cfg string, sb *sbtest.Broker, url string, n int) float64 {
	b.Helper()
	const bridgeState = "presence-bridge/bridge/state"
	var (
		mu          sync.Mutex
		seen        = make(map[string]bool, n)
		first, last time.Time
		all         = make(chan struct{})
	)
	sub := newClient(b, url)
	awaitToken(b, sub.Subscribe("presence-bridge/+/state", 1, func(_ mqtt.Client, m mqtt.Message) {
		at := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if m.Retained() {
			return
		}
		if m.Topic() == bridgeState {
			if first.IsZero() && string(m.Payload()) == "online" {
				first = at
			}
			return
		}
		if seen[m.Topic()] || len(seen) == n {
			return
		}
		seen[m.Topic()] = true
		if len(seen) == n {
			last = at
			close(all)
		}
	}), "subscribe")
	p := startBridge(b, cfg, "SB="+sb.ConnectionString())
	select {
	case <-all:
	case <-ctx.Done():
		b.Fatalf("bridge: %d of %d states:\n%s", len(seen), n, p.logs.String())
	}
	if code, _ := p.stop(b); code != 0 {
		b.Fatalf("bridge exit %d:\n%s", code, p.logs.String())
	}
	sub.Unsubscribe("presence-bridge/+/state")
	mu.Lock()
	defer mu.Unlock()
	if first.IsZero() {
		b.Fatalf("bridge: no %q seen before the users' states", "online")
	}
	return float64(n) / last.Sub(first).Seconds()
}

// BenchmarkThousandUsers: 1,000 users in queue mode take 100,000 updates
// (100 each; the last one of each user is marked), then the bridge idles for
// 60 s. Reports the resident set after the load and its peak, and the CPU
// used while idle as a percentage of one core.
func BenchmarkThousandUsers(b *testing.B) {
	requireBinary(b)
	const users, perUser = 1000, 100
	const idle = 60 * time.Second
	sb := sbtest.Start(b, sbtest.Options{Queues: []string{"q"}})
	mq := mosquitto.Start(b, mosquitto.WithConfig("max_queued_messages 0"))
	ctx, cancel := context.WithTimeout(b.Context(), 20*time.Minute)
	defer cancel()
	client := sdkClient(b, sb)
	cfg := fmt.Sprintf("health_addr: \"\"\nlog_level: warn\n%sservice_bus:\n  connection_string: ${SB}\n  queue: q\nmqtt:\n  url: %s\n", usersYAML(users), mq.URL())

	done, reached := awaitFinalStates(b, mq.URL(), users)

	var rss0, rss, peak, idleCPU, rate float64
	for b.Loop() {
		p := startBridge(b, cfg, "SB="+sb.ConnectionString())
		online := watch(b, mq.URL(), "presence-bridge/bridge/state")
		online.waitFor(b, ctx, "bridge online", func(ms []received) bool { return has(ms, "presence-bridge/bridge/state", "online") })

		startRSS, _ := p.rssKiB(b)
		start := time.Now().UTC()
		avail := []presence.Availability{presence.AvailabilityAvailable, presence.AvailabilityBusy, presence.AvailabilityAway, presence.AvailabilityDoNotDisturb}
		bodies := make([][]byte, 0, users*perUser)
		for k := range perUser {
			for u := range users {
				upd := presence.Update{UserID: guid(u), Availability: avail[k%len(avail)], ObservedAt: start.Add(time.Duration(k) * time.Millisecond)}
				if k == perUser-1 {
					upd.StatusMessage = "final"
				}
				bodies = append(bodies, body(b, upd))
			}
		}
		began := time.Now()
		preloadQueue(b, ctx, client, "q", bodies)
		select {
		case <-done:
		case <-ctx.Done():
			b.Fatalf("only %d users reached their final state:\n%s", reached(), p.logs.String())
		}
		rate = float64(len(bodies)) / time.Since(began).Seconds()
		// Every message settled: nothing left in hand.
		for tick := time.NewTicker(100 * time.Millisecond); sb.Count(ctx, "q", 0) != 0; <-tick.C {
			if ctx.Err() != nil {
				b.Fatal("queue never drained")
			}
		}
		now, hwm := p.rssKiB(b)
		rss0 = float64(startRSS) / 1024
		rss, peak = float64(now)/1024, float64(hwm)/1024

		ticks := p.cpuTicks(b)
		idleStart := time.Now()
		<-time.After(idle) // the measurement window, not a wait for an event
		used := float64(p.cpuTicks(b)-ticks) / clockTicks
		idleCPU = 100 * used / time.Since(idleStart).Seconds()
		if code, _ := p.stop(b); code != 0 {
			b.Fatalf("bridge exit %d:\n%s", code, p.logs.String())
		}
		if n := sb.Count(ctx, "q", azservicebus.SubQueueDeadLetter); n != 0 {
			b.Errorf("%d messages dead-lettered", n)
		}
	}
	b.ReportMetric(rss0, "start-rss-MiB")
	b.ReportMetric(rss, "rss-MiB")
	b.ReportMetric(peak, "peak-rss-MiB")
	b.ReportMetric(idleCPU, "idle-cpu-%")
	b.ReportMetric(rate, "updates/s")
}

// BenchmarkHousehold: 10 users, each on their own topic subscription (SPEC
// §8's household), take 3,000 updates (300 each, sent as fast as one sender
// per user can, the last of each marked). Reports the bridge binary's
// resident set after start, after every message is settled, and its peak.
func BenchmarkHousehold(b *testing.B) {
	requireBinary(b)
	const users, perUser = 10, 300
	subs := make([]string, users)
	for i := range subs {
		subs[i] = string(guid(i)) + "/home"
	}
	sb := sbtest.Start(b, sbtest.Options{Subscriptions: subs})
	mq := mosquitto.Start(b)
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	client := sdkClient(b, sb)
	senders := make([]*azservicebus.Sender, users)
	for i := range senders {
		senders[i] = sender(b, client, string(guid(i)))
	}
	cfg := fmt.Sprintf("health_addr: \"\"\nlog_level: warn\n%sservice_bus:\n  connection_string: ${SB}\n  subscription: home\nmqtt:\n  url: %s\n", usersYAML(users), mq.URL())

	done, reached := awaitFinalStates(b, mq.URL(), users)

	var rss0, rss, peak, rate float64
	for b.Loop() {
		p := startBridge(b, cfg, "SB="+sb.ConnectionString())
		online := watch(b, mq.URL(), "presence-bridge/bridge/state")
		online.waitFor(b, ctx, "bridge online", func(ms []received) bool { return has(ms, "presence-bridge/bridge/state", "online") })
		startRSS, _ := p.rssKiB(b)

		start := time.Now().UTC()
		avail := []presence.Availability{presence.AvailabilityAvailable, presence.AvailabilityBusy, presence.AvailabilityAway, presence.AvailabilityDoNotDisturb}
		began := time.Now()
		var wg sync.WaitGroup
		var failed atomic.Value
		for u, s := range senders {
			wg.Go(func() {
				for k := range perUser {
					upd := presence.Update{UserID: guid(u), Availability: avail[k%len(avail)], ObservedAt: start.Add(time.Duration(k) * time.Millisecond)}
					if k == perUser-1 {
						upd.StatusMessage = "final"
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
		select {
		case <-done:
		case <-ctx.Done():
			b.Fatalf("only %d users reached their final state:\n%s", reached(), p.logs.String())
		}
		rate = float64(users*perUser) / time.Since(began).Seconds()
		// Every message settled: nothing left in hand.
		for _, s := range subs {
			path := strings.Replace(s, "/", "/Subscriptions/", 1)
			for tick := time.NewTicker(100 * time.Millisecond); sb.Count(ctx, path, 0) != 0; <-tick.C {
				if ctx.Err() != nil {
					b.Fatalf("%s never drained", path)
				}
			}
			if n := sb.Count(ctx, path, azservicebus.SubQueueDeadLetter); n != 0 {
				b.Errorf("%s: %d messages dead-lettered", path, n)
			}
		}
		now, hwm := p.rssKiB(b)
		rss0, rss, peak = float64(startRSS)/1024, float64(now)/1024, float64(hwm)/1024
		if code, _ := p.stop(b); code != 0 {
			b.Fatalf("bridge exit %d:\n%s", code, p.logs.String())
		}
	}
	b.ReportMetric(rss0, "start-rss-MiB")
	b.ReportMetric(rss, "rss-MiB")
	b.ReportMetric(peak, "peak-rss-MiB")
	b.ReportMetric(rate, "updates/s")
}

// awaitFinalStates subscribes to the users' states and closes the returned
// channel once each of n users has shown its last update (status message
// "final"); reached counts the users that have.
func awaitFinalStates(b *testing.B, url string, n int) (done <-chan struct{}, reached func() int) {
	b.Helper()
	var (
		mu    sync.Mutex
		final = make(map[string]bool, n)
		all   = make(chan struct{})
	)
	sub := newClient(b, url)
	awaitToken(b, sub.Subscribe("presence-bridge/+/state", 1, func(_ mqtt.Client, m mqtt.Message) {
		if !strings.Contains(string(m.Payload()), `"status_message":"final"`) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !final[m.Topic()] {
			final[m.Topic()] = true
			if len(final) == n {
				close(all)
			}
		}
	}), "subscribe")
	return all, func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(final)
	}
}
