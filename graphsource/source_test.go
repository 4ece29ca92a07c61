package graphsource

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/presence"
)

// fakeCore records what the source hands the core.
type fakeCore struct {
	mu      sync.Mutex
	updates []presence.Update
	marked  []presence.UserID
}

func (c *fakeCore) Submit(u presence.Update, source string, done func(bridge.Outcome)) {
	c.mu.Lock()
	c.updates = append(c.updates, u)
	c.mu.Unlock()
	done(bridge.Applied)
}

func (c *fakeCore) WaitReady(ctx context.Context) error { return ctx.Err() }

func (c *fakeCore) MarkUnavailable(source string, ids ...presence.UserID) {
	c.mu.Lock()
	c.marked = append(c.marked, ids...)
	c.mu.Unlock()
}

// last returns the last update of a user.
func (c *fakeCore) last(id presence.UserID) (presence.Update, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.updates) - 1; i >= 0; i-- {
		if c.updates[i].UserID == id {
			return c.updates[i], true
		}
	}
	return presence.Update{}, false
}

func (c *fakeCore) markedCount(id presence.UserID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.marked {
		if m == id {
			n++
		}
	}
	return n
}

// prompts records the prompts the source emits.
type prompts struct {
	mu  sync.Mutex
	all []Prompt
}

func (p *prompts) add(x Prompt) {
	p.mu.Lock()
	p.all = append(p.all, x)
	p.mu.Unlock()
}

func (p *prompts) last() Prompt {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.all) == 0 {
		return Prompt{}
	}
	return p.all[len(p.all)-1]
}

// health records the source's last status.
type health struct {
	mu     sync.Mutex
	ok     bool
	detail string
	n      int
}

func (h *health) SetStatus(_ string, ok bool, detail string) {
	h.mu.Lock()
	h.ok, h.detail = ok, detail
	h.n++
	h.mu.Unlock()
}

func (h *health) get() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok, h.detail
}

// rig is a source wired to a fake Entra, a fake Graph and a fake core.
type rig struct {
	entra   *entratest.Server
	graph   *graphtest.Server
	core    *fakeCore
	prompts *prompts
	health  *health
	logs    *safebuf.Buffer
	dataDir string
	users   []config.User
	cfg     config.Graph
}

var (
	alexUser = config.User{ID: alexID, Name: "Alex"}
	samUser  = config.User{ID: samID, Name: "Sam"}
	kimUser  = config.User{ID: kimID, Name: "Kim"}
)

func newRig(t *testing.T, eo entratest.Options, scopes ...string) *rig {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the source against the fake Entra and Graph in real time (seconds)")
	}
	r := &rig{
		entra: fakeEntra(t, eo), core: &fakeCore{}, prompts: &prompts{}, health: &health{},
		logs: &safebuf.Buffer{}, dataDir: t.TempDir(), users: []config.User{alexUser, samUser, kimUser},
	}
	r.graph = graphtest.New(graphtest.Options{Authorize: r.entra.AccessTokenOwner, Scopes: r.entra.AccessTokenScopes})
	t.Cleanup(r.graph.Close)
	r.cfg = graphConfig(r.entra, scopes...)
	r.cfg.Endpoint = r.graph.URL()
	r.cfg.PollInterval = config.Duration(200 * time.Millisecond)
	return r
}

// start runs a source until the test ends (or stop is called).
func (r *rig) start(t *testing.T, level slog.Level) (*Source, func()) {
	t.Helper()
	src, err := New(Options{
		Config: r.cfg, Users: r.users, DataDir: r.dataDir,
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: level})),
		Status: r.health, OnPrompt: r.prompts.add, AutoSignIn: true,
		HTTPClient: r.entra.Client(), SlowDownStep: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = src.Run(ctx, r.core)
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return src, stop
}

// signInAs presses Sign in and enters the shown code as the person.
func (r *rig) signInAs(t *testing.T, src *Source, id presence.UserID) {
	t.Helper()
	before := len(r.entra.UserCodes())
	src.StartSignIn()
	var code string
	eventually(t, "a code shown", func() bool {
		w := r.prompts.last().Waiting
		if w != nil && len(r.entra.UserCodes()) > before {
			code = w.Code
			return true
		}
		return false
	})
	if err := r.entra.EnterCode(code, id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the sign-in to complete", func() bool {
		p := r.prompts.last()
		return p.Waiting == nil && p.LastResult == "signed_in"
	})
}

func (r *rig) waitFor(t *testing.T, id presence.UserID, what string, cond func(presence.Update) bool) {
	t.Helper()
	eventually(t, what, func() bool {
		u, ok := r.core.last(id)
		return ok && cond(u)
	})
}

func busy(u presence.Update) bool { return u.Availability == presence.AvailabilityBusy }

// TestSignInFromButtonAndRestartKeepsIt: nobody signed in, every user is
// shown unavailable and reported once; the button's sign-in with a
// Presence.Read.All account covers all three in one batch per cycle; the
// prompt's notice is dismissed; a restart reads presence again without a
// sign-in.
func TestSignInFromButtonAndRestartKeepsIt(t *testing.T) {
	r := newRig(t, entratest.Options{})
	src, stop := r.start(t, slog.LevelInfo)
	eventually(t, "users shown unavailable", func() bool { return r.core.markedCount(alexID) == 1 && r.core.markedCount(kimID) == 1 })
	if ok, detail := r.health.get(); ok || !strings.Contains(detail, "Alex, Sam, Kim") {
		t.Errorf("health %v %q", ok, detail)
	}
	if n := r.prompts.last().Notice; !strings.Contains(n, "Alex, Sam, Kim") || !strings.Contains(n, "Sign in") {
		t.Errorf("notice %q", n)
	}
	r.graph.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "InACall"})
	r.graph.SetPresence(kimID, graphtest.Presence{Availability: "Away", Activity: "Away"})
	r.signInAs(t, src, samID)
	r.waitFor(t, alexID, "alex busy", busy)
	r.waitFor(t, kimID, "kim away", func(u presence.Update) bool { return u.Availability == presence.AvailabilityAway })
	if p := r.prompts.last(); p.Notice != "" {
		t.Errorf("notice after the sign-in: %q, want none (dismissed)", p.Notice)
	}
	eventually(t, "healthy", func() bool { ok, _ := r.health.get(); return ok })
	if c := strings.Count(r.logs.String(), "no signed-in account covers"); c != 1 {
		t.Errorf("uncovered users logged %d times, want once:\n%s", c, r.logs.String())
	}
	// One batch per cycle, never a request per user.
	b0, t0 := r.graph.Batches(""), r.graph.Total()
	eventually(t, "three more cycles", func() bool { return r.graph.Batches("") >= b0+3 })
	if r.graph.Total()-t0 != r.graph.Batches("")-b0 {
		t.Errorf("%d requests for %d batches", r.graph.Total()-t0, r.graph.Batches("")-b0)
	}
	// A change shows up; an unchanged presence is not submitted again.
	n := len(r.core.updates)
	eventually(t, "two more cycles", func() bool { return r.graph.Batches("") >= b0+5 })
	r.core.mu.Lock()
	again := len(r.core.updates) - n
	r.core.mu.Unlock()
	if again != 0 {
		t.Errorf("%d unchanged presences submitted again", again)
	}
	stop()

	r.graph.SetPresence(alexID, graphtest.Presence{Availability: "Available", Activity: "Available"})
	codes := len(r.entra.UserCodes())
	r.start(t, slog.LevelInfo)
	r.waitFor(t, alexID, "alex available after a restart", func(u presence.Update) bool {
		return u.Availability == presence.AvailabilityAvailable
	})
	if len(r.entra.UserCodes()) != codes {
		t.Error("a restart asked for a new sign-in")
	}
	if a, _ := r.core.last(alexID); a.Sequence == "" || a.ObservedAt.IsZero() {
		t.Errorf("update without Graph's sequence or a read time: %+v", a)
	}
}

// signInDirect signs a person in as `presence-bridge login` does, with the
// given scopes, and stores the account.
func (r *rig) signInDirect(t *testing.T, id presence.UserID, scopes ...string) Account {
	t.Helper()
	cfg := r.cfg
	cfg.Scopes = scopes
	codes := make(chan DeviceCode, 1)
	done := make(chan signInResult, 1)
	go func() {
		a, err := SignIn(t.Context(), SignInOptions{Config: cfg, HTTPClient: r.entra.Client()}, func(dc DeviceCode) { codes <- dc })
		done <- signInResult{a, err}
	}()
	select {
	case dc := <-codes:
		if err := r.entra.EnterCode(dc.Code, id); err != nil {
			t.Fatal(err)
		}
	case res := <-done:
		t.Fatal(res.err)
	}
	res := wait(t, done)
	if res.err != nil {
		t.Fatal(res.err)
	}
	a, err := NewStore(r.dataDir).Put(res.account)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRevocationMarksUsersUnavailable: Sam's Presence.Read.All sign-in
// reads everyone until it is revoked (Graph answers 401, the one refresh
// is refused): Alex and Sam are shown unavailable, Kim goes on through her
// own Presence.Read sign-in, a new sign-in is asked for (notice and a
// code), the state is kept on disk, and nothing retries the dead token.
func TestRevocationMarksUsersUnavailable(t *testing.T) {
	r := newRig(t, entratest.Options{})
	r.signInDirect(t, kimID, "Presence.Read")
	src, _ := r.start(t, slog.LevelInfo)
	r.signInAs(t, src, samID)
	for _, id := range []presence.UserID{alexID, samID, kimID} {
		r.graph.SetPresence(id, graphtest.Presence{Availability: "Busy", Activity: "Busy"})
	}
	r.waitFor(t, alexID, "alex busy", busy)
	r.waitFor(t, kimID, "kim busy", busy)
	if n := r.core.markedCount(alexID); n != 1 {
		t.Fatalf("alex marked %d times before the revocation, want once (at start, before sam signed in)", n)
	}
	b0 := r.graph.Batches("")
	eventually(t, "a batch covering kim", func() bool { return r.graph.Batches("") > b0 })

	r.entra.RevokeAccess(samID)
	eventually(t, "alex and sam shown unavailable", func() bool { return r.core.markedCount(alexID) == 2 && r.core.markedCount(samID) == 2 })
	if r.core.markedCount(kimID) != 0 {
		t.Error("kim, covered by her own sign-in, was shown unavailable")
	}
	r.graph.SetPresence(kimID, graphtest.Presence{Availability: "Away", Activity: "Away"})
	r.waitFor(t, kimID, "kim read through her own sign-in", func(u presence.Update) bool { return u.Availability == presence.AvailabilityAway })
	p := r.prompts.last()
	if !strings.Contains(p.Notice, "sam@contoso.com needs renewing") || p.Waiting == nil {
		t.Errorf("prompt %+v: want the expired sign-in named and a code shown", p)
	}
	if ok, detail := r.health.get(); ok || !strings.Contains(detail, "Alex, Sam") {
		t.Errorf("health %v %q", ok, detail)
	}
	accounts, _ := NewStore(r.dataDir).List()
	for _, a := range accounts {
		if a.ObjectID == samID && a.State != StateSignInRequired {
			t.Errorf("sam's state on disk: %s", a.State)
		}
	}
	refreshes := r.entra.TokenRequests("refresh_token")
	b1 := r.graph.Batches("")
	kimReads := r.graph.Total()
	eventually(t, "ten more cycles", func() bool { return r.graph.Total() >= kimReads+10 })
	if r.entra.TokenRequests("refresh_token") != refreshes || r.graph.Batches("") != b1 {
		t.Errorf("the revoked sign-in was retried: %d refreshes, %d batches more",
			r.entra.TokenRequests("refresh_token")-refreshes, r.graph.Batches("")-b1)
	}
	if c := strings.Count(r.logs.String(), "expired or was revoked"); c != 1 {
		t.Errorf("the expiry was logged %d times", c)
	}
}

// TestRefreshRefusedAfterExpiry: a refresh token Entra refuses when the
// access token runs out (revoked sessions) expires the account the same way.
func TestRefreshRefusedAfterExpiry(t *testing.T) {
	r := newRig(t, entratest.Options{TokenLifetime: time.Minute}) // always within MSAL's 5-minute margin
	r.signInDirect(t, samID, "Presence.Read.All")
	r.start(t, slog.LevelInfo)
	r.waitFor(t, alexID, "alex read", func(presence.Update) bool { return true })
	r.entra.Revoke(samID)
	eventually(t, "alex shown unavailable", func() bool { return r.core.markedCount(alexID) == 1 })
	n := r.entra.TokenRequests("refresh_token")
	t0 := r.graph.Total()
	// The automatic new sign-in waits; two of its polls take about ten
	// cycles, none of which may touch the dead sign-in.
	eventually(t, "a new sign-in", func() bool { return r.prompts.last().Waiting != nil })
	code := r.prompts.last().Waiting.Code
	eventually(t, "two polls of the new code", func() bool { return r.entra.DevicePolls(code) >= 2 })
	if r.entra.TokenRequests("refresh_token") != n || r.graph.Total() != t0 {
		t.Error("the refused refresh token was tried again")
	}
}

// TestGraph401GetsOneRefresh: Graph refusing a token still valid locally
// gets one refresh and the read goes on; refusing it again after the
// refresh expires the account (SPEC §3).
func TestGraph401GetsOneRefresh(t *testing.T) {
	r := newRig(t, entratest.Options{})
	r.signInDirect(t, samID, "Presence.Read.All")
	r.start(t, slog.LevelInfo)
	r.waitFor(t, alexID, "alex read", func(presence.Update) bool { return true })
	n := r.entra.TokenRequests("refresh_token")
	r.graph.RejectTokens(samID, 1)
	r.graph.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "Busy"})
	r.waitFor(t, alexID, "alex busy after the refresh", busy)
	if got := r.entra.TokenRequests("refresh_token") - n; got != 1 {
		t.Errorf("%d refreshes, want 1", got)
	}
	if r.core.markedCount(alexID) != 0 {
		t.Error("one 401 showed users unavailable")
	}
	r.graph.RejectTokens(samID, 2)
	eventually(t, "alex shown unavailable", func() bool { return r.core.markedCount(alexID) == 1 })
	if got := r.entra.TokenRequests("refresh_token") - n; got != 2 {
		t.Errorf("%d refreshes in all, want 2 (one per 401 episode)", got)
	}
	if !strings.Contains(r.prompts.last().Notice, "also after a refresh") {
		t.Errorf("notice %q", r.prompts.last().Notice)
	}
}

// TestThrottledHonoursRetryAfter: a 429 with Retry-After stops requests to
// the tenant until it has passed; presence is read again afterwards, and
// the users are not shown unavailable meanwhile.
func TestThrottledHonoursRetryAfter(t *testing.T) {
	r := newRig(t, entratest.Options{})
	r.signInDirect(t, samID, "Presence.Read.All")
	r.start(t, slog.LevelInfo)
	r.waitFor(t, alexID, "alex read", func(presence.Update) bool { return true })
	r.graph.Throttle(tenantID, 1, 429, 2*time.Second)
	n := r.graph.Requests(tenantID)
	eventually(t, "the 429", func() bool { return r.graph.Requests(tenantID) == n+1 })
	throttledAt := time.Now()
	r.graph.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "Busy"})
	r.waitFor(t, alexID, "alex busy after the Retry-After", busy)
	if waited := time.Since(throttledAt); waited < time.Second {
		t.Errorf("read again %s after a 429 with Retry-After: 2", waited)
	}
	if r.core.markedCount(alexID) != 0 {
		t.Error("throttling showed users unavailable")
	}
	if !strings.Contains(r.logs.String(), "throttled") {
		t.Error("the 429 was not logged")
	}
}

// TestOwnAccountsAndUncoveredUser: with Presence.Read only, each person is
// read through /me/presence; a user nobody signed in for is reported once
// and shown unavailable.
func TestOwnAccountsAndUncoveredUser(t *testing.T) {
	r := newRig(t, entratest.Options{}, "Presence.Read")
	r.signInDirect(t, alexID, "Presence.Read")
	r.signInDirect(t, samID, "Presence.Read")
	r.graph.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "Busy"})
	r.graph.SetPresence(samID, graphtest.Presence{Availability: "Busy", Activity: "Busy"})
	r.start(t, slog.LevelInfo)
	r.waitFor(t, alexID, "alex", busy)
	r.waitFor(t, samID, "sam", busy)
	eventually(t, "a few cycles", func() bool { return r.graph.Total() > 10 })
	if r.graph.Batches("") != 0 {
		t.Error("a Presence.Read sign-in was used for a batch")
	}
	if r.core.markedCount(kimID) != 1 || r.core.markedCount(alexID) != 0 {
		t.Errorf("marked: kim %d, alex %d", r.core.markedCount(kimID), r.core.markedCount(alexID))
	}
	if _, ok := r.core.last(kimID); ok {
		t.Error("kim got a presence")
	}
	if c := strings.Count(r.logs.String(), "no signed-in account covers"); c != 1 {
		t.Errorf("kim reported %d times, want once", c)
	}
	if ok, detail := r.health.get(); ok || !strings.Contains(detail, "Kim") || strings.Contains(detail, "Alex") {
		t.Errorf("health %v %q", ok, detail)
	}
}

// TestNoSecretsInLogs: through sign-in, reads, a 401 and its refresh, and a
// revocation, no token, device code or user code reaches the log at info
// level; at debug the user code appears only while its sign-in waits (the
// "device code issued" line), never once it is used, and no token ever.
func TestNoSecretsInLogs(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			r := newRig(t, entratest.Options{})
			src, stop := r.start(t, level)
			r.signInAs(t, src, samID)
			r.waitFor(t, alexID, "alex read", func(presence.Update) bool { return true })
			r.graph.RejectTokens(samID, 1)
			eventually(t, "the refresh", func() bool { return r.entra.TokenRequests("refresh_token") == 1 })
			r.entra.RevokeAccess(samID)
			eventually(t, "alex shown unavailable", func() bool { return r.core.markedCount(alexID) == 2 })
			stop()
			logs := r.logs.String()
			codes := r.entra.UserCodes()
			for _, secret := range r.entra.Secrets() {
				if !strings.Contains(logs, secret) {
					continue
				}
				if level == slog.LevelDebug && slices.Contains(codes, secret) {
					for _, line := range strings.Split(logs, "\n") {
						if strings.Contains(line, secret) && !strings.Contains(line, "device code issued") {
							t.Errorf("user code logged after it was used: %s", line)
						}
					}
					continue
				}
				t.Errorf("secret %.12s... in the log:\n%s", secret, logs)
			}
		})
	}
}

// TestLoginAndRemoveBesideTheDaemon: an account stored by `presence-bridge
// login` in another process is picked up by the running source; `accounts
// remove` makes it stop using the account, whose users are then shown
// unavailable; the running source never writes a removed account back,
// though it refreshes tokens every cycle.
func TestLoginAndRemoveBesideTheDaemon(t *testing.T) {
	r := newRig(t, entratest.Options{TokenLifetime: time.Minute}) // a refresh, and a write, every cycle
	r.start(t, slog.LevelInfo)
	eventually(t, "alex shown unavailable", func() bool { return r.core.markedCount(alexID) == 1 })
	r.graph.SetPresence(alexID, graphtest.Presence{Availability: "Busy", Activity: "Busy"})
	sam := r.signInDirect(t, samID, "Presence.Read.All")
	r.waitFor(t, alexID, "alex read through the new sign-in", busy)
	if !strings.Contains(r.logs.String(), "signed-in account added") {
		t.Error("the new account was not logged")
	}
	refreshes := r.entra.TokenRequests("refresh_token")
	eventually(t, "token refreshes", func() bool { return r.entra.TokenRequests("refresh_token") > refreshes+2 })
	store := NewStore(r.dataDir)
	if _, err := store.Remove(sam.UPN); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alex shown unavailable again", func() bool { return r.core.markedCount(alexID) == 2 })
	reads := r.graph.Total()
	eventually(t, "a few more cycles", func() bool {
		return strings.Contains(r.logs.String(), "signed-in account removed") && r.graph.Total() == reads
	})
	if accounts, _ := store.List(); len(accounts) != 0 {
		t.Errorf("a removed account was written back: %+v", accounts[0].UPN)
	}
}
