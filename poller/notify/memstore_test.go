package notify_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// memStore is a poller.Store in memory (records kept as JSON so that
// callers never share slices); it counts writes by kind.
type memStore struct {
	mu       sync.Mutex
	accounts map[presence.UserID]poller.Account
	caches   map[presence.UserID][]byte
	recs     map[string][]byte // "p:<id>" presence, "ring"
	tags     map[string]int
	subs     map[presence.UserID]poller.Subscription   // a flat struct: kept by value
	pres     map[presence.UserID]poller.PresenceRecord // deep-copied in and out
	sorted   []poller.Account                          // Accounts' answer, until an account changes
	writes   map[string]int
	// fail, when set, makes writes of that kind fail.
	fail map[string]error
}

func newMemStore() *memStore {
	return &memStore{accounts: map[presence.UserID]poller.Account{}, caches: map[presence.UserID][]byte{},
		recs: map[string][]byte{}, tags: map[string]int{}, writes: map[string]int{}, fail: map[string]error{},
		subs: map[presence.UserID]poller.Subscription{}, pres: map[presence.UserID]poller.PresenceRecord{}}
}

func (s *memStore) Writes(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes[kind]
}

func (s *memStore) setFail(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[kind] = err
}

func (s *memStore) Accounts(context.Context) ([]poller.Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sorted == nil {
		for _, a := range s.accounts {
			s.sorted = append(s.sorted, a)
		}
		slices.SortFunc(s.sorted, func(a, b poller.Account) int { return compareIDs(a.UserID, b.UserID) })
	}
	return slices.Clone(s.sorted), nil
}

func compareIDs(a, b presence.UserID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *memStore) Account(_ context.Context, id presence.UserID) (poller.Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[id]
	if !ok {
		return a, poller.ErrNotFound
	}
	return a, nil
}

func (s *memStore) PutAccount(_ context.Context, a poller.Account) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes["account"]++
	s.accounts[a.UserID] = a
	s.sorted = nil
	return nil
}

func (s *memStore) DeleteAccount(_ context.Context, id presence.UserID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[id]; !ok {
		return poller.ErrNotFound
	}
	delete(s.accounts, id)
	delete(s.caches, id)
	delete(s.pres, id)
	s.sorted = nil
	for _, k := range []string{"p:" + string(id), "s:" + string(id)} {
		delete(s.recs, k)
		delete(s.tags, k)
	}
	delete(s.subs, id)
	return nil
}

func (s *memStore) TokenCache(_ context.Context, id presence.UserID) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.caches[id]), nil
}

func (s *memStore) PutTokenCache(_ context.Context, id presence.UserID, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.caches[id] = slices.Clone(b)
	return nil
}

func (s *memStore) get(k string, into any) (poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.recs[k]
	if !ok {
		return "", nil
	}
	if raw, isRaw := into.(*[]byte); isRaw {
		*raw = slices.Clone(b)
	} else if err := json.Unmarshal(b, into); err != nil {
		return "", err
	}
	return poller.ETag(strconv.Itoa(s.tags[k])), nil
}

func (s *memStore) put(kind, k string, v any, ifMatch poller.ETag) (poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail[kind]; err != nil {
		return "", err
	}
	_, exists := s.recs[k]
	if cur := poller.ETag(strconv.Itoa(s.tags[k])); (exists && cur != ifMatch) || (!exists && ifMatch != "") {
		return "", poller.ErrConflict
	}
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return "", err
		}
	}
	s.writes[kind]++
	s.tags[k]++
	s.recs[k] = slices.Clone(b)
	return poller.ETag(strconv.Itoa(s.tags[k])), nil
}

func clonePresence(r poller.PresenceRecord) poller.PresenceRecord {
	r.Pending = slices.Clone(r.Pending)
	for i := range r.Pending {
		r.Pending[i].Body = slices.Clone(r.Pending[i].Body)
	}
	return r
}

func (s *memStore) Presence(_ context.Context, id presence.UserID) (poller.PresenceRecord, poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.pres[id]
	if !ok {
		return poller.PresenceRecord{}, "", nil
	}
	return clonePresence(rec), poller.ETag(strconv.Itoa(s.tags["p:"+string(id)])), nil
}

func (s *memStore) PutPresence(_ context.Context, id presence.UserID, rec poller.PresenceRecord, ifMatch poller.ETag) (poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail["presence"]; err != nil {
		return "", err
	}
	k := "p:" + string(id)
	_, exists := s.pres[id]
	if cur := poller.ETag(strconv.Itoa(s.tags[k])); (exists && cur != ifMatch) || (!exists && ifMatch != "") {
		return "", poller.ErrConflict
	}
	s.writes["presence"]++
	s.tags[k]++
	s.pres[id] = clonePresence(rec)
	return poller.ETag(strconv.Itoa(s.tags[k])), nil
}

func (s *memStore) Subscriptions(context.Context) ([]poller.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]poller.Subscription, 0, len(s.subs))
	for _, sub := range s.subs {
		out = append(out, sub)
	}
	slices.SortFunc(out, func(a, b poller.Subscription) int { return compareIDs(a.UserID, b.UserID) })
	return out, nil
}

func (s *memStore) Subscription(_ context.Context, id presence.UserID) (poller.Subscription, poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail["read"]; err != nil {
		return poller.Subscription{}, "", err
	}
	sub, ok := s.subs[id]
	if !ok {
		return poller.Subscription{}, "", nil
	}
	return sub, poller.ETag(strconv.Itoa(s.tags["s:"+string(id)])), nil
}

func (s *memStore) PutSubscription(_ context.Context, id presence.UserID, sub poller.Subscription, ifMatch poller.ETag) (poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail["subscription"]; err != nil {
		return "", err
	}
	k := "s:" + string(id)
	_, exists := s.subs[id]
	if cur := poller.ETag(strconv.Itoa(s.tags[k])); (exists && cur != ifMatch) || (!exists && ifMatch != "") {
		return "", poller.ErrConflict
	}
	s.writes["subscription"]++
	s.tags[k]++
	s.subs[id] = sub
	return poller.ETag(strconv.Itoa(s.tags[k])), nil
}

func (s *memStore) KeyRing(context.Context) ([]byte, poller.ETag, error) {
	var b []byte
	tag, err := s.get("ring", &b)
	return b, tag, err
}

func (s *memStore) PutKeyRing(_ context.Context, b []byte, ifMatch poller.ETag) (poller.ETag, error) {
	return s.put("ring", "ring", slices.Clone(b), ifMatch)
}
