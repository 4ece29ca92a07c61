package cli

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/signin"
)

const hostile = `<script>alert("x")</script> O'Brien & "Co"`

// TestSignIn: a sign-in through the fakes stores the account and its
// sealed token cache, provisions the topic, and answers a page with the
// bridge's users entry; the display name is escaped; the start URL carries
// state, nonce, S256 challenge and form_post; the cookie is HttpOnly,
// Secure, SameSite=None with Max-Age 600.
func TestSignIn(t *testing.T) {
	p := person(1, hostile)
	r := newRig(t, rigOptions{people: []entratest.Person{p}, broker: true})
	loc, cookie := r.start(t)
	u, _ := url.Parse(loc)
	q := u.Query()
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if q.Get(k) == "" {
			t.Errorf("authorize URL lacks %s", k)
		}
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("response_mode") != "form_post" || q.Get("login_hint") != "p1@contoso.com" ||
		q.Get("redirect_uri") != "http://127.0.0.1:8080/auth/end" || !strings.Contains(q.Get("scope"), "Presence.Read") || !strings.Contains(q.Get("scope"), "offline_access") {
		t.Errorf("authorize URL query %v", q)
	}
	if !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteNoneMode || cookie.MaxAge != 600 {
		t.Errorf("cookie %+v", cookie)
	}
	_, form, err := r.entra.SignInURL(loc, p.ObjectID)
	if err != nil {
		t.Fatal(err)
	}
	status, page := r.end(t, form, cookie)
	if status != http.StatusOK {
		t.Fatalf("status %d:\n%s", status, page)
	}
	if strings.Contains(page, "<script>alert") || !strings.Contains(page, "&lt;script&gt;") {
		t.Errorf("display name not escaped:\n%s", page)
	}
	if !strings.Contains(page, "id: "+string(p.ObjectID)) || !strings.Contains(page, "connection_string:") || !strings.Contains(page, "EntityPath="+string(p.ObjectID)) {
		t.Errorf("page lacks the users entry:\n%s", page)
	}
	a, err := r.d.Store.Account(t.Context(), p.ObjectID)
	if err != nil || a.State != poller.StateActive || a.TenantID != tenantA || a.UPN != "p1@contoso.com" || a.Topic != string(p.ObjectID) {
		t.Fatalf("account %+v %v", a, err)
	}
	sealed, _ := r.d.Store.TokenCache(t.Context(), p.ObjectID)
	if len(sealed) == 0 {
		t.Fatal("no token cache stored")
	}
	r.noSecrets(t, "the stored token cache", string(sealed))
	if info, ok := r.mgmt.Topic(string(p.ObjectID)); !ok || !info.RequiresDuplicateDetection || len(info.Subscriptions) != 1 || len(info.Rules) != 1 {
		t.Errorf("topic %+v %v", info, ok)
	}
	r.noSecrets(t, "the logs", r.logs.String())
	// The connection string on the page is the one secret it may show,
	// once; nothing the fakes issued is there.
	r.noSecrets(t, "the page", page)
}

// TestSignInRefusals: every failure answers 400 with a page saying what to
// do, and stores nothing.
func TestSignInRefusals(t *testing.T) {
	p := person(2, "Sam")
	r := newRig(t, rigOptions{people: []entratest.Person{p}})
	other := newRig(t, rigOptions{people: []entratest.Person{p}}) // another secret_key? same: see forged

	type step struct {
		name string
		run  func(t *testing.T) (int, string)
		want string
	}
	steps := []step{
		{"entra error form", func(t *testing.T) (int, string) {
			loc, cookie := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, "")
			return r.end(t, form, cookie)
		}, "Microsoft did not complete the sign-in"},
		{"missing cookie", func(t *testing.T) (int, string) {
			loc, _ := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
			return r.end(t, form, nil)
		}, "did not bring back the sign-in cookie"},
		{"forged cookie", func(t *testing.T) (int, string) {
			loc, cookie := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
			v := []byte(cookie.Value)
			v[len(v)/2] ^= 1
			cookie.Value = string(v)
			return r.end(t, form, cookie)
		}, "could not be verified"},
		{"cookie from another poller", func(t *testing.T) (int, string) {
			loc, _ := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
			_, foreign := other.start(t)
			foreign.Value = strings.Repeat("A", 40)
			return r.end(t, form, foreign)
		}, "could not be verified"},
		{"missing state", func(t *testing.T) (int, string) {
			loc, cookie := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
			form.Del("state")
			return r.end(t, form, cookie)
		}, "does not belong to the sign-in"},
		{"forged state", func(t *testing.T) (int, string) {
			loc, cookie := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
			form.Set("state", "attacker-state")
			return r.end(t, form, cookie)
		}, "does not belong to the sign-in"},
		{"state of another sign-in", func(t *testing.T) (int, string) {
			_, cookie := r.start(t)
			loc2, _ := r.start(t)
			_, form, _ := r.entra.SignInURL(loc2, p.ObjectID)
			return r.end(t, form, cookie)
		}, "does not belong to the sign-in"},
		{"replayed code", func(t *testing.T) (int, string) {
			loc, cookie := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
			// The code is redeemed once (as by an attacker who caught it)...
			if _, err := r.d.Flow.Finish(t.Context(), form, cookie); err != nil {
				t.Fatal(err)
			}
			// ...so the real answer with the same code is refused.
			return r.end(t, form, cookie)
		}, "refused the sign-in code"},
		{"wrong PKCE verifier", func(t *testing.T) (int, string) {
			loc, _ := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
			// A cookie of another sign-in whose state the attacker copies
			// into the form: the state matches but the verifier does not.
			loc2, cookie2 := r.start(t)
			u2, _ := url.Parse(loc2)
			form.Set("state", u2.Query().Get("state"))
			return r.end(t, form, cookie2)
		}, "refused the sign-in code"},
		{"nonce mismatch", func(t *testing.T) (int, string) {
			loc, cookie := r.start(t)
			u, _ := url.Parse(loc)
			q := u.Query()
			q.Set("nonce", "someone-elses-nonce")
			_, form, err := r.entra.SignIn(q, p.ObjectID)
			if err != nil {
				t.Fatal(err)
			}
			return r.end(t, form, cookie)
		}, "was not issued for this sign-in"},
		{"no code", func(t *testing.T) (int, string) {
			loc, cookie := r.start(t)
			_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
			form.Del("code")
			return r.end(t, form, cookie)
		}, "carried no sign-in code"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			status, page := s.run(t)
			if status != http.StatusBadRequest {
				t.Errorf("status %d, want 400", status)
			}
			if !strings.Contains(page, s.want) || !strings.Contains(page, `href="/auth/start"`) {
				t.Errorf("page does not say %q:\n%s", s.want, page)
			}
			if _, err := r.d.Store.Account(t.Context(), p.ObjectID); !errors.Is(err, poller.ErrNotFound) {
				t.Error("an account was stored")
			}
			if c, _ := r.d.Store.TokenCache(t.Context(), p.ObjectID); c != nil {
				t.Error("a token cache was stored")
			}
			r.noSecrets(t, "the page", page)
		})
	}
	if topics := r.mgmt.Topics(); len(topics) != 0 {
		t.Errorf("topics created by refused sign-ins: %v", topics)
	}
	r.noSecrets(t, "the logs", r.logs.String())
}

// TestExpiredCookie: a sealed cookie older than 10 minutes is refused even
// when the browser still sends it (the sealed value carries its expiry).
func TestExpiredCookie(t *testing.T) {
	p := person(3, "Kim")
	r := newRig(t, rigOptions{people: []entratest.Person{p}})
	loc, cookie := r.start(t)
	_, form, _ := r.entra.SignInURL(loc, p.ObjectID)
	later, err := signin.NewFlow(signin.FlowOptions{ClientID: clientID, RedirectURI: r.cfg.RedirectURI(), SecretKey: r.cfg.Key(),
		Tokens: r.d.Tokens, Now: func() time.Time { return time.Now().Add(signin.CookieMaxAge + time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = later.Finish(t.Context(), form, cookie)
	var se *signin.Error
	if !errors.As(err, &se) || se.Failure != signin.FailExpired {
		t.Fatalf("got %v, want an expired refusal", err)
	}
	if _, err := r.d.Store.Account(t.Context(), p.ObjectID); !errors.Is(err, poller.ErrNotFound) {
		t.Error("an account was stored")
	}
}

// TestRevocationIsolation: of two people, the revoked one becomes
// signin_required once; the other is read on; signing in again resumes.
// Access tokens live 1 minute, so MSAL redeems the refresh token on every
// read (it treats a token within 5 minutes of expiry as expired).
func TestRevocationIsolation(t *testing.T) {
	a, b := person(4, "Ann"), person(5, "Bob")
	r := newRig(t, rigOptions{people: []entratest.Person{a, b}, lifetime: time.Minute, broker: true})
	r.graph.SetPresence(a.ObjectID, graphtest.Presence{Availability: "Busy", Activity: "InACall"})
	r.graph.SetPresence(b.ObjectID, graphtest.Presence{Availability: "Away", Activity: "Away"})
	for _, p := range []entratest.Person{a, b} {
		if status, page := r.signIn(t, p.ObjectID); status != http.StatusOK {
			t.Fatalf("sign-in %d:\n%s", status, page)
		}
	}
	r.entra.Revoke(a.ObjectID)
	refreshes := r.entra.TokenRequests("refresh_token")
	for range 3 {
		if _, err := r.d.Engine.Cycle(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.entra.TokenRequests("refresh_token") - refreshes; n != 4 {
		t.Errorf("%d refresh requests in 3 cycles, want 4 (Ann once, Bob three times)", n)
	}
	acct, _ := r.d.Store.Account(t.Context(), a.ObjectID)
	if acct.State != poller.StateSignInRequired {
		t.Errorf("Ann is %s", acct.State)
	}
	if acct, _ := r.d.Store.Account(t.Context(), b.ObjectID); acct.State != poller.StateActive {
		t.Errorf("Bob is %s", acct.State)
	}
	if n := strings.Count(r.logs.String(), "sign-in required"); n != 1 {
		t.Errorf("%d sign-in-required log lines, want 1", n)
	}
	if status, _ := r.signIn(t, a.ObjectID); status != http.StatusOK {
		t.Fatal("sign-in again failed")
	}
	if acct, _ := r.d.Store.Account(t.Context(), a.ObjectID); acct.State != poller.StateActive {
		t.Errorf("Ann after signing in again: %s", acct.State)
	}
	if _, err := r.d.Engine.Cycle(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.noSecrets(t, "the logs", r.logs.String())
}

// TestConcurrentSilentAcquisition: 50 people's tokens acquired at once,
// each refreshed (1-minute tokens), give each person their own token, and
// every stored cache still belongs to its person.
func TestConcurrentSilentAcquisition(t *testing.T) {
	const n = 50
	var people []entratest.Person
	for i := range n {
		people = append(people, person(100+i, "P"))
	}
	r := newRig(t, rigOptions{people: people, lifetime: time.Minute, broker: true})
	for _, p := range people {
		if status, page := r.signIn(t, p.ObjectID); status != http.StatusOK {
			t.Fatalf("sign-in %d:\n%s", status, page)
		}
	}
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, p := range people {
			wg.Go(func() {
				a, err := r.d.Store.Account(t.Context(), p.ObjectID)
				if err != nil {
					errs <- err
					return
				}
				tok, err := r.d.Tokens.Token(t.Context(), a)
				if err != nil {
					errs <- err
					return
				}
				if owner, _, ok := r.entra.AccessTokenOwner(tok); !ok || owner != p.ObjectID {
					errs <- errors.New("a person got another person's token")
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
	}
}

// TestAPI: /api needs the key; presence, refresh and accounts answer.
func TestAPI(t *testing.T) {
	p := person(6, "Lee")
	r := newRig(t, rigOptions{people: []entratest.Person{p}, broker: true})
	r.graph.SetPresence(p.ObjectID, graphtest.Presence{Availability: "DoNotDisturb", Activity: "Presenting"})
	if status, _ := r.signIn(t, p.ObjectID); status != http.StatusOK {
		t.Fatal("sign-in failed")
	}
	resp, err := http.Get(r.srv.URL + "/api/accounts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/api without key: %d", resp.StatusCode)
	}
	status, body := r.api(t, http.MethodGet, "/api/presence/"+string(p.ObjectID))
	var pr map[string]string
	if status != http.StatusOK || json.Unmarshal([]byte(body), &pr) != nil || pr["availability"] != "DoNotDisturb" || pr["activity"] != "Presenting" || pr["sequence"] == "" {
		t.Errorf("presence %d %s", status, body)
	}
	if status, _ := r.api(t, http.MethodGet, "/api/presence/"+string(person(7, "").ObjectID)); status != http.StatusNotFound {
		t.Errorf("unknown person: %d", status)
	}
	status, body = r.api(t, http.MethodGet, "/api/accounts")
	var list []poller.AccountView
	if status != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 || list[0].Availability != "DoNotDisturb" || list[0].UPN != "p6@contoso.com" {
		t.Errorf("accounts %d %s", status, body)
	}
	if status, body := r.api(t, http.MethodPost, "/api/refresh"); status != http.StatusOK || !strings.Contains(body, `"read":1`) {
		t.Errorf("refresh %d %s", status, body)
	}
	if status, _ := r.api(t, http.MethodDelete, "/api/accounts/"+string(p.ObjectID)); status != http.StatusOK {
		t.Errorf("remove %d", status)
	}
	if _, err := r.d.Store.Account(t.Context(), p.ObjectID); !errors.Is(err, poller.ErrNotFound) {
		t.Error("account survived removal")
	}
	if status, body := r.api(t, http.MethodGet, "/healthz"); status != http.StatusOK || !strings.Contains(body, `"service_bus":"ok"`) || !strings.Contains(body, `"store":"ok"`) {
		t.Errorf("healthz %d %s", status, body)
	}
	r.sb.Kill() // the management API still answers; the store too
	r.mgmtDown()
	if status, body := r.api(t, http.MethodGet, "/healthz"); status != http.StatusServiceUnavailable || !strings.Contains(body, `"service_bus":"unreachable"`) {
		t.Errorf("healthz with Service Bus unreachable: %d %s", status, body)
	}
	if resp, err := http.Post(r.srv.URL+"/notifications", "text/plain", nil); err != nil || resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("/notifications: %v", err)
	}
}
