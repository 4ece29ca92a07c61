package cli

import (
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/presence"
)

// fakeClock sums the time the poller spends waiting on the fakes' HTTP
// (Entra's token endpoint, the management API).
type fakeClock struct {
	base http.RoundTripper
	ns   atomic.Int64
}

func (f *fakeClock) RoundTrip(r *http.Request) (*http.Response, error) {
	began := time.Now()
	resp, err := f.base.RoundTrip(r)
	f.ns.Add(int64(time.Since(began)))
	return resp, err
}

// BenchmarkSignIn is one sign-in round trip (GET /auth/start, then POST
// /auth/end with the fake Entra's answer, to the page), for a person who
// signed in before (topic and subscription exist, the Listen key rotates,
// the current presence is published to the stand-in). It reports the
// median and 90th percentile of the whole round trip and of the poller's
// own part: the round trip less the time spent waiting on the fakes' HTTP.
// Publishing to the Python stand-in stays in the poller's part.
func BenchmarkSignIn(b *testing.B) {
	var clock *fakeClock
	p := person(50, "Bench")
	r := newRig(b, rigOptions{people: []entratest.Person{p}, broker: true, transport: func(base http.RoundTripper) http.RoundTripper {
		clock = &fakeClock{base: base}
		return clock
	}})
	signInOnce(b, r, p.ObjectID) // the first one creates the topic
	var total, own []time.Duration
	for b.Loop() {
		f0 := clock.ns.Load()
		d := signInOnce(b, r, p.ObjectID)
		total = append(total, d)
		own = append(own, d-time.Duration(clock.ns.Load()-f0))
	}
	slices.Sort(total)
	slices.Sort(own)
	q := func(s []time.Duration, f float64) float64 {
		return float64(s[int(f*float64(len(s)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(total, 0.5), "p50-ms")
	b.ReportMetric(q(total, 0.9), "p90-ms")
	b.ReportMetric(q(own, 0.5), "own-p50-ms")
	b.ReportMetric(q(own, 0.9), "own-p90-ms")
}

// signInOnce times /auth/start plus /auth/end (the fake Entra's page is
// the person's time, not the poller's).
func signInOnce(b *testing.B, r *rig, id presence.UserID) time.Duration {
	b.Helper()
	began := time.Now()
	loc, cookie := r.start(b)
	startTook := time.Since(began)
	_, form, err := r.entra.SignInURL(loc, id)
	if err != nil {
		b.Fatal(err)
	}
	began = time.Now()
	status, page := r.end(b, form, cookie)
	if status != http.StatusOK {
		b.Fatalf("status %d\n%s", status, page)
	}
	return startTook + time.Since(began)
}
