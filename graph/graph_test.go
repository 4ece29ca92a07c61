package graph

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/presence"
)

const (
	alex    = presence.UserID("6f1c2a3b-1111-2222-3333-444455556666")
	sam     = presence.UserID("0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff")
	tenantA = "72f988bf-0000-0000-0000-00000000000a"
	tenantB = "72f988bf-0000-0000-0000-00000000000b"
)

// roundTripper answers in memory, so that synctest's fake clock drives
// pacing: handle decides each answer.
type roundTripper func(*http.Request) *http.Response

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r), nil }

func reply(status int, body string, header ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body))}
}

const alexBusy = `{"id":"6F1C2A3B-1111-2222-3333-444455556666","availability":"busy","activity":"inACall","sequenceNumber":"638680000000000042",
"statusMessage":{"message":{"content":"Back at 3","contentType":"text"}},"outOfOfficeSettings":{"isOutOfOffice":true}}`

func TestMeParsesCaseInsensitively(t *testing.T) {
	c := New(Options{HTTPClient: &http.Client{Transport: roundTripper(func(r *http.Request) *http.Response {
		if r.URL.Path != "/v1.0/me/presence" || r.Header.Get("Authorization") != "Bearer tok" {
			return reply(400, `{}`)
		}
		return reply(200, alexBusy)
	})}})
	u, err := c.Me(t.Context(), tenantA, "tok")
	if err != nil {
		t.Fatal(err)
	}
	want := presence.Update{UserID: alex, TenantID: tenantA, Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall,
		StatusMessage: "Back at 3", OutOfOffice: true, Sequence: "638680000000000042"}
	if u != want {
		t.Errorf("got %+v\nwant %+v", u, want)
	}
}

func TestUnknownValuesAreKept(t *testing.T) {
	c := New(Options{HTTPClient: &http.Client{Transport: roundTripper(func(*http.Request) *http.Response {
		return reply(200, `{"id":"`+string(alex)+`","availability":"Grumpy","activity":"Juggling"}`)
	})}})
	u, err := c.Me(t.Context(), tenantA, "tok")
	if err != nil {
		t.Fatal(err)
	}
	if u.Availability != presence.AvailabilityPresenceUnknown || u.UnknownAvailability != "Grumpy" || u.UnknownActivity != "Juggling" {
		t.Errorf("got %+v", u)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"401", 401, `{}`, ErrUnauthorized},
		{"403", 403, `{}`, ErrForbidden},
		{"429", 429, `{}`, ErrThrottled},
		{"503", 503, `{}`, ErrThrottled},
		{"not json", 200, `<html>`, nil},
		{"no id", 200, `{"availability":"Busy"}`, nil},
		{"500", 500, `{"error":{"code":"InternalServerError"}}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{HTTPClient: &http.Client{Transport: roundTripper(func(*http.Request) *http.Response {
				return reply(tc.status, tc.body)
			})}})
			_, err := c.Me(t.Context(), tenantA, "secret-access-token-42")
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret-access-token-42") {
				t.Errorf("error repeats the token: %v", err)
			}
		})
	}
}

// TestPacingKeepsTheBudget: 25 reads with a budget of 10 per 30 s take two
// more windows, and no window ever holds more than 10 requests.
func TestPacingKeepsTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var starts []time.Time
		c := New(Options{Budget: 10, Window: 30 * time.Second, HTTPClient: &http.Client{Transport: roundTripper(func(*http.Request) *http.Response {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			return reply(200, alexBusy)
		})}})
		began := time.Now()
		var wg sync.WaitGroup
		for range 25 {
			wg.Go(func() {
				if _, err := c.Me(t.Context(), tenantA, "tok"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if took := time.Since(began); took != 60*time.Second {
			t.Errorf("25 reads at 10 per 30 s took %v, want 60s", took)
		}
		for i := range starts {
			n := 0
			for j := range starts {
				if d := starts[j].Sub(starts[i]); d >= 0 && d < 30*time.Second {
					n++
				}
			}
			if n > 10 {
				t.Fatalf("%d requests in the 30 s from %v", n, starts[i].Sub(began))
			}
		}
	})
}

// TestRetryAfterBlocksOnlyThatTenant: a 429 with Retry-After: 20 refuses
// tenant A's reads at once (no request reaches Graph) until it has passed,
// while tenant B reads on without delay.
func TestRetryAfterBlocksOnlyThatTenant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sent atomic.Int32
		throttleA := true
		c := New(Options{HTTPClient: &http.Client{Transport: roundTripper(func(r *http.Request) *http.Response {
			sent.Add(1)
			if r.Header.Get("Authorization") == "Bearer a" && throttleA {
				throttleA = false
				return reply(429, `{}`, "Retry-After", "20")
			}
			return reply(200, alexBusy)
		})}})
		ctx := t.Context()
		_, err := c.Me(ctx, tenantA, "a")
		var te *ThrottledError
		if !errors.As(err, &te) || time.Until(te.Until) != 20*time.Second {
			t.Fatalf("first read: %v", err)
		}
		before := sent.Load()
		if _, err := c.Me(ctx, tenantA, "a"); !errors.Is(err, ErrThrottled) {
			t.Fatalf("read inside Retry-After: %v", err)
		}
		if sent.Load() != before {
			t.Error("a request reached Graph inside the tenant's Retry-After")
		}
		began := time.Now()
		if _, err := c.Me(ctx, tenantB, "b"); err != nil {
			t.Fatalf("tenant B: %v", err)
		}
		if time.Since(began) != 0 {
			t.Error("tenant B waited for tenant A's Retry-After")
		}
		time.Sleep(20 * time.Second)
		if _, err := c.Me(ctx, tenantA, "a"); err != nil {
			t.Fatalf("after Retry-After: %v", err)
		}
	})
}

func TestConcurrencyPerTenant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inFlight, peak atomic.Int32
		c := New(Options{Concurrency: 3, HTTPClient: &http.Client{Transport: roundTripper(func(*http.Request) *http.Response {
			n := inFlight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Second)
			inFlight.Add(-1)
			return reply(200, alexBusy)
		})}})
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() { _, _ = c.Me(t.Context(), tenantA, "tok") })
		}
		wg.Wait()
		if peak.Load() != 3 {
			t.Errorf("peak in flight %d, want 3", peak.Load())
		}
	})
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              10 * time.Second,
		"7":                             7 * time.Second,
		"0":                             time.Second,
		"99999":                         5 * time.Minute,
		"Thu, 03 Dec 2026 10:00:30 GMT": 30 * time.Second,
		"soon":                          10 * time.Second,
	}
	for h, want := range cases {
		if got := RetryAfter(h, now); got != want {
			t.Errorf("RetryAfter(%q) = %v, want %v", h, got, want)
		}
	}
}

// TestAgainstFakeGraph reads through the fake over TLS: single and batch,
// the sequence grows with each change, and throttling is honoured.
func TestAgainstFakeGraph(t *testing.T) {
	g := graphtest.New(graphtest.Options{})
	defer g.Close()
	c := New(Options{Endpoint: g.URL(), HTTPClient: g.Client()})
	ctx := t.Context()
	g.SetPresence(alex, graphtest.Presence{Availability: "Available", Activity: "Available"})
	first, err := c.Me(ctx, tenantA, string(alex)+"."+tenantA)
	if err != nil {
		t.Fatal(err)
	}
	g.SetPresence(alex, graphtest.Presence{Availability: "Busy", Activity: "InAMeeting"})
	second, err := c.Me(ctx, tenantA, string(alex)+"."+tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if presence.Compare(first, second) <= 0 || second.Activity != presence.ActivityInAMeeting {
		t.Errorf("second read %+v is not newer than %+v", second, first)
	}
	g.SetPresence(sam, graphtest.Presence{Availability: "Away", Activity: "Away"})
	batch, err := c.ByUserIDs(ctx, tenantA, string(alex)+"."+tenantA, []presence.UserID{alex, sam})
	if err != nil || len(batch) != 2 || batch[1].Availability != presence.AvailabilityAway {
		t.Fatalf("batch: %+v %v", batch, err)
	}
	g.Throttle(tenantA, 1, 429, 2*time.Second)
	if _, err := c.Me(ctx, tenantA, string(alex)+"."+tenantA); !errors.Is(err, ErrThrottled) {
		t.Fatalf("throttled read: %v", err)
	}
	if _, err := c.Me(ctx, tenantA, "garbage"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("read inside Retry-After: %v", err)
	}
	if _, err := c.Me(ctx, tenantB, "garbage"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	if n := g.Requests(tenantA); n != 4 {
		t.Errorf("tenant A made %d requests, want 4", n)
	}
}

func TestBatchLimit(t *testing.T) {
	c := New(Options{HTTPClient: &http.Client{Transport: roundTripper(func(*http.Request) *http.Response { return reply(200, `{"value":[]}`) })}})
	if _, err := c.ByUserIDs(context.Background(), tenantA, "t", make([]presence.UserID, MaxBatch+1)); err == nil {
		t.Error("651 ids accepted")
	}
}

// FuzzPresenceReply: no Graph reply makes the parser panic, and whatever it
// accepts encodes as a valid wire message.
func FuzzPresenceReply(f *testing.F) {
	f.Add([]byte(alexBusy))
	f.Add([]byte(`{"id":"6f1c2a3b-1111-2222-3333-444455556666","availability":"AVAILABLE"}`))
	f.Add([]byte(`{"value":[{"id":"x"}]}`))
	f.Add([]byte(`{"statusMessage":{"message":null},"outOfOfficeSettings":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var w wirePresence
		if json.Unmarshal(data, &w) != nil {
			return
		}
		u, err := w.update(tenantA)
		if err != nil {
			return
		}
		u.ObservedAt = time.Unix(1, 0)
		if _, err := presence.Encode(u); err != nil {
			t.Fatalf("accepted reply does not encode: %v", err)
		}
		_ = RetryAfter(string(data), time.Unix(0, 0))
	})
}
