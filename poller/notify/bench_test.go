package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/boltstore"
	"github.com/presence-bridge/presence-bridge/poller/notify"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// timedPublisher is the real Service Bus publisher, noting when each
// message was accepted.
type timedPublisher struct {
	poller.Publisher
	mu      sync.Mutex
	waiters map[presence.UserID]chan time.Time
}

func (p *timedPublisher) Publish(ctx context.Context, ns, topic string, m poller.Message) error {
	if err := p.Publisher.Publish(ctx, ns, topic, m); err != nil {
		return err
	}
	at := time.Now()
	p.mu.Lock()
	ch := p.waiters[presence.UserID(m.UserID)]
	p.mu.Unlock()
	if ch != nil {
		ch <- at
	}
	return nil
}

// benchRig is the notification path as serve wires it, on the real
// embedded store and the Service Bus stand-in: people with subscriptions,
// the webhook on loopback, the validation tokens checked.
type benchRig struct {
	entra  *entratest.Server
	store  *boltstore.Store
	key    *notify.Key
	pub    *timedPublisher
	raw    *servicebus.Publisher
	ns     string
	hook   *notify.Webhook
	srv    *httptest.Server
	client *http.Client
	people []presence.UserID
}

func newBenchRig(b *testing.B, n int) *benchRig {
	b.Helper()
	r := &benchRig{}
	for i := range n {
		r.people = append(r.people, person(i+1))
	}
	var topics []string
	for _, id := range r.people {
		topics = append(topics, string(id))
	}
	sb := sbtest.Start(b, sbtest.Options{Topics: topics})
	cs, err := servicebus.ParseConnectionString(sb.ConnectionString())
	if err != nil {
		b.Fatal(err)
	}
	r.ns = cs.Host
	r.raw, err = servicebus.NewPublisher(servicebus.PublisherOptions{ConnectionStrings: []string{sb.ConnectionString()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.raw.Close(context.Background()) })
	r.pub = &timedPublisher{Publisher: r.raw, waiters: map[presence.UserID]chan time.Time{}}
	if r.store, err = boltstore.Open(b.TempDir(), time.Second); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.store.Close() })
	ring := newRing(b, r.store, notify.KeyRingOptions{})
	if r.key, err = ring.Current(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i, id := range r.people {
		if err := r.store.PutAccount(ctx, poller.Account{UserID: id, TenantID: tenantA, Namespace: r.ns, Topic: string(id), State: poller.StateActive}); err != nil {
			b.Fatal(err)
		}
		sub := poller.Subscription{UserID: id, TenantID: tenantA, ID: fmt.Sprintf("sub-%d", i), ClientStateHash: notify.HashClientState(fmt.Sprintf("state-%d", i)),
			CertificateID: r.key.ID, ExpiresAt: time.Now().Add(time.Hour)}
		if _, err := r.store.PutSubscription(ctx, id, sub, ""); err != nil {
			b.Fatal(err)
		}
	}
	r.entra = entratest.New(entratest.Options{ClientID: clientID})
	b.Cleanup(r.entra.Close)
	engine := poller.New(poller.Options{Store: r.store, Reader: nopReader{}, Publisher: r.pub, Tokens: &tokens{}, Open: ring.Open})
	r.hook = notify.NewWebhook(notify.WebhookOptions{Store: r.store, Engine: engine, Keys: ring,
		Tokens: notify.NewTokenValidator(notify.TokenValidatorOptions{KeysURL: notify.KeysURL(r.entra.Authority("organizations")), ClientID: clientID, HTTPClient: r.entra.Client()})})
	r.srv = httptest.NewServer(r.hook)
	b.Cleanup(r.srv.Close)
	b.Cleanup(func() { r.hook.Close(context.Background()) })
	r.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 0}}
	return r
}

// notification is what Graph would POST for person i's presence with
// sequence seq (encrypted, with a validation token).
func (r *benchRig) notification(b *testing.B, i, seq int, token string) []byte {
	id := r.people[i]
	avail := []string{"Busy", "Available"}[seq%2]
	data, _ := json.Marshal(map[string]any{"id": string(id), "availability": avail, "activity": avail, "sequenceNumber": fmt.Sprintf("%012d", seq)})
	enc, err := graphtest.Encrypt(r.key.Certificate, r.key.ID, data)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"value": []any{map[string]any{
		"subscriptionId": fmt.Sprintf("sub-%d", i), "clientState": fmt.Sprintf("state-%d", i), "changeType": "updated", "tenantId": tenantA,
		"resource": "communications/presences('" + string(id) + "')", "resourceData": map[string]any{"id": string(id)}, "encryptedContent": enc,
	}}, "validationTokens": []string{token}})
	return body
}

func (r *benchRig) post(body []byte) (int, error) {
	resp, err := r.client.Post(r.srv.URL+"/notifications", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkNotificationToServiceBus: one rich notification at a time, from
// the webhook receiving it to Service Bus (the stand-in) accepting its
// message: validation token, clientState, decryption, the store write
// before the 202, the publish after. Beside it, in the same run, the
// stand-in's own hop: the same publisher sending straight to it.
func BenchmarkNotificationToServiceBus(b *testing.B) {
	r := newBenchRig(b, 1)
	token := r.entra.ChangeNotificationToken(tenantA)
	ch := make(chan time.Time, 1)
	r.pub.waiters[r.people[0]] = ch
	var e2e, answer, hop []time.Duration
	seq := 0
	for b.Loop() {
		b.StopTimer()
		seq++
		body := r.notification(b, 0, seq, token)
		b.StartTimer()
		began := time.Now()
		code, err := r.post(body)
		answered := time.Now()
		if err != nil || code != http.StatusAccepted {
			b.Fatalf("answer %d %v", code, err)
		}
		select {
		case at := <-ch:
			e2e = append(e2e, at.Sub(began))
			answer = append(answer, answered.Sub(began))
		case <-time.After(10 * time.Second):
			b.Fatal("not published")
		}
		b.StopTimer()
		m := poller.Message{ID: fmt.Sprintf("hop-%d", seq), Body: []byte(`{}`), UserID: string(r.people[0])}
		t0 := time.Now()
		if err := r.raw.Publish(context.Background(), r.ns, string(r.people[0]), m); err != nil {
			b.Fatal(err)
		}
		hop = append(hop, time.Since(t0))
		b.StartTimer()
	}
	b.ReportMetric(ms(percentile(e2e, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(e2e, 0.99)), "p99-ms")
	b.ReportMetric(ms(percentile(answer, 0.5)), "answer-p50-ms")
	b.ReportMetric(ms(percentile(answer, 0.99)), "answer-p99-ms")
	b.ReportMetric(ms(percentile(hop, 0.5)), "standin-hop-p50-ms")
	b.ReportMetric(ms(percentile(hop, 0.99)), "standin-hop-p99-ms")
}

// BenchmarkWebhook1000PerSecond: 1,000 people, one notification each per
// second, sent open-loop (a request every millisecond whatever the answers
// do) for 10 seconds; every answer's time is measured. An op is the whole
// run, until every notification was opened and published to the stand-in
// (published/s: notifications over that time).
func BenchmarkWebhook1000PerSecond(b *testing.B) {
	const people, rate, seconds = 1000, 1000, 10
	r := newBenchRig(b, people)
	token := r.entra.ChangeNotificationToken(tenantA)
	total := rate * seconds
	bodies := make([][]byte, total)
	for i := range bodies {
		bodies[i] = r.notification(b, i%people, i/people+1, token)
	}
	var mu sync.Mutex
	var answers []time.Duration
	var failed, slow int
	for b.Loop() {
		answers, failed, slow = nil, 0, 0
		var wg sync.WaitGroup
		began := time.Now()
		var sent time.Duration
		for i := range total {
			// Open loop by the clock: a late sender catches up at once
			// rather than skipping requests (as a ticker would).
			if wait := time.Until(began.Add(time.Duration(i) * time.Second / rate)); wait > 0 {
				time.Sleep(wait)
			}
			wg.Go(func() {
				t0 := time.Now()
				code, err := r.post(bodies[i])
				d := time.Since(t0)
				mu.Lock()
				answers = append(answers, d)
				if err != nil || code != http.StatusAccepted {
					failed++
				}
				if d > 3*time.Second {
					slow++
				}
				mu.Unlock()
			})
		}
		sent = time.Since(began)
		wg.Wait()
		b.ReportMetric(float64(total)/sent.Seconds(), "sent/s")
		r.hook.Settle(context.Background())
		b.ReportMetric(float64(total)/time.Since(began).Seconds(), "published/s")
	}
	b.ReportMetric(ms(percentile(answers, 0.5)), "answer-p50-ms")
	b.ReportMetric(ms(percentile(answers, 0.99)), "answer-p99-ms")
	b.ReportMetric(ms(percentile(answers, 1)), "answer-max-ms")
	b.ReportMetric(float64(slow), "answers-over-3s")
	b.ReportMetric(float64(failed), "not-202")
}
