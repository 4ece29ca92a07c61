package sbsource

import (
	"context"
	"errors"
	"fmt"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

func TestDeadLetterReason(t *testing.T) {
	long := strings.Repeat("x", 5000)
	cases := []struct {
		name       string
		err        error
		wantReason string
		wantDesc   string
	}{
		{"field", &presence.DecodeError{Reason: presence.ReasonInvalidField, Field: "observedAt", Detail: `"x" is not an RFC 3339 time`}, "InvalidField", `observedAt: "x" is not an RFC 3339 time`},
		{"no field", &presence.DecodeError{Reason: presence.ReasonTooLarge, Detail: "body is 70000 bytes"}, "TooLarge", "body is 70000 bytes"},
		{"wrapped", fmt.Errorf("decode: %w", &presence.DecodeError{Reason: presence.ReasonUserMismatch, Detail: "other user"}), "UserMismatch", "other user"},
		{"other error", errors.New("boom"), "InvalidJSON", "boom"},
		{"long detail is cut", &presence.DecodeError{Reason: presence.ReasonInvalidJSON, Detail: long}, "InvalidJSON", long[:maxDescription]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reason, desc := deadLetterReason(c.err)
			if reason != c.wantReason || desc != c.wantDesc {
				t.Errorf("got (%q, %q), want (%q, %q)", reason, desc, c.wantReason, c.wantDesc)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	var got []time.Duration
	for attempt := 1; attempt <= 7; attempt++ {
		got = append(got, backoff(time.Second, 30*time.Second, attempt))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backoff (-want +got):\n%s", diff)
	}
}

func TestHealthLogsEachOutageOnceAndReportsOneComponent(t *testing.T) {
	logs := &safebuf.Buffer{}
	status := &statusLog{}
	h := newHealth(slog.New(slog.NewTextHandler(logs, nil)), status)
	h.start([]string{"a", "b", "c"})
	for _, e := range []string{"a", "b", "c"} {
		h.ok(e)
	}
	connErr := errors.New("connection refused")
	// A connection outage seen by every receiver, retried many times.
	for range 5 {
		for _, e := range []string{"a", "b", "c"} {
			h.fail(e, servicebus.FailConnection, connErr)
		}
	}
	h.ok("a")
	h.ok("b")
	h.ok("c")
	// A configuration problem on one entity, retried.
	h.fail("b", servicebus.FailNotFound, errors.New("not found"))
	h.fail("b", servicebus.FailNotFound, errors.New("not found"))

	if n := strings.Count(logs.String(), "service bus connection lost"); n != 1 {
		t.Errorf("connection outage logged %d times, want 1", n)
	}
	if n := strings.Count(logs.String(), "service bus connection restored"); n != 1 {
		t.Errorf("recovery logged %d times, want 1", n)
	}
	if n := strings.Count(logs.String(), "service bus entity not found"); n != 1 {
		t.Errorf("missing entity logged %d times, want 1", n)
	}
	want := []statusCall{
		{SourceName, false, "connecting"},
		{SourceName, true, ""},
		{SourceName, false, "a: connection lost"},
		{SourceName, false, "a: connection lost (and 1 more)"},
		{SourceName, false, "a: connection lost (and 2 more)"},
		{SourceName, false, "b: connection lost (and 1 more)"},
		{SourceName, false, "c: connection lost"},
		{SourceName, true, ""},
		{SourceName, false, "b: entity not found"},
	}
	if diff := cmp.Diff(want, status.all()); diff != "" {
		t.Errorf("status calls (-want +got):\n%s", diff)
	}
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	good := "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0LWtleQ==;UseDevelopmentEmulator=true"
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no subscription or queue", Options{Users: users(1), Config: config.ServiceBus{ConnectionString: config.Secret(good)}}, "neither"},
		{"no users", Options{Config: config.ServiceBus{ConnectionString: config.Secret(good), Subscription: "home"}}, "no users"},
		{"bad connection string", Options{Users: users(1), Config: config.ServiceBus{ConnectionString: "Endpoint=nope;SharedAccessKey=c2VjcmV0LWtleQ==", Subscription: "home"}}, "connection string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), "c2VjcmV0LWtleQ") {
				t.Errorf("the key appears in the error: %v", err)
			}
		})
	}
}

func TestNewBuildsOneReceiverPerUserOrOneForTheQueue(t *testing.T) {
	cs := config.Secret("Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=a2V5;UseDevelopmentEmulator=true")
	us := users(2)
	us[1].Topic = "custom"
	cases := []struct {
		name string
		cfg  config.ServiceBus
		want []string
	}{
		{"subscriptions", config.ServiceBus{ConnectionString: cs, Subscription: "home"}, []string{string(us[0].ID) + "/Subscriptions/home", "custom/Subscriptions/home"}},
		{"queue", config.ServiceBus{ConnectionString: cs, Queue: "all"}, []string{"all"}},
		{"forwarding subscription", config.ServiceBus{ConnectionString: cs, Queue: "all/Subscriptions/bridge"}, []string{"all/Subscriptions/bridge"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(Options{Users: us, Config: c.cfg})
			if err != nil {
				t.Fatal(err)
			}
			defer s.closeClients(t.Context())
			if diff := cmp.Diff(c.want, s.Entities()); diff != "" {
				t.Errorf("entities (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStopContextEndsAfterItsParent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		stop, release := stopContext(ctx, 3*time.Second)
		defer release()
		time.Sleep(time.Hour)
		if stop.Err() != nil {
			t.Fatal("ended before its parent did")
		}
		cancel()
		time.Sleep(2 * time.Second)
		if stop.Err() != nil {
			t.Fatal("ended before the grace period")
		}
		time.Sleep(1500 * time.Millisecond)
		if stop.Err() == nil {
			t.Fatal("still alive after the grace period")
		}
	})
}
