package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/functions"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// BenchmarkPollerScale is the poller at internet scale in one process:
// people of app-only tenants whose sizes follow a skewed distribution (a
// few tenants of 5,000+), the fake Graph answering every request after 100
// ms and keeping Graph's limits (650 ids per batch, 1,500 requests per 30 s
// per tenant, 429 beyond), and the Functions deployment played for real:
// the timer invocation (functions.Handler) splits the cycle into work items
// on a session queue of the Service Bus stand-in; K workers, each as a
// Functions instance with its own connection, accept the next session
// (tenant), take its items one by one, invoke presence-work with the
// host's payload and complete or abandon the message.
//
// The store is in memory and the presence messages are counted, not sent
// (100,000 topics are beyond the stand-in; publishing is measured
// elsewhere): the run measures the cycle's orchestration, Graph's latency
// and limits, and the per-person compare-and-swap. Each size first runs
// one cycle in which everyone is new (reported as first-cycle), then, per
// K, 10 % of the people change presence and one cycle is timed: from the
// timer invocation to the last item completed.
//
// It fails when a cycle makes other than Σ⌈Nₜ/650⌉ batch reads, causes a
// 429, or leaves a person unread or unpublished; the 20 s bar (100,000
// people, K = 8) is reported, not enforced.
func BenchmarkPollerScale(b *testing.B) {
	sbtest.Require(b)
	for _, people := range []int{10_000, 50_000, 100_000} {
		ks := []int{8}
		if people == 100_000 {
			ks = []int{1, 2, 4, 8}
		}
		b.Run(fmt.Sprintf("people=%d", people), func(b *testing.B) {
			w := newScaleWorld(b, people, people/100)
			first := w.cycle(b, 8, false)
			b.Logf("%d people, %d tenants (largest %d), %d work items; first cycle (everyone new) with K=8: %.1f s",
				people, len(w.tenants), w.largest(), w.items, first.Seconds())
			for _, k := range ks {
				b.Run(fmt.Sprintf("K=%d", k), func(b *testing.B) {
					var d time.Duration
					for b.Loop() {
						d = w.cycle(b, k, true)
					}
					b.ReportMetric(d.Seconds(), "s/cycle")
					b.ReportMetric(float64(w.items), "items")
					b.ReportMetric(float64(w.lastBatches), "batch-reads")
					b.ReportMetric(float64(w.graph.RateLimited("")), "429s")
					b.ReportMetric(first.Seconds(), "first-cycle-s")
					b.ReportMetric(float64(len(w.tenants)), "tenants")
					b.ReportMetric(float64(w.largest()), "largest-tenant")
				})
			}
		})
	}
}

type scaleWorld struct {
	tenants []scaleTenant
	store   *memScaleStore
	graph   *graphtest.Server
	sb      *sbtest.Broker
	pub     *countingPub
	eng     *poller.Engine
	handler *functions.Handler
	queue   *servicebus.WorkQueue
	items   int // Σ⌈Nₜ/650⌉
	rnd     *rand.Rand
	round   int
	// avail is each person's availability at the fake Graph, so that a
	// change is always a change.
	avail map[presence.UserID]int

	handlerNS, acceptNS, receiveNS atomic.Int64
	firstFailure                   atomic.Value

	lastBatches int
}

type scaleTenant struct {
	id     string
	people []presence.UserID
}

// tenantSizes draws n tenant sizes summing to total: five tenants of
// 5,000–9,800 people when total allows, the rest log-normally distributed
// (most tenants of a few dozen, a long tail of hundreds and thousands).
func tenantSizes(rnd *rand.Rand, n, total int) []int {
	sizes := make([]int, n)
	big := []int{5_200, 6_100, 7_000, 8_400, 9_800}
	used := 0
	nBig := 0
	for i, s := range big {
		if used+s > total/2 || i >= n/10 {
			break
		}
		sizes[i] = s
		used += s
		nBig++
	}
	weights := make([]float64, n-nBig)
	sum := 0.0
	for i := range weights {
		weights[i] = math.Exp(rnd.NormFloat64()*1.3 + 3.5)
		sum += weights[i]
	}
	rest := total - used
	assigned := 0
	for i, wgt := range weights {
		s := max(1, int(math.Round(wgt/sum*float64(rest))))
		sizes[nBig+i] = min(s, 4_000)
		assigned += sizes[nBig+i]
	}
	// Put the rounding difference on the small tenants, one by one.
	for i := nBig; assigned != rest; i = nBig + (i-nBig+1)%(n-nBig) {
		switch {
		case assigned < rest && sizes[i] < 4_000:
			sizes[i]++
			assigned++
		case assigned > rest && sizes[i] > 1:
			sizes[i]--
			assigned--
		}
	}
	return sizes
}

func newScaleWorld(b *testing.B, people, tenants int) *scaleWorld {
	b.Helper()
	w := &scaleWorld{rnd: rand.New(rand.NewPCG(uint64(people), 7)), store: newMemScaleStore(), pub: &countingPub{}, avail: map[presence.UserID]int{}}
	w.graph = graphtest.New(graphtest.Options{Latency: 100 * time.Millisecond})
	b.Cleanup(w.graph.Close)
	w.sb = sbtest.Start(b, sbtest.Options{SessionQueues: []string{"presence-work"}})
	var appOnly []string
	n := 0
	for ti, size := range tenantSizes(w.rnd, tenants, people) {
		t := scaleTenant{id: fmt.Sprintf("%08x-0000-4000-a000-%012x", ti, ti)}
		appOnly = append(appOnly, t.id)
		for range size {
			id := presence.UserID(fmt.Sprintf("%08x-%04x-4000-8000-%012x", n, ti&0xffff, n))
			n++
			t.people = append(t.people, id)
			_ = w.store.PutAccount(context.Background(), poller.Account{UserID: id, TenantID: t.id, Namespace: "ns", Topic: string(id), State: poller.StateActive})
			w.graph.SetPresence(id, graphtest.Presence{Availability: "Available", Activity: "Available"})
		}
		w.items += (len(t.people) + graph.MaxBatch - 1) / graph.MaxBatch
		w.tenants = append(w.tenants, t)
	}
	hc := w.graph.Client()
	tr := hc.Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64 // keep the TLS connections the K workers use
	reader := graph.New(graph.Options{Endpoint: w.graph.URL(), HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}})
	w.eng = poller.New(poller.Options{Store: w.store, Reader: reader, Publisher: w.pub, Tokens: noTokens{}, AppTokens: appTokens{}, AppOnly: appOnly})
	q, err := servicebus.NewWorkQueue(servicebus.WorkQueueOptions{ConnectionString: w.sb.ConnectionString(), Queue: "presence-work"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = q.Close(context.Background()) })
	w.queue = q
	w.handler = functions.New(functions.Options{Engine: w.eng, Queue: q})
	return w
}

func (w *scaleWorld) largest() int {
	m := 0
	for _, t := range w.tenants {
		m = max(m, len(t.people))
	}
	return m
}

// cycle changes 10 % of the people's presence (when change is set), runs
// one timer invocation and K workers until every item is done, checks the
// counts, and returns the time from the timer to the last item.
func (w *scaleWorld) cycle(b *testing.B, k int, change bool) time.Duration {
	b.Helper()
	w.round++
	changed := 0
	if change {
		states := []string{"Available", "Busy", "Away", "DoNotDisturb"}
		for _, t := range w.tenants {
			for _, id := range t.people {
				if w.rnd.IntN(10) == 0 {
					next := (w.avail[id] + 1 + w.rnd.IntN(len(states)-1)) % len(states)
					w.avail[id] = next
					w.graph.SetPresence(id, graphtest.Presence{Availability: states[next], Activity: states[next]})
					changed++
				}
			}
		}
	}
	w.handlerNS.Store(0)
	w.acceptNS.Store(0)
	w.receiveNS.Store(0)
	published0, batches0, limited0 := w.pub.n.Load(), w.graph.Batches(""), w.graph.RateLimited("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	brokerCPU0, selfCPU0 := cpuOf(w.sb.Pid()), selfCPU()
	began := time.Now()
	rec := httptest.NewRecorder()
	w.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/"+functions.TimerFunction, strings.NewReader(`{"Data":{"timer":{"IsPastDue":false}},"Metadata":{}}`)))
	if rec.Code != http.StatusOK {
		b.Fatalf("timer: HTTP %d %s", rec.Code, rec.Body)
	}
	enqueued := time.Since(began)
	var done, failed atomic.Int64
	var read, published atomic.Int64
	var wg sync.WaitGroup
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	for range k {
		client, err := sbtest.NewClient(w.sb.ConnectionString())
		if err != nil {
			b.Fatal(err)
		}
		// Like the Functions host's session processor, each worker accepts
		// its next sessions while it works the current one: one item at a
		// time, two sessions waiting at most.
		ready := make(chan *azservicebus.SessionReceiver, 1)
		wg.Go(func() {
			defer close(ready)
			for workCtx.Err() == nil {
				actx, cancel := context.WithTimeout(workCtx, time.Second)
				t0 := time.Now()
				sr, err := client.AcceptNextSessionForQueue(actx, "presence-work", nil)
				w.acceptNS.Add(int64(time.Since(t0)))
				cancel()
				if err != nil {
					continue // nothing to accept right now
				}
				select {
				case ready <- sr:
				case <-workCtx.Done():
					_ = sr.Close(context.Background())
				}
			}
		})
		wg.Go(func() {
			defer client.Close(context.Background())
			for sr := range ready {
				w.session(workCtx, sr, &done, &failed, &read, &published)
				if done.Load() >= int64(w.items) {
					stopWork()
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(began)
	brokerCPU, ownCPU := cpuOf(w.sb.Pid())-brokerCPU0, selfCPU()-selfCPU0
	if done.Load() < int64(w.items) {
		dead := w.sb.Count(context.Background(), "presence-work", azservicebus.SubQueueDeadLetter)
		b.Fatalf("the cycle did not finish: %d of %d items (%d failed, first: %v; %d dead-lettered)", done.Load(), w.items, failed.Load(), w.firstFailure.Load(), dead)
	}
	batches := w.graph.Batches("") - batches0
	w.lastBatches = batches
	if batches != w.items {
		b.Errorf("%d batch reads, want Σ⌈Nₜ/650⌉ = %d", batches, w.items)
	}
	if n := w.graph.RateLimited("") - limited0; n != 0 {
		b.Errorf("the poller caused %d 429s", n)
	}
	people := 0
	for _, t := range w.tenants {
		people += len(t.people)
	}
	pub := int(w.pub.n.Load() - published0)
	if int(read.Load()) != people || (change && pub != changed) || (!change && pub != people) || failed.Load() != 0 {
		b.Errorf("read %d of %d, published %d (changed %d), %d items failed", read.Load(), people, pub, changed, failed.Load())
	}
	b.Logf("K=%d: %d items in %.2f s (timer %.2f s), %d people read, %d published, %d batch reads, %d 429s; workers' time in presence-work %.1f s, accepting sessions %.1f s, receiving %.1f s; CPU: this process %.1f s, the stand-in %.1f s",
		k, w.items, took.Seconds(), enqueued.Seconds(), read.Load(), pub, batches, w.graph.RateLimited("")-limited0,
		time.Duration(w.handlerNS.Load()).Seconds(), time.Duration(w.acceptNS.Load()).Seconds(), time.Duration(w.receiveNS.Load()).Seconds(),
		ownCPU.Seconds(), brokerCPU.Seconds())
	return took
}

// session is one Functions instance's turn with a session (a tenant):
// invoke presence-work for each of its items (the host's payload, dataType
// binary), complete or abandon, and let the session go once it has nothing
// more for 10 ms (the host's sessionIdleTimeout).
func (w *scaleWorld) session(ctx context.Context, sr *azservicebus.SessionReceiver, done, failed, read, published *atomic.Int64) {
	defer func() { go sr.Close(context.Background()) }()
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		t0 := time.Now()
		msgs, err := sr.ReceiveMessages(rctx, 1, nil)
		w.receiveNS.Add(int64(time.Since(t0)))
		cancel()
		if len(msgs) == 0 || (err != nil && !errors.Is(err, context.DeadlineExceeded)) {
			return
		}
		m := msgs[0]
		payload, _ := json.Marshal(map[string]any{
			"Data":     map[string]any{functions.WorkBinding: base64.StdEncoding.EncodeToString(m.Body)},
			"Metadata": map[string]any{"MessageId": m.MessageID, "SessionId": sr.SessionID(), "DeliveryCount": m.DeliveryCount},
		})
		rec := httptest.NewRecorder()
		t0 = time.Now()
		w.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/"+functions.WorkFunction, bytes.NewReader(payload)))
		w.handlerNS.Add(int64(time.Since(t0)))
		if rec.Code != http.StatusOK {
			if failed.Add(1) == 1 {
				w.firstFailure.Store(rec.Body.String())
			}
			_ = sr.AbandonMessage(ctx, m, nil)
			continue
		}
		var resp struct{ ReturnValue poller.Summary }
		_ = json.Unmarshal(rec.Body.Bytes(), &resp)
		read.Add(int64(resp.ReturnValue.Read))
		published.Add(int64(resp.ReturnValue.Published))
		if err := sr.CompleteMessage(ctx, m, nil); err == nil {
			done.Add(1)
		}
	}
}

// cpuOf is a process's user and system CPU time (Linux /proc; 0 when it
// cannot be read).
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command (which is in parentheses) are space
	// separated; utime and stime are the 12th and 13th of them.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func selfCPU() time.Duration { return cpuOf(os.Getpid()) }

type appTokens struct{}

// AppToken is what graphtest's default authorizer takes as an app token.
func (appTokens) AppToken(_ context.Context, tenant string) (string, error) {
	return "app." + tenant, nil
}

type noTokens struct{}

func (noTokens) Token(context.Context, poller.Account) (string, error) {
	return "", errors.New("app-only tenants only")
}

type countingPub struct{ n atomic.Int64 }

func (p *countingPub) Publish(context.Context, string, string, poller.Message) error {
	p.n.Add(1)
	return nil
}

// memScaleStore is a poller.Store in memory for many people: sharded
// maps, records copied in and out.
type memScaleStore struct {
	shards [64]scaleShard
}

type scaleShard struct {
	mu       sync.Mutex
	accounts map[presence.UserID]poller.Account
	caches   map[presence.UserID][]byte
	pres     map[presence.UserID]scaleRec
}

type scaleRec struct {
	rec poller.PresenceRecord
	tag int
}

func newMemScaleStore() *memScaleStore {
	s := &memScaleStore{}
	for i := range s.shards {
		s.shards[i] = scaleShard{accounts: map[presence.UserID]poller.Account{}, caches: map[presence.UserID][]byte{}, pres: map[presence.UserID]scaleRec{}}
	}
	return s
}

func (s *memScaleStore) shard(id presence.UserID) *scaleShard {
	h := 0
	for i := 0; i < len(id); i++ {
		h = h*31 + int(id[i])
	}
	return &s.shards[uint(h)%uint(len(s.shards))]
}

func (s *memScaleStore) Accounts(context.Context) ([]poller.Account, error) {
	var out []poller.Account
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, a := range sh.accounts {
			out = append(out, a)
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b poller.Account) int { return strings.Compare(string(a.UserID), string(b.UserID)) })
	return out, nil
}

func (s *memScaleStore) Account(_ context.Context, id presence.UserID) (poller.Account, error) {
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	a, ok := sh.accounts[id]
	if !ok {
		return a, poller.ErrNotFound
	}
	return a, nil
}

func (s *memScaleStore) PutAccount(_ context.Context, a poller.Account) error {
	sh := s.shard(a.UserID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.accounts[a.UserID] = a
	return nil
}

func (s *memScaleStore) DeleteAccount(_ context.Context, id presence.UserID) error {
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.accounts[id]; !ok {
		return poller.ErrNotFound
	}
	delete(sh.accounts, id)
	delete(sh.caches, id)
	delete(sh.pres, id)
	return nil
}

func (s *memScaleStore) TokenCache(_ context.Context, id presence.UserID) ([]byte, error) {
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return slices.Clone(sh.caches[id]), nil
}

func (s *memScaleStore) PutTokenCache(_ context.Context, id presence.UserID, b []byte) error {
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.caches[id] = slices.Clone(b)
	return nil
}

func (s *memScaleStore) Presence(_ context.Context, id presence.UserID) (poller.PresenceRecord, poller.ETag, error) {
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.pres[id]
	if !ok {
		return poller.PresenceRecord{}, "", nil
	}
	rec := r.rec
	rec.Pending = slices.Clone(rec.Pending)
	return rec, poller.ETag(fmt.Sprint(r.tag)), nil
}

func (s *memScaleStore) PutPresence(_ context.Context, id presence.UserID, rec poller.PresenceRecord, ifMatch poller.ETag) (poller.ETag, error) {
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.pres[id]
	if (ok && poller.ETag(fmt.Sprint(r.tag)) != ifMatch) || (!ok && ifMatch != "") {
		return "", poller.ErrConflict
	}
	rec.Pending = slices.Clone(rec.Pending)
	sh.pres[id] = scaleRec{rec: rec, tag: r.tag + 1}
	return poller.ETag(fmt.Sprint(r.tag + 1)), nil
}

// The scale simulation has no change notifications (app-only tenants cannot
// subscribe): no subscriptions, no key ring.
func (s *memScaleStore) Subscriptions(context.Context) ([]poller.Subscription, error) {
	return nil, nil
}

func (s *memScaleStore) Subscription(context.Context, presence.UserID) (poller.Subscription, poller.ETag, error) {
	return poller.Subscription{}, "", nil
}

func (s *memScaleStore) PutSubscription(context.Context, presence.UserID, poller.Subscription, poller.ETag) (poller.ETag, error) {
	return "", errors.New("the scale simulation keeps no subscriptions")
}

func (s *memScaleStore) KeyRing(context.Context) ([]byte, poller.ETag, error) { return nil, "", nil }

func (s *memScaleStore) PutKeyRing(context.Context, []byte, poller.ETag) (poller.ETag, error) {
	return "", errors.New("the scale simulation keeps no key ring")
}
