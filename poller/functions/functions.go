// Package functions is presence-poller behind the Azure Functions custom
// handler protocol (SPEC §9, `presence-poller functions`): the Functions
// host starts the binary, pings it on / until it answers, then invokes the
// non-HTTP functions as POST /<function name> with a JSON payload
//
//	{"Data": {"<binding>": ...}, "Metadata": {"sys": {...}, ...}}
//
// and expects {"Outputs": {...}, "Logs": [...], "ReturnValue": ...} with
// 2xx for success; any other status fails the invocation (for a Service
// Bus trigger the host then abandons the message and Service Bus delivers
// it again). HTTP functions are proxied (host.json
// enableProxyingHttpRequest): the host forwards the original request, so
// the same handler as serve's answers them.
//
// The functions (deploy/functions):
//
//   - presence-refresh, the timer (0/30 * * * * *): with a work queue it only
//     splits the cycle into work items and enqueues them; without one it
//     runs the whole cycle itself (a household's deployment). A past-due
//     invocation (the app was asleep or the previous cycle ran long) runs
//     like any other: a cycle reads the presence of now.
//   - presence-work, the Service Bus trigger on the work queue (sessions on,
//     binding "item", dataType binary): one work item; any failure answers
//     500 so that the item is delivered again whole. Service Bus delivers
//     an abandoned message again at once, so a Graph read throttled with a
//     Retry-After of up to MaxThrottleWait is waited out and the item done
//     once more within the invocation (ten quick failures would
//     dead-letter it). An item that is not one (redelivery cannot help) is
//     answered 200 and logged as an error.
//
// Payloads are read leniently, because they vary with the host's version:
// the timer's data may be an object or a JSON string holding one, its
// ScheduleStatus may be null or hold unparsable times (only IsPastDue is
// read); a message body may be base64 (dataType binary, what
// function.json asks for), a JSON string holding the JSON (encoded twice),
// or the JSON object itself.
package functions

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/poller"
)

// Function and binding names, as deploy/functions declares them.
const (
	TimerFunction = "presence-refresh"
	WorkFunction  = "presence-work"
	WorkBinding   = "item"
)

// MaxThrottleWait is the longest Retry-After a work item waits out before
// trying again within its invocation.
const MaxThrottleWait = 30 * time.Second

// maxPayload bounds an invocation payload (a work item of 650 ids is
// about 26 KB, base64 a third more).
const maxPayload = 1 << 20

// Engine is what the functions run (poller.Engine is one).
type Engine interface {
	Cycle(ctx context.Context) (poller.Summary, error)
	Enqueue(ctx context.Context, q poller.WorkQueue, cycleStart time.Time) (int, error)
	Work(ctx context.Context, it poller.WorkItem) (poller.Summary, error)
}

// Options configure a Handler.
type Options struct {
	Engine Engine
	// Queue, when set (service_bus.work_queue), makes the timer enqueue
	// work items instead of running the cycle.
	Queue poller.WorkQueue
	// HTTP answers the proxied HTTP functions (poller/server's handler).
	HTTP   http.Handler
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Handler is the custom handler's HTTP handler.
type Handler struct {
	o   Options
	log *slog.Logger
}

// New makes a Handler.
func New(o Options) *Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTP == nil {
		o.HTTP = http.NotFoundHandler()
	}
	return &Handler{o: o, log: o.Logger}
}

// ServeHTTP routes the host's requests: the readiness ping, the two
// non-HTTP functions, and everything else to the proxied HTTP handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/":
		// The host's readiness ping: any answer means ready.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "presence-poller ready\n")
	case r.Method == http.MethodPost && r.URL.Path == "/"+TimerFunction:
		h.timer(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/"+WorkFunction:
		h.work(w, r)
	default:
		h.o.HTTP.ServeHTTP(w, r)
	}
}

// Invocation is the host's request payload.
type Invocation struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// Response is the handler's answer to an invocation.
type Response struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

func readInvocation(r *http.Request) (Invocation, error) {
	var inv Invocation
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		return inv, fmt.Errorf("read payload: %w", err)
	}
	if len(body) > maxPayload {
		return inv, fmt.Errorf("payload over %d bytes", maxPayload)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return inv, nil // a timer needs nothing of it
	}
	if err := json.Unmarshal(body, &inv); err != nil {
		return inv, fmt.Errorf("payload is not the host's JSON: %w", err)
	}
	return inv, nil
}

// binding finds a binding's data: by its name, or without regard to case,
// or the only one there is.
func binding(data map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	if v, ok := lookup(data, name); ok {
		return v, true
	}
	if len(data) == 1 {
		for _, v := range data {
			return v, true
		}
	}
	return nil, false
}

// lookup finds a key, or the key without regard to case.
func lookup(m map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	if v, ok := m[key]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// timerInfo is what is read of the timer's data.
type timerInfo struct {
	IsPastDue      bool `json:"IsPastDue"`
	ScheduleStatus *struct {
		Last string `json:"Last"`
		Next string `json:"Next"`
	} `json:"ScheduleStatus"`
}

// parseTimer reads the timer's data, an object or a JSON string holding
// one; anything unreadable is the zero info (the cycle runs regardless).
func parseTimer(raw json.RawMessage) (timerInfo, error) {
	var info timerInfo
	if len(raw) == 0 || string(raw) == "null" {
		return info, nil
	}
	obj, err := unwrapJSON(raw)
	if err != nil {
		return info, err
	}
	// Lenient: a field of an unexpected type is skipped, not fatal.
	var loose map[string]json.RawMessage
	if err := json.Unmarshal(obj, &loose); err != nil {
		return info, err
	}
	for k, v := range loose {
		switch strings.ToLower(k) {
		case "ispastdue":
			_ = json.Unmarshal(v, &info.IsPastDue)
		case "schedulestatus":
			_ = json.Unmarshal(v, &info.ScheduleStatus)
		}
	}
	return info, nil
}

func (h *Handler) timer(w http.ResponseWriter, r *http.Request) {
	started := h.o.Now()
	inv, err := readInvocation(r)
	if err != nil {
		h.log.Warn("timer payload unreadable; running the cycle anyway", "err", err)
	}
	raw, _ := binding(inv.Data, "timer")
	info, err := parseTimer(raw)
	if err != nil {
		h.log.Warn("timer data unreadable; running the cycle anyway", "err", err)
	}
	var logs []string
	if info.IsPastDue {
		h.log.Info("timer is past due (the app slept or the last cycle ran long); running the cycle now")
		logs = append(logs, "timer past due")
	}
	ctx := r.Context()
	if h.o.Queue != nil {
		n, err := h.o.Engine.Enqueue(ctx, h.o.Queue, started)
		if err != nil {
			h.log.Error("work items not enqueued", "err", err)
			answer(w, http.StatusInternalServerError, append(logs, "work items not enqueued: "+err.Error()), nil)
			return
		}
		answer(w, http.StatusOK, append(logs, fmt.Sprintf("enqueued %d work items", n)), map[string]any{"workItems": n})
		return
	}
	s, err := h.o.Engine.Cycle(ctx)
	logs = append(logs, fmt.Sprintf("refresh cycle: %d people, %d read, %d changes, %d published, %d failed", s.People, s.Read, s.Changes, s.Published, s.Failed))
	if err != nil {
		answer(w, http.StatusInternalServerError, append(logs, "cycle cut short: "+err.Error()), s)
		return
	}
	answer(w, http.StatusOK, logs, s)
}

func (h *Handler) work(w http.ResponseWriter, r *http.Request) {
	inv, err := readInvocation(r)
	if err != nil {
		// The host sent something this handler cannot read: a failure, so
		// that the message comes again (and dead-letters if it never reads).
		h.log.Error("work item payload unreadable", "err", err)
		answer(w, http.StatusBadRequest, []string{"payload unreadable: " + err.Error()}, nil)
		return
	}
	log := h.log.With("message_id", metaString(inv.Metadata, "MessageId"), "session", metaString(inv.Metadata, "SessionId"),
		"delivery", metaString(inv.Metadata, "DeliveryCount"))
	raw, ok := binding(inv.Data, WorkBinding)
	if !ok {
		log.Error("work item payload has no message body", "bindings", len(inv.Data))
		answer(w, http.StatusBadRequest, []string{"no " + WorkBinding + " in Data"}, nil)
		return
	}
	body, err := MessageBody(raw)
	var it poller.WorkItem
	if err == nil {
		it, err = poller.ParseWorkItem(body)
	}
	if err != nil {
		// Delivering it again cannot make it readable.
		log.Error("not a work item; dropped", "err", err)
		answer(w, http.StatusOK, []string{"dropped: " + err.Error()}, map[string]any{"dropped": true})
		return
	}
	s, err := h.o.Engine.Work(r.Context(), it)
	var throttled *graph.ThrottledError
	if errors.As(err, &throttled) {
		if wait := throttled.Until.Sub(h.o.Now()); wait <= MaxThrottleWait {
			log.Info("graph throttled the tenant; waiting out its Retry-After before trying the item again", "wait", wait.Round(time.Millisecond))
			t := time.NewTimer(max(wait, 0))
			select {
			case <-t.C:
				s, err = h.o.Engine.Work(r.Context(), it)
			case <-r.Context().Done():
				t.Stop()
			}
		}
	}
	logs := []string{fmt.Sprintf("work item of tenant %s: %d people, %d read, %d changes, %d published, %d failed",
		it.TenantID, len(it.UserIDs), s.Read, s.Changes, s.Published, s.Failed)}
	if err != nil {
		log.Warn("work item failed; it will be delivered again", "err", err)
		answer(w, http.StatusInternalServerError, append(logs, "failed: "+err.Error()), s)
		return
	}
	answer(w, http.StatusOK, logs, s)
}

// ErrNoBody: a Service Bus binding's data holds no message body.
var ErrNoBody = errors.New("functions: no message body")

// MessageBody reads a Service Bus message body out of a binding's data:
// base64 text (dataType binary), a JSON string holding the JSON (the host
// encodes string bodies as a JSON string inside the JSON, sometimes twice
// over), or the JSON itself.
func MessageBody(raw json.RawMessage) ([]byte, error) {
	v := bytes.TrimSpace(raw)
	for range 4 {
		switch {
		case len(v) == 0 || string(v) == "null":
			return nil, ErrNoBody
		case v[0] == '{' || v[0] == '[':
			return v, nil
		case v[0] == '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("functions: message body: %w", err)
			}
			v = bytes.TrimSpace([]byte(s))
		default:
			b, err := decodeBase64(string(v))
			if err != nil {
				return nil, fmt.Errorf("functions: message body is neither JSON nor base64")
			}
			v = bytes.TrimSpace(b)
		}
	}
	return nil, errors.New("functions: message body is encoded too many times over")
}

func decodeBase64(s string) ([]byte, error) {
	var last error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		last = err
	}
	return nil, last
}

// unwrapJSON returns the object a value holds: the value itself, or the
// text of a JSON string.
func unwrapJSON(raw json.RawMessage) (json.RawMessage, error) {
	v := bytes.TrimSpace(raw)
	for range 3 {
		if len(v) > 0 && v[0] == '"' {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, err
			}
			v = bytes.TrimSpace([]byte(s))
			continue
		}
		return v, nil
	}
	return v, nil
}

// metaString renders a metadata value for a log line (a number, a string,
// or a string inside a string).
func metaString(meta map[string]json.RawMessage, key string) string {
	raw, ok := lookup(meta, key)
	if !ok {
		return ""
	}
	v, err := unwrapJSON(raw)
	if err != nil {
		return ""
	}
	s := string(v)
	if len(s) > 128 {
		s = s[:128]
	}
	return s
}

func answer(w http.ResponseWriter, status int, logs []string, ret any) {
	if logs == nil {
		logs = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Response{Outputs: map[string]any{}, Logs: logs, ReturnValue: ret})
}
