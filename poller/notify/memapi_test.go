package notify_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/presence"
)

// memAPI is Graph's subscription API in memory, for synctest: it keeps
// Graph's rules (60-minute lifetime, one presence subscription per person,
// a lapsed subscription is gone) and counts writes.
type memAPI struct {
	mu     sync.Mutex
	subs   map[string]*memSub
	writes map[string]int
	log    []write
	n      int
	// createErr, when set, fails creations.
	createErr error
}

type memSub struct {
	id, clientState, certID string
	user                    presence.UserID
	cert                    []byte
	expires                 time.Time
}

// write is one write as Graph saw it.
type write struct {
	kind    string
	user    presence.UserID
	at      time.Time
	expires time.Time // the subscription's expiry before the write
}

func newMemAPI() *memAPI { return &memAPI{subs: map[string]*memSub{}, writes: map[string]int{}} }

func (m *memAPI) live(id string) *memSub {
	s := m.subs[id]
	if s != nil && !time.Now().Before(s.expires) {
		delete(m.subs, id)
		return nil
	}
	return s
}

func (m *memAPI) liveOf(user presence.UserID) *memSub {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.subs {
		if s := m.live(id); s != nil && s.user == user {
			c := *s
			return &c
		}
	}
	return nil
}

func (m *memAPI) count(kind string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes[kind]
}

func (m *memAPI) writesLog() []write {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]write(nil), m.log...)
}

func userOf(token string) presence.UserID {
	for i := range token {
		if token[i] == '.' {
			return presence.UserID(token[:i])
		}
	}
	return presence.UserID(token)
}

func (m *memAPI) Create(_ context.Context, tenant, token string, n graph.NewSubscription) (graph.SubscriptionInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes["create"]++
	user := userOf(token)
	m.log = append(m.log, write{kind: "create", user: user, at: time.Now()})
	if m.createErr != nil {
		return graph.SubscriptionInfo{}, m.createErr
	}
	if n.ExpiresAt.After(time.Now().Add(time.Hour)) {
		return graph.SubscriptionInfo{}, &graph.SubscriptionError{Status: 400, Message: "expirationDateTime over 60 minutes"}
	}
	for id := range m.subs {
		if s := m.live(id); s != nil && s.user == user {
			return graph.SubscriptionInfo{}, &graph.SubscriptionError{Status: 403, Message: "one presence subscription per application"}
		}
	}
	m.n++
	s := &memSub{id: fmt.Sprintf("sub-%d", m.n), clientState: n.ClientState, certID: n.CertificateID, user: user, cert: n.Certificate, expires: n.ExpiresAt}
	m.subs[s.id] = s
	return graph.SubscriptionInfo{ID: s.id, Resource: n.Resource, ExpiresAt: s.expires}, nil
}

func (m *memAPI) Renew(_ context.Context, tenant, token, id string, expires time.Time, cert []byte, certID string) (graph.SubscriptionInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes["renew"]++
	s := m.live(id)
	w := write{kind: "renew", user: userOf(token), at: time.Now()}
	if s != nil {
		w.expires = s.expires
	}
	m.log = append(m.log, w)
	if s == nil {
		return graph.SubscriptionInfo{}, graph.ErrSubscriptionNotFound
	}
	if expires.After(time.Now().Add(time.Hour)) {
		return graph.SubscriptionInfo{}, &graph.SubscriptionError{Status: 400, Message: "expirationDateTime over 60 minutes"}
	}
	s.expires = expires
	if cert != nil {
		s.cert, s.certID = cert, certID
	}
	return graph.SubscriptionInfo{ID: id, ExpiresAt: expires}, nil
}

func (m *memAPI) Delete(_ context.Context, tenant, token, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes["delete"]++
	m.log = append(m.log, write{kind: "delete", user: userOf(token), at: time.Now()})
	if m.live(id) == nil {
		return graph.ErrSubscriptionNotFound
	}
	delete(m.subs, id)
	return nil
}

// forget drops a subscription as if Graph had (the next renewal gets 404).
func (m *memAPI) forget(user presence.UserID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, s := range m.subs {
		if s.user == user {
			delete(m.subs, id)
		}
	}
}
