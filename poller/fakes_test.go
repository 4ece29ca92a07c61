package poller_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/storetest"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// memStore is a poller.Store in memory; it counts writes.
type memStore struct {
	mu       sync.Mutex
	accounts map[presence.UserID]poller.Account
	caches   map[presence.UserID][]byte
	pres     map[presence.UserID][]byte // JSON, so callers never share slices
	tags     map[presence.UserID]int
	subs     map[presence.UserID][]byte // JSON
	subTags  map[presence.UserID]int
	ring     []byte
	ringTag  int
	writes   int
}

func newMemStore() *memStore {
	return &memStore{accounts: map[presence.UserID]poller.Account{}, caches: map[presence.UserID][]byte{},
		pres: map[presence.UserID][]byte{}, tags: map[presence.UserID]int{},
		subs: map[presence.UserID][]byte{}, subTags: map[presence.UserID]int{}}
}

func TestMemStoreContract(t *testing.T) {
	storetest.Run(t, func(*testing.T) poller.Store { return newMemStore() })
}

func (s *memStore) Accounts(context.Context) ([]poller.Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []poller.Account
	for _, a := range s.accounts {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b poller.Account) int {
		if a.UserID < b.UserID {
			return -1
		}
		return 1
	})
	return out, nil
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
	s.writes++
	s.accounts[a.UserID] = a
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
	delete(s.tags, id)
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
	s.writes++
	s.caches[id] = slices.Clone(b)
	return nil
}

func (s *memStore) Presence(_ context.Context, id presence.UserID) (poller.PresenceRecord, poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rec poller.PresenceRecord
	b, ok := s.pres[id]
	if !ok {
		return rec, "", nil
	}
	err := json.Unmarshal(b, &rec)
	return rec, poller.ETag(strconv.Itoa(s.tags[id])), err
}

func (s *memStore) PutPresence(_ context.Context, id presence.UserID, rec poller.PresenceRecord, ifMatch poller.ETag) (poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, exists := s.pres[id]
	cur := poller.ETag(strconv.Itoa(s.tags[id]))
	if (exists && cur != ifMatch) || (!exists && ifMatch != "") {
		return "", poller.ErrConflict
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	s.writes++
	s.tags[id]++
	s.pres[id] = b
	return poller.ETag(strconv.Itoa(s.tags[id])), nil
}

func (s *memStore) Subscriptions(context.Context) ([]poller.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []poller.Subscription
	for _, b := range s.subs {
		var sub poller.Subscription
		if err := json.Unmarshal(b, &sub); err != nil {
			return nil, err
		}
		out = append(out, sub)
	}
	slices.SortFunc(out, func(a, b poller.Subscription) int {
		if a.UserID < b.UserID {
			return -1
		}
		return 1
	})
	return out, nil
}

func (s *memStore) Subscription(_ context.Context, id presence.UserID) (poller.Subscription, poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sub poller.Subscription
	b, ok := s.subs[id]
	if !ok {
		return sub, "", nil
	}
	err := json.Unmarshal(b, &sub)
	return sub, poller.ETag(strconv.Itoa(s.subTags[id])), err
}

func (s *memStore) PutSubscription(_ context.Context, id presence.UserID, sub poller.Subscription, ifMatch poller.ETag) (poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, exists := s.subs[id]
	if cur := poller.ETag(strconv.Itoa(s.subTags[id])); (exists && cur != ifMatch) || (!exists && ifMatch != "") {
		return "", poller.ErrConflict
	}
	b, err := json.Marshal(sub)
	if err != nil {
		return "", err
	}
	s.writes++
	s.subTags[id]++
	s.subs[id] = b
	return poller.ETag(strconv.Itoa(s.subTags[id])), nil
}

func (s *memStore) KeyRing(context.Context) ([]byte, poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ring == nil {
		return nil, "", nil
	}
	return slices.Clone(s.ring), poller.ETag(strconv.Itoa(s.ringTag)), nil
}

func (s *memStore) PutKeyRing(_ context.Context, b []byte, ifMatch poller.ETag) (poller.ETag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := poller.ETag(strconv.Itoa(s.ringTag)); (s.ring != nil && cur != ifMatch) || (s.ring == nil && ifMatch != "") {
		return "", poller.ErrConflict
	}
	s.writes++
	s.ringTag++
	s.ring = slices.Clone(b)
	return poller.ETag(strconv.Itoa(s.ringTag)), nil
}

func (s *memStore) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// reader is a scripted Graph.
type reader struct {
	mu    sync.Mutex
	now   map[presence.UserID]presence.Update
	reads int
	block chan struct{} // when set, reads wait on it
	// blockTenant limits block to one tenant's reads.
	blockTenant string
	readBy      map[presence.UserID]bool
	batches     []int // sizes of the batch reads
	batchErr    error
}

func (r *reader) set(u presence.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.now == nil {
		r.now = map[presence.UserID]presence.Update{}
	}
	r.now[u.UserID] = u
}

func (r *reader) Me(ctx context.Context, tenant, token string) (presence.Update, error) {
	r.mu.Lock()
	block := r.block
	if r.blockTenant != "" && tenant != r.blockTenant {
		block = nil
	}
	r.reads++
	u, ok := r.now[presence.UserID(token)]
	if r.readBy == nil {
		r.readBy = map[presence.UserID]bool{}
	}
	r.readBy[presence.UserID(token)] = true
	r.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return presence.Update{}, ctx.Err()
		}
	}
	if !ok {
		return presence.Update{}, errors.New("no presence scripted")
	}
	return u, nil
}

// ByUserIDs answers for the scripted people among ids (the token must be
// the app token of the tenant) and records the batch's size.
func (r *reader) ByUserIDs(ctx context.Context, tenant, token string, ids []presence.UserID) ([]presence.Update, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if token != "app:"+tenant {
		return nil, errors.New("not the app token of the tenant")
	}
	if r.batchErr != nil {
		return nil, r.batchErr
	}
	r.batches = append(r.batches, len(ids))
	var out []presence.Update
	for _, id := range ids {
		if u, ok := r.now[id]; ok {
			out = append(out, u)
		}
	}
	return out, nil
}

func (r *reader) batchSizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches)
}

// tokens hands out the user id as the token; revoked people need sign-in.
type tokens struct {
	mu       sync.Mutex
	revoked  map[presence.UserID]bool
	calls    map[presence.UserID]int
	appCalls int
}

func (t *tokens) Token(_ context.Context, a poller.Account) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.calls == nil {
		t.calls = map[presence.UserID]int{}
	}
	t.calls[a.UserID]++
	if t.revoked[a.UserID] {
		return "", poller.ErrSignInRequired
	}
	return string(a.UserID), nil
}

// AppToken is "app:<tenant>".
func (t *tokens) AppToken(_ context.Context, tenant string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.appCalls++
	return "app:" + tenant, nil
}

// publisher records what was accepted; while down it refuses; when inFlight
// is set, a publish signals it and waits for release.
type publisher struct {
	mu       sync.Mutex
	down     bool
	got      []poller.Message
	inFlight chan struct{}
	release  chan struct{}
}

func (p *publisher) Publish(ctx context.Context, ns, topic string, m poller.Message) error {
	p.mu.Lock()
	down, inFlight, release := p.down, p.inFlight, p.release
	p.mu.Unlock()
	if down {
		return errors.New("service bus unreachable")
	}
	if inFlight != nil {
		inFlight <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, m)
	return nil
}

func (p *publisher) setDown(v bool) {
	p.mu.Lock()
	p.down = v
	p.mu.Unlock()
}

func (p *publisher) messages() []poller.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// topics is a TopicManager with a topic count.
type topics struct {
	host string
	n    int
}

func (t *topics) Host() string                             { return t.host }
func (t *topics) CountTopics(context.Context) (int, error) { return t.n, nil }
func (t *topics) Provision(context.Context, string, []string, bool) (servicebus.Provisioned, error) {
	t.n++
	return servicebus.Provisioned{CreatedTopic: true}, nil
}

func (r *reader) wasRead(id presence.UserID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readBy[id]
}
