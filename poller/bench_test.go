package poller_test

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/boltstore"
	"github.com/presence-bridge/presence-bridge/poller/signin"
	"github.com/presence-bridge/presence-bridge/presence"
)

const benchClient = "00000000-1111-2222-3333-444444444444"

var benchKey = []byte("0123456789abcdef0123456789abcdef")

// countingStore counts writes.
type countingStore struct {
	poller.Store
	writes atomic.Int64
}

func (s *countingStore) PutPresence(ctx context.Context, id presence.UserID, r poller.PresenceRecord, tag poller.ETag) (poller.ETag, error) {
	s.writes.Add(1)
	return s.Store.PutPresence(ctx, id, r, tag)
}

func (s *countingStore) PutAccount(ctx context.Context, a poller.Account) error {
	s.writes.Add(1)
	return s.Store.PutAccount(ctx, a)
}

func (s *countingStore) PutTokenCache(ctx context.Context, id presence.UserID, b []byte) error {
	s.writes.Add(1)
	return s.Store.PutTokenCache(ctx, id, b)
}

type countingPublisher struct{ n atomic.Int64 }

func (p *countingPublisher) Publish(context.Context, string, string, poller.Message) error {
	p.n.Add(1)
	return nil
}

// seed signs n people in through the fake Entra (the real flow: sealed
// cookie, PKCE, MSAL redemption) into the store in dir.
func seed(b *testing.B, dir string, entra *entratest.Server, g *graphtest.Server, n int) {
	b.Helper()
	store, err := boltstore.Open(dir, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	tokens, flow := signinParts(b, entra, store)
	ctx := context.Background()
	for i := range n {
		id := presence.UserID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
		entra.AddPerson(entratest.Person{ObjectID: id, TenantID: "72f988bf-0000-0000-0000-000000000000", Name: "P", UPN: fmt.Sprintf("p%d@contoso.com", i)})
		g.SetPresence(id, graphtest.Presence{Availability: "Available", Activity: "Available"})
		loc, cookie, err := flow.Start(ctx, "")
		if err != nil {
			b.Fatal(err)
		}
		u, _ := url.Parse(loc)
		_, form, err := entra.SignIn(u.Query(), id)
		if err != nil {
			b.Fatal(err)
		}
		ident, err := flow.Finish(ctx, form, cookie)
		if err != nil {
			b.Fatal(err)
		}
		if err := tokens.SaveCache(ctx, id, ident.Cache); err != nil {
			b.Fatal(err)
		}
		if err := store.PutAccount(ctx, poller.Account{UserID: id, TenantID: ident.TenantID, UPN: ident.UPN, HomeAccountID: ident.HomeAccountID,
			Namespace: "ns", Topic: string(id), State: poller.StateActive}); err != nil {
			b.Fatal(err)
		}
	}
}

func signinParts(b *testing.B, entra *entratest.Server, store poller.Store) (*signin.Tokens, *signin.Flow) {
	tokens, err := signin.NewTokens(signin.TokensOptions{Authority: entra.Authority("organizations"), ClientID: benchClient,
		Credential: signin.Credential{Secret: "s"}, Scopes: []string{"Presence.Read.All"}, SecretKey: benchKey, Store: store, HTTPClient: entra.Client()})
	if err != nil {
		b.Fatal(err)
	}
	flow, err := signin.NewFlow(signin.FlowOptions{ClientID: benchClient, RedirectURI: "http://127.0.0.1/auth/end", SecretKey: benchKey, Tokens: tokens})
	if err != nil {
		b.Fatal(err)
	}
	return tokens, flow
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCycle1000 is the poller's steady state with 1,000 signed-in
// people of one tenant and a fake Graph answering in 50 ms: each op is one
// refresh cycle with no change (silent token from each sealed cache, one
// Graph read each inside the tenant's pacing, nothing published, nothing
// written). It reports the first cycle (everyone's first presence
// published), the writes and publishes per no-change cycle, and the heap
// the poller keeps per person.
func BenchmarkCycle1000(b *testing.B) {
	const n = 1000
	entra := entratest.New(entratest.Options{ClientID: benchClient})
	defer entra.Close()
	g := graphtest.New(graphtest.Options{Authorize: entra.AccessTokenOwner})
	defer g.Close()
	dir := b.TempDir()
	seed(b, dir, entra, g, n)
	g.SetLatency(50 * time.Millisecond)

	base := heap()
	bolt, err := boltstore.Open(dir, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer bolt.Close()
	store := &countingStore{Store: bolt}
	tokens, _ := signinParts(b, entra, store)
	pub := &countingPublisher{}
	reader := graph.New(graph.Options{Endpoint: g.URL(), HTTPClient: g.Client()})
	eng := poller.New(poller.Options{Store: store, Reader: reader, Publisher: pub, Tokens: tokens, Heartbeat: time.Hour})
	ctx := context.Background()

	began := time.Now()
	first, err := eng.Cycle(ctx)
	if err != nil || first.Published != n {
		b.Fatalf("first cycle %+v %v", first, err)
	}
	firstTook := time.Since(began)

	// Cycles run poll_interval (30 s) apart, as serve runs them: back to
	// back, 2,000 reads would not fit Graph's 1,500 per 30 s, and the
	// pacing would (rightly) stretch the second cycle.
	last := began
	var writes, published int64
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		time.Sleep(time.Until(last.Add(30 * time.Second)))
		last = time.Now()
		b.StartTimer()
		w0, p0 := store.writes.Load(), pub.n.Load()
		s, err := eng.Cycle(ctx)
		if err != nil || s.Read != n {
			b.Fatalf("cycle %+v %v", s, err)
		}
		writes += store.writes.Load() - w0
		published += pub.n.Load() - p0
	}
	b.StopTimer()
	perPerson := float64(heap()-base) / n
	runtime.KeepAlive(eng)
	b.ReportMetric(float64(firstTook.Milliseconds()), "first-cycle-ms")
	b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
	b.ReportMetric(float64(published)/float64(b.N), "publishes/op")
	b.ReportMetric(perPerson, "heap-B/person")
	b.ReportMetric(float64(g.Requests("72f988bf-0000-0000-0000-000000000000"))/float64(b.N+1), "graph-requests/op")
}
