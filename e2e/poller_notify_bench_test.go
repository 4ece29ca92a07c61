package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
)

// changeToMQTT changes alex's presence in the fake Graph and returns how
// long until the bridge's state topic shows it.
func (r *notifyRig) changeToMQTT(tb testing.TB, ctx context.Context, i int) time.Duration {
	tb.Helper()
	acts := []string{"InACall", "Away", "Presenting", "Available"}
	avails := []string{"Busy", "Away", "DoNotDisturb", "Available"}
	act, avail := acts[i%4], avails[i%4]
	r.ha.mu.Lock()
	from := len(r.ha.msgs)
	r.ha.mu.Unlock()
	began := time.Now()
	r.graph.SetPresence(alexID, graphtest.Presence{Availability: avail, Activity: act})
	var at time.Time
	r.ha.waitFor(tb, ctx, "the change on MQTT", func(ms []received) bool {
		for _, m := range ms[min(from, len(ms)):] {
			if m.topic == "presence-bridge/"+alexID+"/state" && strings.Contains(m.payload, `"activity":"`+act+`"`) {
				at = m.at
				return true
			}
		}
		return false
	})
	return at.Sub(began)
}

func report(b *testing.B, prefix string, d []time.Duration) {
	slices.Sort(d)
	b.ReportMetric(ms(percentile(d, 0.5)), prefix+"p50-ms")
	b.ReportMetric(ms(percentile(d, 0.99)), prefix+"p99-ms")
	b.ReportMetric(float64(len(d)), prefix+"samples")
}

// BenchmarkNotificationLatency: a presence change in the fake Graph (which
// notifies after 500 ms, Graph's typical delay) until the bridge's state
// topic on mosquitto shows it, through the built poller (change
// notifications on, polling every 10 minutes so that only a notification
// can be in time) and the built bridge, over the Service Bus stand-in; 40
// changes, one after another.
func BenchmarkNotificationLatency(b *testing.B) {
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	r := newNotifyRig(b, ctx, notifyRigOptions{notifications: true, pollInterval: "10m"})
	var d []time.Duration
	for b.Loop() {
		d = d[:0]
		for i := range 40 {
			d = append(d, r.changeToMQTT(b, ctx, i))
		}
	}
	report(b, "", d)
}

// BenchmarkPollingLatency is the same run with change notifications off
// and polling at the default 30 s: each change is made at a random moment
// of the poll cycle (a random pause first), so the wait for the next read
// is uniform over 0-30 s. It measures 6 changes (about 3 minutes;
// PRESENCE_BENCH_POLL_SAMPLES changes that).
func BenchmarkPollingLatency(b *testing.B) {
	n := 6
	if v, err := strconv.Atoi(os.Getenv("PRESENCE_BENCH_POLL_SAMPLES")); err == nil && v > 0 {
		n = v
	}
	ctx, cancel := context.WithTimeout(b.Context(), time.Duration(n)*2*time.Minute+5*time.Minute)
	defer cancel()
	r := newNotifyRig(b, ctx, notifyRigOptions{pollInterval: "30s"})
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var d []time.Duration
	for b.Loop() {
		d = d[:0]
		for i := range n {
			// Placing the change at a random phase of the cycle, not
			// waiting for anything.
			time.Sleep(time.Duration(rnd.Int64N(int64(30 * time.Second))))
			d = append(d, r.changeToMQTT(b, ctx, i))
		}
	}
	report(b, "", d)
}
