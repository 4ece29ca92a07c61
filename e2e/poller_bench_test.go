package e2e

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/boltstore"
	"github.com/presence-bridge/presence-bridge/poller/signin"
)

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, string, poller.Message) error { return nil }

// BenchmarkPollerServeRSS1000 measures the built presence-poller serve as a
// process with 1,000 signed-in people: their accounts, sealed token caches
// and last presence are made in-process first (real sign-ins against the
// fake Entra, one cycle), then serve starts on that store, runs its first
// refresh cycle (1,000 silent token acquisitions and Graph reads, nothing
// changed) and its RSS is read from /proc. The op is that first cycle, from
// start to its log line.
func BenchmarkPollerServeRSS1000(b *testing.B) {
	requirePoller(b)
	const n = 1000
	const clientID = "00000000-1111-2222-3333-444444444444"
	secret := []byte("0123456789abcdef0123456789abcdef")
	entra := entratest.New(entratest.Options{ClientID: clientID})
	defer entra.Close()
	g := graphtest.New(graphtest.Options{Authorize: entra.AccessTokenOwner})
	defer g.Close()
	dataDir := filepath.Join(b.TempDir(), "data")
	seedPoller(b, dataDir, entra, g, clientID, secret, n)

	var rss, hwm []int
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		p := startPoller(b, ctx, fmt.Sprintf(`
log_level: debug
listen: 127.0.0.1:0
public_url: http://127.0.0.1:8080
data_dir: %s
secret_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
entra:
  authority: %s
  client_id: %s
  client_secret: bench-secret
graph:
  endpoint: %s
  notifications: false
  poll_interval: 1h
  reconcile_interval: 1h
  heartbeat: 1h
service_bus:
  namespaces:
    - connection_string: Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=dg==;UseDevelopmentEmulator=true
`, dataDir, entra.Authority("organizations"), clientID, g.URL()), string(entra.CertificatePEM()))
		tick := time.NewTicker(50 * time.Millisecond)
		for !strings.Contains(p.logs.String(), `msg="refresh cycle"`) {
			select {
			case <-tick.C:
			case <-ctx.Done():
				b.Fatalf("no refresh cycle:\n%s", p.logs.String())
			}
		}
		tick.Stop()
		b.StopTimer()
		if !strings.Contains(p.logs.String(), "read=1000 changes=0") {
			b.Fatalf("cycle:\n%s", p.logs.String())
		}
		proc := &bridgeProc{cmd: p.cmd}
		now, peak := proc.rssKiB(b)
		rss, hwm = append(rss, now), append(hwm, peak)
		if code, _ := p.stop(b); code != 0 {
			b.Fatalf("exit %d", code)
		}
		cancel()
		b.StartTimer()
	}
	sort.Ints(rss)
	sort.Ints(hwm)
	b.ReportMetric(float64(rss[len(rss)/2])/1024, "rss-MiB")
	b.ReportMetric(float64(hwm[len(hwm)-1])/1024, "peak-rss-MiB")
}

// seedPoller signs n people in and records their first presence in the
// store under dir, as a serve would have.
func seedPoller(b *testing.B, dir string, entra *entratest.Server, g *graphtest.Server, clientID string, secret []byte, n int) {
	b.Helper()
	store, err := boltstore.Open(dir, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	tokens, err := signin.NewTokens(signin.TokensOptions{Authority: entra.Authority("organizations"), ClientID: clientID,
		Credential: signin.Credential{Secret: "bench-secret"}, Scopes: []string{"Presence.Read"}, SecretKey: secret, Store: store, HTTPClient: entra.Client()})
	if err != nil {
		b.Fatal(err)
	}
	flow, err := signin.NewFlow(signin.FlowOptions{ClientID: clientID, RedirectURI: "http://127.0.0.1:8080/auth/end", SecretKey: secret, Tokens: tokens})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range n {
		id := guid(i)
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
			Namespace: "127.0.0.1:1", Topic: string(id), State: poller.StateActive}); err != nil {
			b.Fatal(err)
		}
	}
	eng := poller.New(poller.Options{Store: store, Reader: graph.New(graph.Options{Endpoint: g.URL(), HTTPClient: g.Client()}),
		Publisher: nopPublisher{}, Tokens: tokens, Heartbeat: time.Hour})
	if s, err := eng.Cycle(ctx); err != nil || s.Published != n {
		b.Fatalf("seeding cycle %+v %v", s, err)
	}
}
