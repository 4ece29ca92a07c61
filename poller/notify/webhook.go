package notify

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
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
	Notified(ctx context.Context, a poller.Account, u presence.Update) (bool, error)
	Publish(ctx context.Context, a poller.Account) error
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
	Logger *slog.Logger
}

// Webhook is the http.Handler of POST /notifications (SPEC §9). It echoes
// a validation token; otherwise it checks the batch's validation tokens,
// then each notification: its subscription is the person's current one
// (or the one being created) and its clientState matches, its data decrypts
// with the key its certificate id names and is about that person. The
// changes are recorded in the store (ordered by sequenceNumber within the
// batch) before it answers 202; then they are published. A notification
// without a sequenceNumber, or without resource data, makes the person be
// read instead (its order cannot be told). Anything forged changes nothing,
// is answered 202 like the rest (or 400 for a body that is not a
// notification collection), never 5xx, and is logged once per source and
// reason. Only a store that cannot record a genuine change gets 503, so
// that Graph delivers it again.
type Webhook struct {
	o   WebhookOptions
	log *slog.Logger

	bg     context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	logged map[string]bool
}

var _ http.Handler = (*Webhook)(nil)

// NewWebhook makes the handler.
func NewWebhook(o WebhookOptions) *Webhook {
	if o.Budget <= 0 {
		o.Budget = DefaultBudget
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	bg, stop := context.WithCancel(context.Background())
	return &Webhook{o: o, log: o.Logger, bg: bg, stop: stop, logged: map[string]bool{}}
}

// Close waits for the publishes started after answering, up to ctx's end
// (each is bounded by the engine's grace: a publish cut short stays
// pending for the next cycle).
func (h *Webhook) Close(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		h.stop()
		<-done
	}
}

// item is one verified change.
type item struct {
	a poller.Account
	u presence.Update
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
	var changes []item
	reads := map[presence.UserID]poller.Account{}
	for _, n := range c.Value {
		if n.LifecycleEvent != "" {
			h.lifecycle(ctx, src, n, reads)
			continue
		}
		it, read, ok := h.change(ctx, src, n, tenants)
		switch {
		case !ok:
		case read:
			reads[it.a.UserID] = it.a
		default:
			changes = append(changes, it)
		}
	}
	// Oldest first within the batch, per person: a batch delivered in
	// another order publishes in Graph's order.
	slices.SortStableFunc(changes, func(x, y item) int {
		if x.u.UserID != y.u.UserID {
			return strings.Compare(string(x.u.UserID), string(y.u.UserID))
		}
		return -presence.Compare(presence.Update{Sequence: x.u.Sequence}, presence.Update{Sequence: y.u.Sequence})
	})
	publish := map[presence.UserID]poller.Account{}
	failed := false
	for _, it := range changes {
		recorded, err := h.o.Engine.Notified(ctx, it.a, it.u)
		if err != nil {
			failed = true
			h.log.Warn("notified presence not recorded", "user", it.a.UserID, "err", err)
			continue
		}
		if recorded {
			publish[it.a.UserID] = it.a
		}
	}
	if failed {
		// Graph delivers the batch again; what was recorded is then a
		// duplicate, which changes nothing.
		w.Header().Set("Retry-After", "5")
		http.Error(w, "the change could not be recorded; deliver it again", http.StatusServiceUnavailable)
	} else {
		w.WriteHeader(http.StatusAccepted)
	}
	for _, a := range publish {
		h.background(func(ctx context.Context) {
			if err := h.o.Engine.Publish(ctx, a); err != nil {
				h.log.Warn("notified presence kept pending", "user", a.UserID, "err", err)
			}
		})
	}
	for _, a := range reads {
		h.background(func(ctx context.Context) { _ = h.o.Engine.Refresh(ctx, a) })
	}
}

func (h *Webhook) background(fn func(context.Context)) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		fn(h.bg)
	}()
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
		return poller.Account{}, err
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
	if errors.Is(err, poller.ErrNotFound) {
		return poller.Account{}, errUnknownSubscription
	}
	if err == nil && n.TenantID != "" && !strings.EqualFold(n.TenantID, a.TenantID) {
		return poller.Account{}, errUnknownSubscription
	}
	return a, err
}

var (
	errUnknownSubscription = errors.New("notify: unknown subscription")
	errClientState         = errors.New("notify: wrong clientState")
	errOtherPerson         = errors.New("notify: the data is about someone else")
	errTenant              = errors.New("notify: no validation token for the notification's tenant")
)

// change verifies and decrypts one change notification. read is set when
// the person is to be read instead (no data, or no sequence number).
func (h *Webhook) change(ctx context.Context, src string, n Notification, tenants map[string]bool) (it item, read, ok bool) {
	id, err := n.UserID()
	if err != nil {
		h.refuse(src, "not a presence notification", err)
		return item{}, false, false
	}
	a, err := h.subscriber(ctx, id, n)
	if err != nil {
		h.refuse(src, "notification refused", err)
		return item{}, false, false
	}
	if n.EncryptedContent == nil {
		return item{a: a}, true, true
	}
	if tenants != nil && !tenants[strings.ToLower(a.TenantID)] {
		h.refuse(src, "notification refused", errTenant)
		return item{}, false, false
	}
	key, err := h.o.Keys.Get(ctx, n.EncryptedContent.EncryptionCertificateID)
	if err != nil {
		h.refuse(src, "notification refused", err)
		return item{}, false, false
	}
	plain, err := key.Decrypt(*n.EncryptedContent)
	if err != nil {
		h.refuse(src, "notification refused", err)
		return item{}, false, false
	}
	u, err := graph.ParsePresence(plain, a.TenantID)
	if err != nil {
		h.refuse(src, "notification refused", err)
		return item{}, false, false
	}
	if u.UserID != a.UserID {
		h.refuse(src, "notification refused", errOtherPerson)
		return item{}, false, false
	}
	if u.Sequence == "" {
		return item{a: a}, true, true
	}
	return item{a: a, u: u}, false, true
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
