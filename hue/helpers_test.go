package hue

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
	"github.com/presence-bridge/presence-bridge/presence"
)

const (
	alexID  = "6f1c2a3b-1111-2222-3333-444455556666"
	blakeID = "7a2d3b4c-5555-6666-7777-888899990000"
	testKey = "test-key"
)

var testUsers = []config.User{{ID: alexID, Name: "Alex"}, {ID: blakeID, Name: "Blake"}}

// statusRecorder is a bridge.StatusReporter that keeps every call.
type statusRecorder struct {
	mu    sync.Mutex
	calls []statusCall
}

type statusCall struct {
	Component string
	OK        bool
	Detail    string
}

func (r *statusRecorder) SetStatus(component string, ok bool, detail string) {
	r.mu.Lock()
	r.calls = append(r.calls, statusCall{component, ok, detail})
	r.mu.Unlock()
}

func (r *statusRecorder) all() []statusCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]statusCall(nil), r.calls...)
}

func (r *statusRecorder) last() (statusCall, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return statusCall{}, false
	}
	return r.calls[len(r.calls)-1], true
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu      *sync.Mutex
	records *[]slog.Record
	attrs   []slog.Attr
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: &sync.Mutex{}, records: &[]slog.Record{}}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.mu.Lock()
	*h.records = append(*h.records, r)
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{mu: h.mu, records: h.records, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// count returns how many records' message contains s.
func (h *logRecorder) count(s string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range *h.records {
		if strings.Contains(r.Message, s) {
			n++
		}
	}
	return n
}

// all returns every record's message and attributes as text.
func (h *logRecorder) text() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, r := range *h.records {
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.String())
			return true
		})
		b.WriteString("\n")
	}
	return b.String()
}

// harness runs a sink against a fake bridge through the in-memory client;
// use it inside synctest.Test.
type harness struct {
	fake   *huetest.Bridge
	sink   *Sink
	status *statusRecorder
	logs   *logRecorder
	cancel context.CancelFunc
	done   chan struct{}
	ver    uint64
}

// oneGroup is a bridge with the Office group driven by Alex.
func oneGroup(groups ...config.HueGroup) config.Hue {
	if len(groups) == 0 {
		groups = []config.HueGroup{{Group: "Office", Users: []string{"Alex"}}}
	}
	return config.Hue{
		Mode:        config.HueModeAlways,
		MinInterval: config.Duration(time.Second),
		Bridges:     []config.HueBridge{{Host: "192.0.2.10", Username: testKey, Groups: groups}},
	}
}

func startHarness(t *testing.T, fake *huetest.Bridge, cfg config.Hue, mutate func(*Options)) *harness {
	t.Helper()
	h := &harness{fake: fake, status: &statusRecorder{}, logs: newLogRecorder(), done: make(chan struct{})}
	opts := Options{
		Config:     cfg,
		Users:      testUsers,
		Logger:     slog.New(h.logs),
		Status:     h.status,
		HTTPClient: fake.Client(),
	}
	if mutate != nil {
		mutate(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.sink = s
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer close(h.done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

// apply hands one user's new state to the sink.
func (h *harness) apply(t *testing.T, user presence.UserID, av presence.Availability, ac presence.Activity) {
	t.Helper()
	h.ver++
	st := bridge.State{UserID: user, Availability: av, Activity: ac, Online: true, Version: h.ver, Source: "test"}
	if err := h.sink.Apply(context.Background(), []bridge.State{st}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// accepted returns the commands the fake carried out for a group.
func accepted(fake *huetest.Bridge, group string) []huetest.Command {
	var out []huetest.Command
	for _, c := range fake.Commands() {
		if c.Group == group && c.Accepted() {
			out = append(out, c)
		}
	}
	return out
}

// look computes the look the palette gives a state, in gamut C.
func lookOf(t *testing.T, colors []config.Color, av presence.Availability, ac presence.Activity) Look {
	t.Helper()
	p, err := NewPalette(colors)
	if err != nil {
		t.Fatal(err)
	}
	return p.styleFor(bridge.State{Availability: av, Activity: ac, Online: true}).look(GamutC.Area())
}

// xyOf reads the xy of a recorded command body.
func xyOf(body map[string]any) ([2]float64, bool) {
	a, ok := body["xy"].([]any)
	if !ok || len(a) != 2 {
		return [2]float64{}, false
	}
	x, ok1 := a[0].(float64)
	y, ok2 := a[1].(float64)
	return [2]float64{x, y}, ok1 && ok2
}
