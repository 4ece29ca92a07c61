package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// engine is a hand-written fake of the poller's engine.
type engine struct {
	mu       sync.Mutex
	cycles   int
	enqueued []time.Time
	worked   []poller.WorkItem
	workErr  error
	// workErrs are the errors of the first Work calls, in order.
	workErrs []error
}

func (e *engine) Cycle(context.Context) (poller.Summary, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cycles++
	return poller.Summary{People: 3, Read: 3, Changes: 1, Published: 1}, nil
}

func (e *engine) Enqueue(_ context.Context, _ poller.WorkQueue, start time.Time) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.enqueued = append(e.enqueued, start)
	return 2, nil
}

func (e *engine) Work(_ context.Context, it poller.WorkItem) (poller.Summary, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.worked = append(e.worked, it)
	if len(e.workErrs) > 0 {
		err := e.workErrs[0]
		e.workErrs = e.workErrs[1:]
		return poller.Summary{}, err
	}
	return poller.Summary{People: len(it.UserIDs), Read: len(it.UserIDs)}, e.workErr
}

type noQueue struct{}

func (noQueue) Enqueue(context.Context, []poller.QueuedItem) error { return nil }

var now = time.Date(2026, 12, 3, 10, 0, 30, 12_000_000, time.UTC)

// invoke plays the Functions host: POST /<function> with a recorded
// payload; it checks the answer's shape and returns its status and body.
func invoke(t *testing.T, h http.Handler, function, file string) (int, Response) {
	t.Helper()
	payload, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/"+function, bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	var shape map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &shape); err != nil {
		t.Fatalf("%s: answer is not JSON: %q", file, rec.Body.String())
	}
	keys := make([]string, 0, len(shape))
	for k := range shape {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"Logs", "Outputs", "ReturnValue"}) || string(shape["Outputs"]) != "{}" || !strings.HasPrefix(string(shape["Logs"]), "[") {
		t.Errorf("%s: answer %s, want {Outputs: {}, Logs: [...], ReturnValue}", file, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: content type %q", file, ct)
	}
	var resp Response
	_ = json.Unmarshal(rec.Body.Bytes(), &resp)
	return rec.Code, resp
}

// TestTimerRunsTheCycle: every recorded timer shape (object, JSON string,
// past due with a null schedule status, times that parse as nothing) runs
// one cycle and answers 200 with its summary.
func TestTimerRunsTheCycle(t *testing.T) {
	for _, file := range []string{"timer.json", "timer-string.json", "timer-pastdue.json", "timer-odd-times.json"} {
		t.Run(file, func(t *testing.T) {
			e := &engine{}
			h := New(Options{Engine: e, Now: func() time.Time { return now }})
			code, resp := invoke(t, h, TimerFunction, file)
			if code != http.StatusOK || e.cycles != 1 || len(e.enqueued) != 0 {
				t.Fatalf("HTTP %d, %d cycles, %d enqueues", code, e.cycles, len(e.enqueued))
			}
			s, _ := json.Marshal(resp.ReturnValue)
			if !strings.Contains(string(s), `"published":1`) {
				t.Errorf("return value %s is not the cycle's summary", s)
			}
			pastDue := slices.Contains(resp.Logs, "timer past due")
			if pastDue != (file == "timer-pastdue.json") {
				t.Errorf("past due logged %v: %q", pastDue, resp.Logs)
			}
		})
	}
}

// TestTimerWithWorkQueueOnlyEnqueues: with a work queue the timer splits
// the cycle (the cycle start is the invocation's time) and reads nobody.
func TestTimerWithWorkQueueOnlyEnqueues(t *testing.T) {
	e := &engine{}
	h := New(Options{Engine: e, Queue: noQueue{}, Now: func() time.Time { return now }})
	code, resp := invoke(t, h, TimerFunction, "timer.json")
	if code != http.StatusOK || e.cycles != 0 || len(e.enqueued) != 1 || !e.enqueued[0].Equal(now) {
		t.Fatalf("HTTP %d, %d cycles, enqueued %v", code, e.cycles, e.enqueued)
	}
	if rv, _ := json.Marshal(resp.ReturnValue); string(rv) != `{"workItems":2}` {
		t.Errorf("return value %s", rv)
	}
}

// TestWorkItemShapes: the body as base64 (dataType binary), as a JSON
// string, encoded twice, and as an object all give the same work item.
func TestWorkItemShapes(t *testing.T) {
	want := poller.WorkItem{TenantID: "72f988bf-0000-0000-0000-000000000000",
		UserIDs: []presence.UserID{"6f1c2a3b-1111-2222-3333-444455556666", "0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff"}}
	for _, file := range []string{"work-binary.json", "work-double-encoded.json", "work-string.json", "work-object.json"} {
		t.Run(file, func(t *testing.T) {
			e := &engine{}
			code, _ := invoke(t, New(Options{Engine: e}), WorkFunction, file)
			if code != http.StatusOK || len(e.worked) != 1 {
				t.Fatalf("HTTP %d, %d items worked", code, len(e.worked))
			}
			got := e.worked[0]
			if got.TenantID != want.TenantID || !slices.Equal(got.UserIDs, want.UserIDs) {
				t.Errorf("item %+v, want %+v", got, want)
			}
		})
	}
}

// TestFailedWorkItemAnswersNon2xx: a work item whose reads or publishes
// failed answers 500 (the host abandons the message, Service Bus delivers
// it again), with the answer's shape kept and the error in Logs.
func TestFailedWorkItemAnswersNon2xx(t *testing.T) {
	e := &engine{workErr: errors.New("poller: work item of tenant t: 1 of 2 people not done: service bus unreachable")}
	code, resp := invoke(t, New(Options{Engine: e}), WorkFunction, "work-binary.json")
	if code < 300 {
		t.Fatalf("a failed item answered HTTP %d", code)
	}
	if !strings.Contains(strings.Join(resp.Logs, "\n"), "service bus unreachable") {
		t.Errorf("logs %q", resp.Logs)
	}
}

// TestThrottledItemWaitsOutRetryAfter: Service Bus would deliver an
// abandoned item again at once, so a short Retry-After is waited out and
// the item done again within the invocation; a long one fails the item.
func TestThrottledItemWaitsOutRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		throttled := func(d time.Duration) error {
			return fmt.Errorf("poller: work item: %w", errors.Join(errors.New("other"), &graph.ThrottledError{TenantID: "t", Status: 429, Until: time.Now().Add(d)}))
		}
		e := &engine{workErrs: []error{throttled(10 * time.Second)}}
		began := time.Now()
		code, _ := invoke(t, New(Options{Engine: e}), WorkFunction, "work-binary.json")
		if code != http.StatusOK || len(e.worked) != 2 || time.Since(began) != 10*time.Second {
			t.Errorf("a 10 s Retry-After: HTTP %d, %d tries, after %v", code, len(e.worked), time.Since(began))
		}
		e = &engine{workErrs: []error{throttled(2 * time.Minute)}}
		code, _ = invoke(t, New(Options{Engine: e}), WorkFunction, "work-binary.json")
		if code != http.StatusInternalServerError || len(e.worked) != 1 {
			t.Errorf("a 2 min Retry-After: HTTP %d, %d tries", code, len(e.worked))
		}
	})
}

// TestNotAWorkItemIsDropped: a body that is no work item is logged and
// answered 200: delivering it again cannot help.
func TestNotAWorkItemIsDropped(t *testing.T) {
	e := &engine{}
	code, resp := invoke(t, New(Options{Engine: e}), WorkFunction, "work-not-an-item.json")
	if code != http.StatusOK || len(e.worked) != 0 || !strings.HasPrefix(strings.Join(resp.Logs, ""), "dropped") {
		t.Fatalf("HTTP %d, %d worked, logs %q", code, len(e.worked), resp.Logs)
	}
}

// TestReadinessAndProxiedHTTP: the host's ping on / answers 200; any other
// request is a proxied HTTP function and goes to serve's handler as it
// came (path and query kept).
func TestReadinessAndProxiedHTTP(t *testing.T) {
	var got []string
	h := New(Options{Engine: &engine{}, HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		w.WriteHeader(http.StatusTeapot)
	})})
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(m, "/", nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s /: HTTP %d", m, rec.Code)
		}
	}
	for _, target := range []string{"/auth/start?login_hint=a%40b.c", "/api/presence/6f1c2a3b-1111-2222-3333-444455556666?code=fnkey", "/api/refresh", "/notifications?validationToken=x"} {
		rec := httptest.NewRecorder()
		method := http.MethodGet
		if !strings.HasPrefix(target, "/auth") && !strings.HasPrefix(target, "/api/presence") {
			method = http.MethodPost
		}
		h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		if rec.Code != http.StatusTeapot {
			t.Errorf("%s: HTTP %d, not proxied", target, rec.Code)
		}
	}
	if len(got) != 4 || got[0] != "GET /auth/start?login_hint=a%40b.c" {
		t.Errorf("proxied %q", got)
	}
}

func FuzzMessageBody(f *testing.F) {
	for _, file := range []string{"work-binary.json", "work-double-encoded.json", "work-string.json", "work-object.json", "work-not-an-item.json"} {
		data, _ := os.ReadFile(filepath.Join("testdata", file))
		var inv Invocation
		_ = json.Unmarshal(data, &inv)
		f.Add([]byte(inv.Data["item"]))
	}
	f.Add([]byte(`"\"\\\"x\\\"\""`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		body, err := MessageBody(raw)
		if err == nil && len(body) == 0 {
			t.Fatal("an empty body without an error")
		}
		_, _ = parseTimer(raw)
	})
}
