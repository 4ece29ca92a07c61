package addon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// runNotifier starts n.Run and stops it at the end of the test.
func runNotifier(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// next waits for the fake Supervisor's next notification call.
func (f *fakeSupervisor) next(t *testing.T) call {
	t.Helper()
	select {
	case c := <-f.notify:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no notification call within 5s")
		return call{}
	}
}

// nextIs asserts the next notification call (tests end with a probe status so
// that an unexpected extra call shows up as the wrong next call).
func (f *fakeSupervisor) nextIs(t *testing.T, want call) {
	t.Helper()
	got := f.next(t)
	if diff := cmp.Diff(want.Path, got.Path); diff != "" {
		t.Fatalf("call path (-want +got):\n%s", diff)
	}
	if want.Body["notification_id"] != got.Body["notification_id"] {
		t.Fatalf("notification_id = %q, want %q", got.Body["notification_id"], want.Body["notification_id"])
	}
	for k, v := range want.Body {
		if k != "notification_id" && !strings.Contains(got.Body[k], v) {
			t.Errorf("%s = %q, want it to contain %q", k, got.Body[k], v)
		}
	}
}

const (
	createPath  = "/core/api/services/persistent_notification/create"
	dismissPath = "/core/api/services/persistent_notification/dismiss"
)

func TestNotifierCreatesOnceAndDismissesOnce(t *testing.T) {
	sup := newFakeSupervisor(t, map[string]answer{})
	n := NewNotifier(NotifierOptions{SupervisorURL: sup.srv.URL, Token: testToken})
	runNotifier(t, n)

	// The key is rejected, repeatedly, with varying details: one create.
	n.SetStatus("hue", false, "unauthorized user")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{
		"notification_id": "presence_bridge_hue",
		"title":           "Philips Hue",
		"message":         "unauthorized user",
	}})
	n.SetStatus("hue", false, "unauthorized user")
	n.SetStatus("hue", false, "unauthorized user (retry 3)")
	// Fixed: one dismiss, however often it is reported.
	n.SetStatus("hue", true, "")
	n.SetStatus("hue", true, "")
	sup.nextIs(t, call{Path: dismissPath, Body: map[string]string{"notification_id": "presence_bridge_hue"}})
	// A later problem is a new problem: created again.
	n.SetStatus("service_bus", false, "credentials refused")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{
		"notification_id": "presence_bridge_service_bus",
		"title":           "Azure Service Bus",
		"message":         "connection string",
	}})
	n.SetStatus("hue", false, "unauthorized user")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{"notification_id": "presence_bridge_hue"}})
	n.SetStatus("hue", true, "")
	n.SetStatus("service_bus", true, "")
	sup.nextIs(t, call{Path: dismissPath, Body: map[string]string{"notification_id": "presence_bridge_hue"}})
	sup.nextIs(t, call{Path: dismissPath, Body: map[string]string{"notification_id": "presence_bridge_service_bus"}})

	// Nothing else was sent: the repeated reports above made no calls.
	n.SetStatus("probe", false, "last")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{"notification_id": "presence_bridge_probe"}})
}

func TestNotifierFirstHealthyDismissesLeftovers(t *testing.T) {
	sup := newFakeSupervisor(t, map[string]answer{})
	n := NewNotifier(NotifierOptions{SupervisorURL: sup.srv.URL, Token: testToken})
	runNotifier(t, n)
	// A notification from a previous run may still show: the first healthy
	// report dismisses it, later ones do not.
	n.SetStatus("hue", true, "")
	sup.nextIs(t, call{Path: dismissPath, Body: map[string]string{"notification_id": "presence_bridge_hue"}})
	n.SetStatus("hue", true, "")
	n.SetStatus("probe", false, "x")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{"notification_id": "presence_bridge_probe"}})
}

func TestNotifierOnlyUserFixable(t *testing.T) {
	sup := newFakeSupervisor(t, map[string]answer{})
	n := NewNotifier(NotifierOptions{
		SupervisorURL: sup.srv.URL, Token: testToken,
		UserFixable: func(component, detail string) bool { return strings.Contains(detail, "unauthorized") },
	})
	runNotifier(t, n)
	n.SetStatus("hue", false, "bridge unreachable") // an outage: no notification
	n.SetStatus("hue", false, "unauthorized user")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{"notification_id": "presence_bridge_hue", "message": "unauthorized user"}})
	// The problem turns into an outage: the notification stays.
	n.SetStatus("hue", false, "bridge unreachable")
	n.SetStatus("hue", true, "")
	sup.nextIs(t, call{Path: dismissPath, Body: map[string]string{"notification_id": "presence_bridge_hue"}})
}

// roundTripper is an in-memory transport (usable inside a synctest bubble).
type roundTripper struct {
	mu    sync.Mutex
	fail  bool
	calls []string
}

func (r *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, req.URL.Path)
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	if r.fail {
		return nil, errors.New("connection refused")
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader([]byte("[]"))), Header: http.Header{}, Request: req}, nil
}

func (r *roundTripper) set(fail bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = fail
}

func (r *roundTripper) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func TestNotifierRetriesWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &roundTripper{fail: true}
		n := NewNotifier(NotifierOptions{
			SupervisorURL: "http://supervisor", Token: testToken,
			HTTPClient: &http.Client{Transport: rt},
			RetryMin:   time.Second, RetryMax: 4 * time.Second,
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()

		n.SetStatus("hue", false, "unauthorized user")
		synctest.Wait()
		if got := rt.count(); got != 1 {
			t.Fatalf("calls after the report = %d, want 1", got)
		}
		// Back-off 1s, 2s, 4s, 4s: attempts at t=1, 3, 7, 11.
		for _, step := range []struct {
			advance time.Duration
			want    int
		}{{999 * time.Millisecond, 1}, {time.Millisecond, 2}, {2 * time.Second, 3}, {4 * time.Second, 4}, {4 * time.Second, 5}} {
			time.Sleep(step.advance)
			synctest.Wait()
			if got := rt.count(); got != step.want {
				t.Fatalf("calls = %d, want %d", got, step.want)
			}
		}
		// Home Assistant is back: the next attempt delivers, then silence.
		rt.set(false)
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if got := rt.count(); got != 6 {
			t.Fatalf("calls = %d, want 6", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := rt.count(); got != 6 {
			t.Fatalf("calls after delivery = %d, want 6", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestNotifierShow: a caller-worded notification is created with its
// text, updated when the text changes (not when it is repeated), dismissed
// on an empty text, and its first empty text dismisses a leftover.
func TestNotifierShow(t *testing.T) {
	sup := newFakeSupervisor(t, map[string]answer{})
	n := NewNotifier(NotifierOptions{SupervisorURL: sup.srv.URL, Token: testToken})
	runNotifier(t, n)
	n.Show("graph_sign_in", "Presence Bridge: Microsoft sign-in", "")
	sup.nextIs(t, call{Path: dismissPath, Body: map[string]string{"notification_id": "presence_bridge_graph_sign_in"}})
	n.Show("graph_sign_in", "Presence Bridge: Microsoft sign-in", "enter the code **ABCD**")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{
		"notification_id": "presence_bridge_graph_sign_in", "title": "Microsoft sign-in", "message": "**ABCD**",
	}})
	n.Show("graph_sign_in", "Presence Bridge: Microsoft sign-in", "enter the code **ABCD**")
	n.Show("graph_sign_in", "Presence Bridge: Microsoft sign-in", "enter the code **WXYZ**")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{"notification_id": "presence_bridge_graph_sign_in", "message": "**WXYZ**"}})
	n.Show("graph_sign_in", "Presence Bridge: Microsoft sign-in", "")
	sup.nextIs(t, call{Path: dismissPath, Body: map[string]string{"notification_id": "presence_bridge_graph_sign_in"}})
	n.Show("graph_sign_in", "Presence Bridge: Microsoft sign-in", "")
	n.SetStatus("probe", false, "x")
	sup.nextIs(t, call{Path: createPath, Body: map[string]string{"notification_id": "presence_bridge_probe"}})
}
