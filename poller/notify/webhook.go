package notify

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// Webhook defaults.
const (
	// DefaultBudget is how long the webhook may work on a request before it
	// answers: Graph wants an answer within 3 s and throttles an endpoint
	// that is often slower than 2.9 s.
	DefaultBudget = 2500 * time.Millisecond
	// maxValidationToken bounds the echoed validation token.
	maxValidationToken = 16 << 10
	// maxSources bounds the sources remembered for "logged once".
	maxSources = 1024
)

// Recorder is the engine's side of notifications (*poller.Engine).
type Recorder interface {
	Receive(ctx context.Context, a poller.Account, in poller.Inbound) error
	Process(ctx context.Context, a poller.Account) error
	Refresh(ctx context.Context, a poller.Account) error
}

// Lifecycler acts on verified lifecycle notifications (*Manager).
type Lifecycler interface {
	Lifecycle(ctx context.Context, id presence.UserID, event string) error
}

// WebhookOptions configure a Webhook.
type WebhookOptions struct {
	Store   poller.Store
	Engine  Recorder
	Keys    *KeyRing
	Manager Lifecycler
	// Tokens checks the validationTokens of a batch when it carries them;
	// nil skips the check (tests of other parts).
	Tokens *TokenValidator
	// Budget; default DefaultBudget.
	Budget time.Duration
	// Workers open and publish received notifications after the answer;
	// default 4 × GOMAXPROCS (they wait on the store and Service Bus as
	// much as they decrypt).
	Workers int
	Logger  *slog.Logger
}

// Webhook is the http.Handler of POST /notifications (SPEC §9). It echoes
// a validation token; otherwise it checks the batch's validation tokens,
// then each notification: its subscription is the person's current one
// (or the one being created), its clientState matches and its certificate
// id is one of the key ring's. It then stores each notification in the
// person's record as received (poller.Engine.Receive) and answers 202:
// the costly part, RSA decryption, is done after the answer by a pool of
// workers (Engine.Process: decrypt, check the HMAC, apply in sequenceNumber
// order, publish), so that answers stay fast however many notifications
// arrive. A notification without resource data makes the person be read.
// Anything forged changes nothing: refused before it is stored, or
// dropped when opened; it is answered 202 like the rest (or 400 for a
// body that is not a notification collection), never 5xx, and logged once
// per source and reason. Only a store that cannot record a genuine
// notification gets 503, so that Graph delivers it again.
type Webhook struct {
	o   WebhookOptions
	log *slog.Logger

	// stop cancels the workers' context (which only they hold).
	stop context.CancelFunc

	mu     sync.Mutex
	logged map[string]bool

	// The work queue: people to process (or read), each once.
	qmu     sync.Mutex
	qcond   *sync.Cond
	queue   []work
	queued  map[work]bool
	active  int
	closing bool
	workers sync.WaitGroup
}

type work struct {
	id   presence.UserID
	read bool
}

var _ http.Handler = (*Webhook)(nil)

// NewWebhook makes the handler and starts its workers.
func NewWebhook(o WebhookOptions) *Webhook {
	if o.Budget <= 0 {
		o.Budget = DefaultBudget
	}
	if o.Workers <= 0 {
		o.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	h := &Webhook{o: o, log: o.Logger, stop: stop, logged: map[string]bool{}, queued: map[work]bool{}}
	h.qcond = sync.NewCond(&h.qmu)
	for range o.Workers {
		h.workers.Go(func() { h.worker(ctx) })
	}
	return h
}

// Settle waits until every notification received so far was processed
// (or ctx ends).
func (h *Webhook) Settle(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		h.qmu.Lock()
		for (len(h.queue) > 0 || h.active > 0) && !h.closing {
			h.qcond.Wait()
		}
		h.qmu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		h.qmu.Lock()
		h.qcond.Broadcast()
		h.qmu.Unlock()
	}
}

// Close processes what was received, up to ctx's end, then stops the
// workers and waits for them, also up to ctx's end; what is left stays
// received (or pending) in the store, and the next cycle (or process)
// opens and publishes it.
func (h *Webhook) Close(ctx context.Context) {
	h.Settle(ctx)
	h.qmu.Lock()
	h.closing = true
	h.qcond.Broadcast()
	h.qmu.Unlock()
	h.stop()
	done := make(chan struct{})
	go func() {
		h.workers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (h *Webhook) enqueue(a poller.Account, read bool) {
	w := work{id: a.UserID, read: read}
	h.qmu.Lock()
	defer h.qmu.Unlock()
	if h.closing || h.queued[w] {
		return
	}
	h.queued[w] = true
	h.queue = append(h.queue, w)
	h.qcond.Broadcast()
}

func (h *Webhook) worker(ctx context.Context) {
	for {
		h.qmu.Lock()
		for len(h.queue) == 0 && !h.closing {
			h.qcond.Wait()
		}
		if h.closing {
			h.qmu.Unlock()
			return
		}
		w := h.queue[0]
		h.queue = h.queue[1:]
		delete(h.queued, w)
		h.active++
		h.qmu.Unlock()
		h.do(ctx, w)
		h.qmu.Lock()
		h.active--
		h.qcond.Broadcast()
		h.qmu.Unlock()
	}
}

func (h *Webhook) do(ctx context.Context, w work) {
	a, err := h.o.Store.Account(ctx, w.id)
	if err != nil {
		return // removed meanwhile
	}
	if w.read {
		_ = h.o.Engine.Refresh(ctx, a)
		return
	}
	if err := h.o.Engine.Process(ctx, a); err != nil && ctx.Err() == nil {
		h.log.Warn("received notifications not published yet; the next cycle retries", "user", a.UserID, "err", err)
	}
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if tokens, ok := r.URL.Query()["validationToken"]; ok {
		h.handshake(w, tokens)
		return
	}
	src := source(r)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		h.refuse(src, "body unreadable or too large", err)
		http.Error(w, "not a change-notification collection", http.StatusBadRequest)
		return
	}
	c, err := Parse(body)
	if err != nil {
		h.refuse(src, "not a change-notification collection", err)
		http.Error(w, "not a change-notification collection", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.Budget)
	defer cancel()
	tenants, ok := h.checkTokens(ctx, src, c.ValidationTokens)
	if !ok {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	received := time.Now().UTC()
	process := map[presence.UserID]poller.Account{}
	reads := map[presence.UserID]poller.Account{}
	failed := false
	for _, n := range c.Value {
		if n.LifecycleEvent != "" {
			h.lifecycle(ctx, src, n, reads)
			continue
		}
		a, in, ok, err := h.change(ctx, src, n, tenants, received)
		switch {
		case err != nil:
			failed = true
			h.log.Warn("notification not checked: the store did not answer", "err", err)
		case !ok:
		case in == nil:
			reads[a.UserID] = a
		default:
			if err := h.o.Engine.Receive(ctx, a, *in); err != nil {
				failed = true
				h.log.Warn("notification not stored", "user", a.UserID, "err", err)
				continue
			}
			process[a.UserID] = a
		}
	}
	if failed {
		// Graph delivers the batch again; what was stored is then a
		// duplicate, which changes nothing.
		w.Header().Set("Retry-After", "5")
		http.Error(w, "the notification could not be stored; deliver it again", http.StatusServiceUnavailable)
	} else {
		w.WriteHeader(http.StatusAccepted)
	}
	for _, a := range process {
		h.enqueue(a, false)
	}
	for _, a := range reads {
		h.enqueue(a, true)
	}
}

// handshake answers Graph's validation request: the token, URL-decoded
// (Query does that), as text/plain.
func (h *Webhook) handshake(w http.ResponseWriter, tokens []string) {
	if len(tokens) != 1 || len(tokens[0]) > maxValidationToken {
		http.Error(w, "one validationToken expected", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, tokens[0])
}

// checkTokens validates every token of the batch and returns the tenants
// they vouch for; false when one fails (the whole batch is then ignored).
// A batch without tokens gives nil (not checked).
func (h *Webhook) checkTokens(ctx context.Context, src string, tokens []string) (map[string]bool, bool) {
	if len(tokens) == 0 || h.o.Tokens == nil {
		return nil, true
	}
	tenants := map[string]bool{}
	for _, t := range tokens {
		tid, err := h.o.Tokens.Validate(ctx, t)
		if err != nil {
			h.refuse(src, "validation token refused", err)
			return nil, false
		}
		tenants[tid] = true
	}
	return tenants, true
}

// subscriber finds the person a notification's subscription belongs to
// and checks its clientState.
func (h *Webhook) subscriber(ctx context.Context, id presence.UserID, n Notification) (poller.Account, error) {
	rec, tag, err := h.o.Store.Subscription(ctx, id)
	if err != nil {
		return poller.Account{}, &storeError{err}
	}
	switch {
	case tag == "":
		return poller.Account{}, errUnknownSubscription
	case rec.ID != n.SubscriptionID && rec.ID != "":
		return poller.Account{}, errUnknownSubscription
	case subtle.ConstantTimeCompare([]byte(HashClientState(n.ClientState)), []byte(rec.ClientStateHash)) != 1:
		return poller.Account{}, errClientState
	}
	a, err := h.o.Store.Account(ctx, id)
	switch {
	case errors.Is(err, poller.ErrNotFound):
		return poller.Account{}, errUnknownSubscription
	case err != nil:
		return poller.Account{}, &storeError{err}
	case n.TenantID != "" && !strings.EqualFold(n.TenantID, a.TenantID):
		return poller.Account{}, errUnknownSubscription
	}
	return a, nil
}

// storeError is a store failure while checking a notification: not a
// forgery, so Graph is asked to deliver it again.
type storeError struct{ err error }

func (e *storeError) Error() string { return "notify: store: " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

var (
	errUnknownSubscription = errors.New("notify: unknown subscription")
	errClientState         = errors.New("notify: wrong clientState")
	errTenant              = errors.New("notify: no validation token for the notification's tenant")
)

// change verifies one change notification and returns what to store
// (nil when the person is to be read instead: no resource data), ok false
// when it is refused, or an error when the store could not tell.
func (h *Webhook) change(ctx context.Context, src string, n Notification, tenants map[string]bool, at time.Time) (poller.Account, *poller.Inbound, bool, error) {
	id, err := n.UserID()
	if err != nil {
		h.refuse(src, "not a presence notification", err)
		return poller.Account{}, nil, false, nil
	}
	a, err := h.subscriber(ctx, id, n)
	var se *storeError
	if errors.As(err, &se) {
		return poller.Account{}, nil, false, err
	}
	if err != nil {
		h.refuse(src, "notification refused", err)
		return poller.Account{}, nil, false, nil
	}
	if n.EncryptedContent == nil {
		return a, nil, true, nil
	}
	if tenants != nil && !tenants[strings.ToLower(a.TenantID)] {
		h.refuse(src, "notification refused", errTenant)
		return poller.Account{}, nil, false, nil
	}
	if _, err := h.o.Keys.Get(ctx, n.EncryptedContent.EncryptionCertificateID); errors.Is(err, ErrUnknownKey) {
		h.refuse(src, "notification refused", err)
		return poller.Account{}, nil, false, nil
	} else if err != nil {
		return poller.Account{}, nil, false, err
	}
	content, err := json.Marshal(n.EncryptedContent)
	if err != nil {
		return poller.Account{}, nil, false, nil
	}
	in := &poller.Inbound{ID: n.ID, Content: content, ReceivedAt: at}
	if in.ID == "" {
		sum := sha256.Sum256(content)
		in.ID = base64.RawURLEncoding.EncodeToString(sum[:16])
	}
	return a, in, true, nil
}

// lifecycle verifies a lifecycle notification (it names only its
// subscription) and hands it to the manager; missed makes the person be
// read.
func (h *Webhook) lifecycle(ctx context.Context, src string, n Notification, reads map[presence.UserID]poller.Account) {
	subs, err := h.o.Store.Subscriptions(ctx)
	if err != nil {
		h.log.Warn("lifecycle notification not handled: subscriptions unreadable", "err", err)
		return
	}
	i := slices.IndexFunc(subs, func(s poller.Subscription) bool { return s.ID != "" && s.ID == n.SubscriptionID })
	if i < 0 {
		h.refuse(src, "lifecycle notification refused", errUnknownSubscription)
		return
	}
	a, err := h.subscriber(ctx, subs[i].UserID, n)
	if err != nil {
		h.refuse(src, "lifecycle notification refused", err)
		return
	}
	h.log.Info("lifecycle notification", "user", a.UserID, "event", clip(n.LifecycleEvent, 40))
	if n.LifecycleEvent == EventMissed {
		reads[a.UserID] = a
		return
	}
	if h.o.Manager != nil {
		if err := h.o.Manager.Lifecycle(ctx, a.UserID, n.LifecycleEvent); err != nil {
			h.log.Warn("lifecycle notification not recorded", "user", a.UserID, "err", err)
		}
	}
}

// refuse logs a refused request or notification once per source and
// reason.
func (h *Webhook) refuse(src, what string, err error) {
	key := src + "\x00" + what + "\x00" + err.Error()
	h.mu.Lock()
	seen := h.logged[key]
	if !seen && len(h.logged) < maxSources {
		h.logged[key] = true
	}
	h.mu.Unlock()
	if !seen {
		h.log.Warn("notification refused; it changes nothing", "what", what, "source", src, "err", err)
	}
}

// source is the request's peer address (the reverse proxy's, behind one).
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
