package notify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// Manager defaults.
const (
	// DefaultRenewBefore is how long before expiry a subscription is
	// renewed: with Graph's 60-minute limit a subscription is renewed every
	// 55 minutes, and a renewal that fails has five minutes of retries
	// (back-off from 30 s) before the subscription lapses.
	DefaultRenewBefore = 5 * time.Minute
	// DefaultTickEvery is how often Run looks for work when nothing wakes
	// it.
	DefaultTickEvery = 30 * time.Second
	// retryFirst and retryCap bound the back-off of failed writes.
	retryFirst = 30 * time.Second
	retryCap   = 30 * time.Minute
	// createLease is how long a claimed record keeps other instances from
	// creating the same person's subscription (Graph validates the webhook
	// within 10 s); a process that stopped mid-creation is retried after.
	createLease = 2 * time.Minute
)

// API is Graph's subscription API (graph.Subscriptions is one).
type API interface {
	Create(ctx context.Context, tenantID, token string, n graph.NewSubscription) (graph.SubscriptionInfo, error)
	Renew(ctx context.Context, tenantID, token, id string, expires time.Time, certificate []byte, certificateID string) (graph.SubscriptionInfo, error)
	Delete(ctx context.Context, tenantID, token, id string) error
}

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	Store  poller.Store
	API    API
	Tokens poller.TokenSource
	Keys   *KeyRing
	// NotificationURL is <public_url>/notifications; it receives the
	// lifecycle notifications too.
	NotificationURL string
	// Lifetime asked for each subscription; default (and at most)
	// graph.MaxPresenceLifetime.
	Lifetime time.Duration
	// RenewBefore; default DefaultRenewBefore.
	RenewBefore time.Duration
	// Concurrency bounds the subscription writes in flight; default 16.
	Concurrency int
	// TickEvery; default DefaultTickEvery.
	TickEvery time.Duration
	// Skip, when set, names people who get no subscription (the people of
	// app-only tenants: application permissions cannot subscribe).
	Skip   func(poller.Account) bool
	Logger *slog.Logger
}

// Manager keeps one subscription per signed-in person: it creates a
// missing one, renews one before it expires (moving it to the key ring's
// current key), recreates one that lapsed, renews at once one Graph asked
// to reauthorize, and deletes one whose person is removed. A person whose
// subscription cannot be made gets the reason in their record (the
// accounts listing shows it) and is polled meanwhile; the attempt is
// repeated with back-off. Tick is one pass, independent of what calls it
// (Run's timer in serve, a timer function later).
type Manager struct {
	o    ManagerOptions
	log  *slog.Logger
	wake chan struct{}
	tick sync.Mutex
}

// NewManager makes a Manager.
func NewManager(o ManagerOptions) *Manager {
	if o.Lifetime <= 0 || o.Lifetime > graph.MaxPresenceLifetime {
		o.Lifetime = graph.MaxPresenceLifetime
	}
	if o.RenewBefore <= 0 {
		o.RenewBefore = DefaultRenewBefore
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.TickEvery <= 0 {
		o.TickEvery = DefaultTickEvery
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{o: o, log: o.Logger, wake: make(chan struct{}, 1)}
}

// TickSummary is what one pass did.
type TickSummary struct {
	Healthy, Created, Renewed, Recreated, Failed int
	Retired                                      []string
}

// Run ticks at once, then every TickEvery and whenever Wake is called,
// until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.wake:
		}
		if _, err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("subscriptions not maintained this time", "err", err)
		}
		t.Reset(m.o.TickEvery)
	}
}

// Wake asks Run for a pass soon (a sign-in, a lifecycle notification).
func (m *Manager) Wake() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Covered tells which people a healthy subscription covers now (the
// engine reads them only every reconcile interval).
func (m *Manager) Covered(ctx context.Context) (map[presence.UserID]bool, error) {
	subs, err := m.o.Store.Subscriptions(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make(map[presence.UserID]bool, len(subs))
	for _, s := range subs {
		if s.Healthy(now) {
			out[s.UserID] = true
		}
	}
	return out, nil
}

type job struct {
	a   poller.Account
	rec poller.Subscription
	tag poller.ETag
	do  func(context.Context, *Key, job) outcome
}

type outcome int

const (
	outNone outcome = iota
	outCreated
	outRenewed
	outRecreated
	outFailed
)

// Tick is one pass over everyone.
func (m *Manager) Tick(ctx context.Context) (TickSummary, error) {
	m.tick.Lock()
	defer m.tick.Unlock()
	var sum TickSummary
	key, err := m.o.Keys.Current(ctx)
	if err != nil {
		return sum, err
	}
	accounts, err := m.o.Store.Accounts(ctx)
	if err != nil {
		return sum, fmt.Errorf("notify: list accounts: %w", err)
	}
	subs, err := m.o.Store.Subscriptions(ctx)
	if err != nil {
		return sum, fmt.Errorf("notify: list subscriptions: %w", err)
	}
	byUser := make(map[presence.UserID]poller.Subscription, len(subs))
	for _, s := range subs {
		byUser[s.UserID] = s
	}
	now := time.Now()
	var jobs []job
	for _, a := range accounts {
		rec, known := byUser[a.UserID]
		if a.State == poller.StateSignInRequired || m.o.Skip != nil && m.o.Skip(a) {
			continue // their token no longer works, or they cannot subscribe
		}
		if known && now.Before(rec.RetryAt) {
			continue
		}
		var do func(context.Context, *Key, job) outcome
		switch {
		case !known || rec.ID == "":
			do = m.create
		case !now.Before(rec.ExpiresAt):
			do = m.recreate
		case rec.Reauthorize || rec.ExpiresAt.Sub(now) <= m.o.RenewBefore || rec.Failure != "":
			do = m.renew
		default:
			sum.Healthy++
			continue
		}
		j := job{a: a, rec: rec, do: do}
		if known {
			// The tag is read now, per person: the list has no ETags.
			cur, tag, err := m.o.Store.Subscription(ctx, a.UserID)
			if err != nil {
				return sum, fmt.Errorf("notify: read subscription: %w", err)
			}
			j.rec, j.tag = cur, tag
		}
		jobs = append(jobs, j)
	}
	var created, renewed, recreated, failed atomic.Int64
	sem := make(chan struct{}, m.o.Concurrency)
	var wg sync.WaitGroup
	for _, j := range jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return sum, context.Cause(ctx)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			switch j.do(ctx, key, j) {
			case outCreated:
				created.Add(1)
			case outRenewed:
				renewed.Add(1)
			case outRecreated:
				recreated.Add(1)
			case outFailed:
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	sum.Created, sum.Renewed, sum.Recreated, sum.Failed = int(created.Load()), int(renewed.Load()), int(recreated.Load()), int(failed.Load())
	sum.Healthy += sum.Created + sum.Renewed + sum.Recreated
	if err := m.retire(ctx, subs); err != nil {
		m.log.Warn("old notification keys not retired", "err", err)
	}
	level := slog.LevelDebug
	if sum.Created+sum.Recreated+sum.Failed > 0 {
		level = slog.LevelInfo
	}
	m.log.Log(ctx, level, "subscriptions maintained", "healthy", sum.Healthy, "created", sum.Created, "renewed", sum.Renewed,
		"recreated", sum.Recreated, "failed", sum.Failed)
	return sum, nil
}

// retire drops the keys no subscription uses any more. subs is the list
// the pass began with: a subscription the pass moved off an old key keeps
// that key one pass longer, which is harmless (new subscriptions use the
// current key, which is never retired).
func (m *Manager) retire(ctx context.Context, subs []poller.Subscription) error {
	inUse := map[string]bool{}
	now := time.Now()
	for _, s := range subs {
		if s.ID != "" && now.Before(s.ExpiresAt) {
			inUse[s.CertificateID] = true
		}
	}
	gone, err := m.o.Keys.Retire(ctx, inUse)
	if len(gone) > 0 {
		m.log.Info("notification keys retired: no subscription uses them", "keys", strings.Join(gone, ","))
	}
	return err
}

// create makes the person's first subscription (or the next one after a
// failed attempt).
func (m *Manager) create(ctx context.Context, key *Key, j job) outcome {
	return m.make(ctx, key, j, outCreated)
}

// recreate replaces a subscription that lapsed: the old one is deleted
// first in case Graph still has it (one presence subscription per person
// and app).
func (m *Manager) recreate(ctx context.Context, key *Key, j job) outcome {
	return m.make(ctx, key, j, outRecreated)
}

func (m *Manager) make(ctx context.Context, key *Key, j job, kind outcome) outcome {
	a, rec := j.a, j.rec
	log := m.log.With("user", a.UserID, "tenant", a.TenantID)
	token, err := m.o.Tokens.Token(ctx, a)
	if err != nil {
		return m.failed(ctx, j, err, log)
	}
	if rec.ID != "" {
		if err := m.o.API.Delete(ctx, a.TenantID, token, rec.ID); err != nil && !errors.Is(err, graph.ErrSubscriptionNotFound) {
			log.Debug("lapsed subscription not deleted", "err", err)
		}
	}
	state := newClientState()
	next := poller.Subscription{
		UserID: a.UserID, TenantID: a.TenantID, ClientStateHash: HashClientState(state), CertificateID: key.ID,
		Failure: rec.Failure, Failures: rec.Failures, RetryAt: time.Now().Add(createLease),
	}
	// Claim the record before Graph is asked: another instance that claimed
	// it meanwhile wins, one that reads the claim leaves the person alone
	// until the lease (RetryAt) has passed, and a notification that arrives
	// before the id is stored is checked against this clientState.
	tag, err := m.o.Store.PutSubscription(ctx, a.UserID, next, j.tag)
	if errors.Is(err, poller.ErrConflict) {
		return outNone
	}
	if err != nil {
		log.Warn("subscription record not stored", "err", err)
		return outFailed
	}
	j.rec, j.tag = next, tag
	now := time.Now()
	info, err := m.o.API.Create(ctx, a.TenantID, token, graph.NewSubscription{
		Resource: graph.PresenceResource(a.UserID), ChangeType: "updated",
		NotificationURL: m.o.NotificationURL, LifecycleURL: m.o.NotificationURL,
		ExpiresAt: now.Add(m.o.Lifetime), ClientState: state,
		IncludeResourceData: true, Certificate: key.Certificate, CertificateID: key.ID,
	})
	if err != nil {
		return m.failed(ctx, j, err, log)
	}
	next.ID, next.ExpiresAt, next.RenewedAt = info.ID, info.ExpiresAt, now
	next.Failure, next.Failures, next.RetryAt, next.Reauthorize = "", 0, time.Time{}, false
	if _, err := m.o.Store.PutSubscription(ctx, a.UserID, next, tag); err != nil {
		// Another instance wrote the record meanwhile: keep theirs, drop ours.
		_ = m.o.API.Delete(context.WithoutCancel(ctx), a.TenantID, token, info.ID)
		log.Warn("subscription created but not recorded; deleted it again", "err", err)
		return outFailed
	}
	if rec.Failure != "" {
		log.Info("change notifications work again for this person", "expires", info.ExpiresAt.UTC().Format(time.RFC3339))
	} else {
		log.Debug("subscription created", "expires", info.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return kind
}

// renew extends a subscription (and reauthorizes it), moving it to the
// current key if it uses an older one; one Graph no longer knows is
// recreated.
func (m *Manager) renew(ctx context.Context, key *Key, j job) outcome {
	a, rec := j.a, j.rec
	log := m.log.With("user", a.UserID, "tenant", a.TenantID)
	token, err := m.o.Tokens.Token(ctx, a)
	if err != nil {
		return m.failed(ctx, j, err, log)
	}
	var cert []byte
	certID := ""
	if rec.CertificateID != key.ID {
		cert, certID = key.Certificate, key.ID
	}
	now := time.Now()
	info, err := m.o.API.Renew(ctx, a.TenantID, token, rec.ID, now.Add(m.o.Lifetime), cert, certID)
	if errors.Is(err, graph.ErrSubscriptionNotFound) {
		log.Info("subscription gone at Graph; making a new one")
		return m.make(ctx, key, j, outRecreated)
	}
	if err != nil {
		return m.failed(ctx, j, err, log)
	}
	next := rec
	next.ExpiresAt, next.RenewedAt, next.Reauthorize = info.ExpiresAt, now, false
	if cert != nil {
		next.CertificateID = key.ID
	}
	next.Failure, next.Failures, next.RetryAt = "", 0, time.Time{}
	if _, err := m.o.Store.PutSubscription(ctx, a.UserID, next, j.tag); err != nil && !errors.Is(err, poller.ErrConflict) {
		log.Warn("renewal not recorded", "err", err)
		return outFailed
	}
	if rec.Failure != "" {
		log.Info("change notifications work again for this person")
	}
	return outRenewed
}

// failed records why the person has no working subscription, and when to
// try again.
func (m *Manager) failed(ctx context.Context, j job, cause error, log *slog.Logger) outcome {
	if ctx.Err() != nil {
		return outNone
	}
	next := j.rec
	next.UserID, next.TenantID = j.a.UserID, j.a.TenantID
	reason, wait := describe(cause, m.o.NotificationURL)
	next.Failures++
	if wait == 0 {
		wait = min(retryFirst<<min(next.Failures-1, 10), retryCap)
	}
	next.RetryAt = time.Now().Add(wait)
	first := next.Failure != reason
	next.Failure = reason
	if _, err := m.o.Store.PutSubscription(ctx, j.a.UserID, next, j.tag); err != nil && !errors.Is(err, poller.ErrConflict) {
		log.Warn("subscription failure not recorded", "err", err)
	}
	if first {
		log.Warn("no change notifications for this person: they are polled instead", "reason", reason, "retry_in", wait.Round(time.Second).String())
	}
	return outFailed
}

// describe says, for the accounts listing, why a subscription write
// failed, and how long to wait when the failure says (0: back-off).
func describe(err error, url string) (string, time.Duration) {
	var se *graph.SubscriptionError
	var te *graph.ThrottledError
	switch {
	case errors.Is(err, poller.ErrSignInRequired):
		return "the person must sign in again", 0
	case errors.As(err, &te):
		return "Graph throttled subscription writes", time.Until(te.Until)
	case errors.Is(err, graph.ErrUnauthorized):
		return "Graph rejected the access token", 0
	case errors.As(err, &se) && se.Status == 400 && strings.Contains(strings.ToLower(se.Message), "validation"):
		return fmt.Sprintf("Graph could not validate %s (is public_url reachable from the internet over https?): %s", url, clipReason(se.Message)), 0
	case errors.As(err, &se) && se.Status == 403:
		return "Graph refused the subscription (consent to Presence.Read.All missing?): " + clipReason(se.Message), 0
	case errors.As(err, &se):
		return fmt.Sprintf("Graph refused the subscription (HTTP %d %s): %s", se.Status, se.Code, clipReason(se.Message)), 0
	}
	return clipReason(err.Error()), 0
}

func clipReason(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 240 {
		s = s[:240] + "…"
	}
	return s
}

// newClientState is 32 random bytes, base64url: 43 characters.
func newClientState() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashClientState is what the store keeps of a clientState.
func HashClientState(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Lifecycle acts on a lifecycle notification the webhook has verified:
// reauthorizationRequired renews the subscription at once (a renewal
// reauthorizes it too, with the person's fresh token); subscriptionRemoved
// recreates it.
func (m *Manager) Lifecycle(ctx context.Context, id presence.UserID, event string) error {
	for attempt := 0; attempt < 4; attempt++ {
		rec, tag, err := m.o.Store.Subscription(ctx, id)
		if err != nil {
			return err
		}
		if tag == "" {
			return nil
		}
		switch event {
		case EventReauthorizationRequired:
			rec.Reauthorize = true
		case EventSubscriptionRemoved:
			rec.ExpiresAt = time.Now()
		default:
			return nil
		}
		rec.RetryAt = time.Time{}
		_, err = m.o.Store.PutSubscription(ctx, id, rec, tag)
		if errors.Is(err, poller.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		m.Wake()
		return nil
	}
	return poller.ErrConflict
}

// Retry makes a person's failed subscription be tried again at the next
// pass (they signed in again, perhaps with the consent that was missing).
func (m *Manager) Retry(ctx context.Context, id presence.UserID) {
	rec, tag, err := m.o.Store.Subscription(ctx, id)
	if err == nil && tag != "" && !rec.RetryAt.IsZero() {
		rec.RetryAt = time.Time{}
		_, _ = m.o.Store.PutSubscription(ctx, id, rec, tag)
	}
	m.Wake()
}

// Remove deletes the person's subscription at Graph (before the person is
// forgotten: it needs their token).
func (m *Manager) Remove(ctx context.Context, a poller.Account) error {
	rec, _, err := m.o.Store.Subscription(ctx, a.UserID)
	if err != nil || rec.ID == "" || !time.Now().Before(rec.ExpiresAt) {
		return err
	}
	token, err := m.o.Tokens.Token(ctx, a)
	if err != nil {
		return fmt.Errorf("notify: delete subscription: %w", err)
	}
	if err := m.o.API.Delete(ctx, a.TenantID, token, rec.ID); err != nil && !errors.Is(err, graph.ErrSubscriptionNotFound) {
		return fmt.Errorf("notify: delete subscription: %w", err)
	}
	return nil
}
