package sbsource

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// health tracks every receiver's state, logs each outage once (a connection
// outage once for all receivers, a configuration problem once per entity)
// and reports the source's status as one component.
type health struct {
	log    *slog.Logger
	status bridge.StatusReporter

	mu       sync.Mutex
	entities []string
	down     map[string]servicebus.Failure // entity path → why it is down
	started  map[string]bool               // entities that have been up at least once
	lastOK   bool
	lastText string
	reported bool
}

func newHealth(log *slog.Logger, status bridge.StatusReporter) *health {
	return &health{log: log, status: status, down: map[string]servicebus.Failure{}, started: map[string]bool{}}
}

// start registers the entities; until each has answered once the source
// reports itself as connecting.
func (h *health) start(entities []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entities = entities
	h.reportLocked()
}

// connDown reports whether some entity is down for a connection problem.
func (h *health) connDownLocked() bool {
	for _, k := range h.down {
		if k == servicebus.FailConnection {
			return true
		}
	}
	return false
}

func (h *health) fail(entity string, kind servicebus.Failure, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, wasDown := h.down[entity]
	if wasDown && prev == kind {
		return // the same outage: logged already
	}
	if kind == servicebus.FailConnection && h.connDownLocked() {
		h.down[entity] = kind // the connection outage is logged already
		h.reportLocked()
		return
	}
	h.down[entity] = kind
	switch kind {
	case servicebus.FailNotFound:
		h.log.Error("service bus entity not found; check that the topic and subscription (or queue) exist and that users[].id/topic and service_bus.subscription/queue name them; retrying every few minutes",
			"entity", entity, "err", err)
	case servicebus.FailUnauthorized:
		h.log.Error("service bus refused access; check the connection string's key and that it has Listen rights on the entity; retrying every few minutes",
			"entity", entity, "err", err)
	default:
		h.log.Warn("service bus connection lost; reconnecting with back-off", "entity", entity, "err", err)
	}
	h.reportLocked()
}

func (h *health) ok(entity string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kind, wasDown := h.down[entity]
	first := !h.started[entity]
	h.started[entity] = true
	if !wasDown && !first {
		return
	}
	delete(h.down, entity)
	if wasDown {
		if kind != servicebus.FailConnection {
			h.log.Info("service bus entity is reachable again", "entity", entity)
		} else if !h.connDownLocked() {
			h.log.Info("service bus connection restored")
		}
	}
	h.reportLocked()
}

func (h *health) reportLocked() {
	if h.status == nil {
		return
	}
	ok, text := true, ""
	var bad []string
	for _, e := range h.entities {
		if _, d := h.down[e]; d {
			bad = append(bad, e)
		}
	}
	slices.Sort(bad)
	switch {
	case len(bad) > 0:
		ok = false
		text = fmt.Sprintf("%s: %s", bad[0], describe(h.down[bad[0]]))
		if len(bad) > 1 {
			text += fmt.Sprintf(" (and %d more)", len(bad)-1)
		}
	case len(h.started) < len(h.entities):
		ok, text = false, "connecting"
	}
	if h.reported && ok == h.lastOK && text == h.lastText {
		return
	}
	h.reported, h.lastOK, h.lastText = true, ok, text
	h.status.SetStatus(SourceName, ok, text)
}

// Status details a source reports that only the user can fix (the add-on
// raises a Home Assistant notification for them).
const (
	DetailNotFound     = "entity not found"
	DetailAccessDenied = "access denied (check the key's Listen rights)"
)

// UserFixable reports whether a status detail of this source names a problem
// only the user can fix: a missing entity or a refused key.
func UserFixable(detail string) bool {
	return strings.Contains(detail, DetailNotFound) || strings.Contains(detail, DetailAccessDenied)
}

func describe(k servicebus.Failure) string {
	switch k {
	case servicebus.FailNotFound:
		return DetailNotFound
	case servicebus.FailUnauthorized:
		return DetailAccessDenied
	}
	return "connection lost"
}
