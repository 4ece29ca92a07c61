package graph

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/presence"
)

// echo is a webhook that answers Graph's validation request as it must.
func echo(t *testing.T, delay time.Duration) (*httptest.Server, *atomic.Int64) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		tok := r.URL.Query().Get("validationToken")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, tok)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func testCert(t *testing.T, bits int) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newSub(url string, cert []byte) NewSubscription {
	return NewSubscription{
		Resource: PresenceResource(alex), ChangeType: "updated", NotificationURL: url, LifecycleURL: url,
		ExpiresAt: time.Now().Add(50 * time.Minute), ClientState: "state-0123", IncludeResourceData: true,
		Certificate: cert, CertificateID: "key-1",
	}
}

// TestSubscriptionLifecycleAgainstFake: create (after the fake validated
// the webhook once for both URLs), renew with a new certificate, reauthorize,
// delete; a lapsed subscription is ErrSubscriptionNotFound.
func TestSubscriptionLifecycleAgainstFake(t *testing.T) {
	g := graphtest.New(graphtest.Options{})
	defer g.Close()
	hook, calls := echo(t, 0)
	c := NewSubscriptions(SubscriptionsOptions{Endpoint: g.URL(), HTTPClient: g.Client()})
	tok := string(alex) + "." + tenantA
	ctx := t.Context()
	cert := testCert(t, 2048)
	info, err := c.Create(ctx, tenantA, tok, newSub(hook.URL+"/notifications", cert))
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 {
		t.Errorf("the webhook was validated %d times, want once (one URL for both)", calls.Load())
	}
	sub, ok := g.SubscriptionOf(alex)
	if !ok || sub.ID != info.ID || sub.CertificateID != "key-1" || sub.ClientState != "state-0123" || !sub.ExpiresAt.Equal(info.ExpiresAt) {
		t.Fatalf("fake has %+v (%v), client got %+v", sub, ok, info)
	}
	if _, err := c.Create(ctx, tenantA, tok, newSub(hook.URL+"/notifications", cert)); err == nil {
		t.Error("a second presence subscription of the same person was accepted")
	}
	later := time.Now().Add(59 * time.Minute)
	info2, err := c.Renew(ctx, tenantA, tok, info.ID, later, testCert(t, 2048), "key-2")
	if err != nil || info2.ID != info.ID || info2.ExpiresAt.Sub(later).Abs() > time.Millisecond {
		t.Fatalf("renew: %+v %v", info2, err)
	}
	if sub, _ := g.SubscriptionOf(alex); sub.CertificateID != "key-2" {
		t.Errorf("renew did not move the certificate: %s", sub.CertificateID)
	}
	if err := c.Reauthorize(ctx, tenantA, tok, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Renew(ctx, tenantA, tok, info.ID, time.Now().Add(2*time.Hour), nil, ""); err == nil {
		t.Error("a renewal past 60 minutes was accepted")
	}
	if err := c.Delete(ctx, tenantA, tok, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, tenantA, tok, info.ID); !errors.Is(err, ErrSubscriptionNotFound) {
		t.Errorf("deleting twice: %v", err)
	}
	info, err = c.Create(ctx, tenantA, tok, newSub(hook.URL+"/notifications", cert))
	if err != nil {
		t.Fatal(err)
	}
	g.Expire(info.ID)
	if _, err := c.Renew(ctx, tenantA, tok, info.ID, later, nil, ""); !errors.Is(err, ErrSubscriptionNotFound) {
		t.Errorf("renewing a lapsed subscription: %v, want ErrSubscriptionNotFound", err)
	}
	if g.Writes("create") != 3 || g.Writes("renew") != 3 || g.Writes("delete") != 2 || g.Writes("reauthorize") != 1 {
		t.Errorf("writes counted: create %d renew %d delete %d reauthorize %d", g.Writes("create"), g.Writes("renew"), g.Writes("delete"), g.Writes("reauthorize"))
	}
}

// TestHandshakeFailuresRefuseTheSubscription: the fake, like Graph, refuses
// a subscription whose webhook does not answer 200, answers the wrong text,
// or answers later than the validation timeout.
func TestHandshakeFailuresRefuseTheSubscription(t *testing.T) {
	g := graphtest.New(graphtest.Options{ValidationTimeout: 300 * time.Millisecond})
	defer g.Close()
	c := NewSubscriptions(SubscriptionsOptions{Endpoint: g.URL(), HTTPClient: g.Client()})
	tok := string(alex) + "." + tenantA
	cert := testCert(t, 2048)
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	wrong := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "not the token")
	}))
	defer wrong.Close()
	slow, _ := echo(t, 2*time.Second)
	for name, url := range map[string]string{"404": notFound.URL, "wrong text": wrong.URL, "slow": slow.URL, "unreachable": "http://127.0.0.1:1/notifications"} {
		t.Run(name, func(t *testing.T) {
			_, err := c.Create(t.Context(), tenantA, tok, newSub(url, cert))
			var se *SubscriptionError
			if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
				t.Fatalf("create: %v, want a 400 SubscriptionError", err)
			}
		})
	}
	if len(g.Subscriptions()) != 0 {
		t.Error("a subscription was made without a validated webhook")
	}
	if _, err := c.Create(t.Context(), tenantA, tok, newSub("https://example.invalid/n", testCert(t, 1024))); err == nil {
		t.Error("a 1024-bit certificate was accepted")
	}
}

// TestSubscriptionWritesArePaced: at most Budget writes per Window per
// tenant reach Graph; another tenant is not held up.
func TestSubscriptionWritesArePaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		perTenant := map[string][]time.Time{}
		c := NewSubscriptions(SubscriptionsOptions{Budget: 5, Window: 20 * time.Second, HTTPClient: &http.Client{Transport: roundTripper(func(r *http.Request) *http.Response {
			mu.Lock()
			ten := r.Header.Get("Authorization")
			perTenant[ten] = append(perTenant[ten], time.Now())
			mu.Unlock()
			return reply(200, `{"id":"s","expirationDateTime":"2026-12-03T11:00:00Z"}`)
		})}})
		began := time.Now()
		var wg sync.WaitGroup
		for range 12 {
			wg.Go(func() {
				if _, err := c.Renew(t.Context(), tenantA, "a", "s", time.Now().Add(time.Hour), nil, ""); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Go(func() {
			if _, err := c.Renew(t.Context(), tenantB, "b", "s", time.Now().Add(time.Hour), nil, ""); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		if took := time.Since(began); took != 40*time.Second {
			t.Errorf("12 writes at 5 per 20 s took %v, want 40s", took)
		}
		if b := perTenant["Bearer b"]; len(b) != 1 || !b[0].Equal(began) {
			t.Errorf("tenant B's write waited for tenant A's budget: %v", b)
		}
	})
}

// TestParsePresence reads the resource data of a rich notification.
func TestParsePresence(t *testing.T) {
	u, err := ParsePresence([]byte(`{"@odata.type":"#microsoft.graph.presence","id":"`+string(alex)+`","availability":"Busy","activity":"InACall","sequenceNumber":"7"}`), tenantA)
	if err != nil || u.UserID != alex || u.Availability != presence.AvailabilityBusy || u.Activity != presence.ActivityInACall || u.Sequence != "7" {
		t.Fatalf("%+v %v", u, err)
	}
	if _, err := ParsePresence([]byte(`{"id":"nope"}`), tenantA); err == nil {
		t.Error("a presence without a valid id was accepted")
	}
}
