package bridge

import (
	"maps"
	"sync"
	"time"
)

// ComponentStatus is the last reported health of one component.
type ComponentStatus struct {
	OK     bool      `json:"ok"`
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
}

// Health collects the status of every component (sources and sinks). It is a
// StatusReporter; the health endpoint reads Snapshot and the Home Assistant
// sink watches it to drive its connectivity sensors.
type Health struct {
	mu       sync.Mutex
	status   map[string]ComponentStatus
	watchers []func(component string, st ComponentStatus)
}

var _ StatusReporter = (*Health)(nil)

// NewHealth returns an empty registry.
func NewHealth() *Health {
	return &Health{status: make(map[string]ComponentStatus)}
}

// SetStatus records a component's health and tells the watchers when it
// changed.
func (h *Health) SetStatus(component string, ok bool, detail string) {
	h.mu.Lock()
	old, seen := h.status[component]
	if seen && old.OK == ok && old.Detail == detail {
		h.mu.Unlock()
		return
	}
	st := ComponentStatus{OK: ok, Detail: detail, Since: time.Now()}
	if seen && old.OK == ok {
		st.Since = old.Since
	}
	h.status[component] = st
	watchers := h.watchers
	h.mu.Unlock()
	for _, w := range watchers {
		w(component, st)
	}
}

// Snapshot returns a copy of every component's status.
func (h *Health) Snapshot() map[string]ComponentStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.status)
}

// Healthy reports whether every component that reported is OK.
func (h *Health) Healthy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, st := range h.status {
		if !st.OK {
			return false
		}
	}
	return true
}

// Watch calls fn with every component's current status and then with each
// change. fn must not block; it runs in the reporter's goroutine.
func (h *Health) Watch(fn func(component string, st ComponentStatus)) {
	h.mu.Lock()
	h.watchers = append(h.watchers[:len(h.watchers):len(h.watchers)], fn)
	current := maps.Clone(h.status)
	h.mu.Unlock()
	for c, st := range current {
		fn(c, st)
	}
}
