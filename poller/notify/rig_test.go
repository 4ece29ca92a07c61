package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/notify"
	"github.com/presence-bridge/presence-bridge/presence"
)

func person(i int) presence.UserID {
	return presence.UserID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
}

// tokens hands out "<objectId>.<tenantId>", which the fake Graph accepts
// as that person's token; revoked people need to sign in again.
type tokens struct {
	mu      sync.Mutex
	revoked map[presence.UserID]bool
}

func (t *tokens) Token(_ context.Context, a poller.Account) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.revoked[a.UserID] {
		return "", poller.ErrSignInRequired
	}
	return string(a.UserID) + "." + a.TenantID, nil
}

// publisher records what Service Bus accepted and signals each message.
type publisher struct {
	mu  sync.Mutex
	got []poller.Message
	ch  chan poller.Message
}

func newPublisher() *publisher { return &publisher{ch: make(chan poller.Message, 1024)} }

func (p *publisher) Publish(ctx context.Context, ns, topic string, m poller.Message) error {
	p.mu.Lock()
	p.got = append(p.got, m)
	p.mu.Unlock()
	select {
	case p.ch <- m:
	default:
	}
	return nil
}

func (p *publisher) messages() []poller.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// next waits for the next published message (up to 10 s).
func (p *publisher) next(t *testing.T) presence.Update {
	t.Helper()
	select {
	case m := <-p.ch:
		u, err := presence.Decode(m.Body, presence.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("nothing was published within 10 s")
		return presence.Update{}
	}
}

// rig is the notification side of a poller wired to the fake Graph (over
// HTTPS) and the fake Entra's signing keys, the webhook served on loopback.
type rig struct {
	entra   *entratest.Server
	graph   *graphtest.Server
	store   *memStore
	tok     *tokens
	pub     *publisher
	engine  *poller.Engine
	keys    *notify.KeyRing
	manager *notify.Manager
	hook    *notify.Webhook
	srv     *httptest.Server
	logs    *safebuf.Buffer
	// breakHandshake makes the webhook answer validation requests 502.
	breakHandshake chan bool
	// divert, when set, gets the webhook's requests instead.
	mu     sync.Mutex
	divert http.Handler
}

type rigOptions struct {
	people []presence.UserID
	delay  time.Duration // fake Graph's notification delay (0: at once)
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{store: newMemStore(), tok: &tokens{revoked: map[presence.UserID]bool{}}, pub: newPublisher(), logs: &safebuf.Buffer{}}
	r.entra = entratest.New(entratest.Options{ClientID: clientID})
	t.Cleanup(r.entra.Close)
	delay := o.delay
	if delay == 0 {
		delay = -1
	}
	r.graph = graphtest.New(graphtest.Options{NotificationDelay: delay, ValidationToken: r.entra.ChangeNotificationToken, ValidationTimeout: 2 * time.Second})
	t.Cleanup(r.graph.Close)
	logger := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, id := range o.people {
		if err := r.store.PutAccount(t.Context(), poller.Account{UserID: id, TenantID: tenantA, UPN: "p@contoso.com", Namespace: "ns", Topic: string(id), State: poller.StateActive}); err != nil {
			t.Fatal(err)
		}
		r.graph.SetPresence(id, graphtest.Presence{Availability: "Available", Activity: "Available"})
	}
	r.keys = newRing(t, r.store, notify.KeyRingOptions{})
	r.breakHandshake = make(chan bool, 1)
	broken := false
	var mu sync.Mutex
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		select {
		case broken = <-r.breakHandshake:
		default:
		}
		b := broken
		mu.Unlock()
		r.mu.Lock()
		d := r.divert
		r.mu.Unlock()
		if d != nil {
			d.ServeHTTP(w, req)
			return
		}
		if b && req.URL.Query().Has("validationToken") {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		r.hook.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	reader := graph.New(graph.Options{Endpoint: r.graph.URL(), HTTPClient: r.graph.Client()})
	r.engine = poller.New(poller.Options{Store: r.store, Reader: reader, Publisher: r.pub, Tokens: r.tok, Heartbeat: 15 * time.Minute, Logger: logger, Open: r.keys.Open})
	r.manager = notify.NewManager(notify.ManagerOptions{
		Store: r.store, API: graph.NewSubscriptions(graph.SubscriptionsOptions{Endpoint: r.graph.URL(), HTTPClient: r.graph.Client()}),
		Tokens: r.tok, Keys: r.keys, NotificationURL: r.srv.URL + "/notifications", Logger: logger,
	})
	r.hook = notify.NewWebhook(notify.WebhookOptions{
		Store: r.store, Engine: r.engine, Keys: r.keys, Manager: r.manager, Logger: logger,
		Tokens: notify.NewTokenValidator(notify.TokenValidatorOptions{KeysURL: notify.KeysURL(r.entra.Authority("organizations")), ClientID: clientID, HTTPClient: r.entra.Client()}),
	})
	t.Cleanup(func() { r.hook.Close(context.Background()) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", r.logs.String())
		}
	})
	return r
}

func (r *rig) tick(t *testing.T) notify.TickSummary {
	t.Helper()
	s, err := r.manager.Tick(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (r *rig) post(t *testing.T, body any) int {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(r.srv.URL+"/notifications", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (r *rig) subscription(t *testing.T, id presence.UserID) poller.Subscription {
	t.Helper()
	s, _, err := r.store.Subscription(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (r *rig) account(t *testing.T, id presence.UserID) poller.Account {
	t.Helper()
	a, err := r.store.Account(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// settle waits until the webhook processed what it received.
func (r *rig) settle() {
	r.hook.Settle(context.Background())
}

func (r *rig) srvDivert(h http.Handler) {
	r.mu.Lock()
	r.divert = h
	r.mu.Unlock()
}
