package graphsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/presence-bridge/presence-bridge/presence"
)

func testAccount(id presence.UserID, scopes ...string) Account {
	return Account{
		Version: fileVersion, HomeAccountID: string(id) + "." + tenantID, ObjectID: id, TenantID: tenantID,
		UPN: strings.ToLower(string(id[:4])) + "@contoso.com", ClientID: clientID, Scopes: scopes,
		SignedInAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), State: StateActive,
		Cache: []byte(`{"AccessToken":{"k":{"secret":"at","expires_on":"1800000000"}},"RefreshToken":{"r":{"secret":"rt"}}}`),
	}
}

func memAccount(a Account) *account {
	return &account{Account: a, missing: map[presence.UserID]bool{}}
}

func guid(i int) presence.UserID {
	return presence.UserID(fmt.Sprintf("%08x-0000-0000-0000-000000000000", i))
}

// TestPlan: a Presence.Read.All sign-in covers everyone in batches of at
// most 650 (one request for a household); its owner's own sign-in is then
// not used; a user its batch did not answer for falls back to their own
// sign-in; without one they are uncovered; an expired account covers no
// one; a 403 on batches leaves an account its owner.
func TestPlan(t *testing.T) {
	users := []presence.UserID{alexID, samID, kimID}
	all := memAccount(testAccount(samID, "Presence.Read.All"))
	kim := memAccount(testAccount(kimID, "Presence.Read"))
	summary := func(jobs []job, unc []presence.UserID) string {
		var b strings.Builder
		for _, j := range jobs {
			fmt.Fprintf(&b, "%s batch=%v %d; ", j.acct.ObjectID[:4], j.batch, len(j.users))
		}
		fmt.Fprintf(&b, "uncovered %d", len(unc))
		return b.String()
	}
	for _, tc := range []struct {
		name  string
		setup func()
		users []presence.UserID
		want  string
	}{
		{"read all covers everyone", func() {}, users, "0a1b batch=true 3; uncovered 0"},
		{"own accounts only", func() { all.State = StateSignInRequired }, users, "1b2c batch=false 1; uncovered 2"},
		{"batch refused", func() { all.noBatch = true }, users, "0a1b batch=false 1; 1b2c batch=false 1; uncovered 1"},
		{"missing from the batch", func() { all.missing[kimID] = true }, users, "0a1b batch=true 2; 1b2c batch=false 1; uncovered 0"},
		{"1,500 users", func() {}, func() []presence.UserID {
			var u []presence.UserID
			for i := range 1500 {
				u = append(u, guid(i))
			}
			return u
		}(), "0a1b batch=true 650; 0a1b batch=true 650; 0a1b batch=true 200; uncovered 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all.State, all.noBatch, all.missing = StateActive, false, map[presence.UserID]bool{}
			tc.setup()
			jobs, unc := plan(tc.users, []*account{all, kim})
			if got := summary(jobs, unc); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestStore: accounts round-trip through files of mode 0600; an update with
// a stale revision loses; a removed account is not written back; `accounts
// remove` by upn; a damaged file is reported, not fatal; concurrent writers
// never lose a revision.
func TestStore(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir)
	if got, errs := s.List(); len(got) != 0 || len(errs) != 0 {
		t.Fatalf("empty store: %v %v", got, errs)
	}
	sam, err := s.Put(testAccount(samID, "Presence.Read.All"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(s.Dir(), sam.HomeAccountID+".json"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v %v", info.Mode(), err)
	}
	if d, _ := os.Stat(s.Dir()); d.Mode().Perm() != 0o700 {
		t.Errorf("folder mode %v", d.Mode())
	}
	got, _ := s.List()
	if diff := cmp.Diff([]Account{sam}, got); diff != "" {
		t.Errorf("round trip (-put +list):\n%s", diff)
	}
	sig := s.Signature()
	updated, err := s.Update(sam.HomeAccountID, sam.Revision, func(a *Account) { a.Cache = []byte(`{"x":1}`) })
	if err != nil || updated.Revision != sam.Revision+1 {
		t.Fatalf("update: %v %d", err, updated.Revision)
	}
	if s.Signature() == sig {
		t.Error("the signature missed a change")
	}
	if _, err := s.Update(sam.HomeAccountID, sam.Revision, func(*Account) {}); !errors.Is(err, ErrConflict) {
		t.Errorf("stale update: %v, want conflict", err)
	}
	again, _ := s.Put(testAccount(samID, "Presence.Read.All"))
	if again.Revision != updated.Revision+1 {
		t.Errorf("a new sign-in of the same person: revision %d", again.Revision)
	}
	if removed, err := s.Remove(strings.ToUpper(sam.UPN)); err != nil || removed.ObjectID != samID {
		t.Fatalf("remove: %v", err)
	}
	if _, err := s.Update(sam.HomeAccountID, again.Revision, func(*Account) {}); !errors.Is(err, ErrNotFound) {
		t.Errorf("update after remove: %v, want not found", err)
	}
	if _, err := s.Remove("nobody@contoso.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove unknown: %v", err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "junk.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs := s.List(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "junk.json") {
		t.Errorf("damaged file: %v", errs)
	}

	// Writers in parallel (as daemon, login and remove in three processes
	// would be): every update lands on the revision it read.
	kim, _ := s.Put(testAccount(kimID, "Presence.Read"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 8 {
		wg.Go(func() {
			for range 20 {
				cur, err := s.read(kim.HomeAccountID)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Update(kim.HomeAccountID, cur.Revision, func(a *Account) { a.Reason = "x" }); err == nil {
					mu.Lock()
					won++
					mu.Unlock()
				} else if !errors.Is(err, ErrConflict) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	final, _ := s.read(kim.HomeAccountID)
	if final.Revision != kim.Revision+int64(won) {
		t.Errorf("revision %d after %d successful updates from %d", final.Revision, won, kim.Revision)
	}
	if err := func() error { _, err := s.Put(Account{HomeAccountID: "../evil"}); return err }(); err == nil {
		t.Error("an account id that is not oid.tid was written")
	}
}

// roundTripper is a hand-written transport for the pacer tests.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func reply(status int, body string) *http.Response {
	return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(body)), Header: http.Header{}}
}

func formRequest(ctx context.Context, path string, form url.Values) *http.Request {
	enc := form.Encode()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://login.example"+path, strings.NewReader(enc))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(enc)), nil }
	return req
}

// TestPacer: polls wait for Entra's interval after the device
// authorization, each slow_down adds the step, a network error or a 5xx is
// answered authorization_pending (after which the interval is kept), and
// a refresh request's OAuth error is remembered for classification.
func TestPacer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var polls []time.Time
		answers := []func() (*http.Response, error){
			func() (*http.Response, error) { return reply(400, `{"error":"authorization_pending"}`), nil },
			func() (*http.Response, error) { return reply(400, `{"error":"slow_down"}`), nil },
			func() (*http.Response, error) { return nil, errors.New("connection reset") },
			func() (*http.Response, error) { return reply(503, `busy`), nil },
			func() (*http.Response, error) { return reply(200, `{"access_token":"x"}`), nil },
		}
		start := time.Now()
		base := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			if strings.HasSuffix(r.URL.Path, "/devicecode") {
				return reply(200, `{"device_code":"d","user_code":"U","interval":3,"expires_in":900}`), nil
			}
			if kind := classifyRequest(r); kind == kindToken {
				return reply(400, `{"error":"invalid_grant","error_description":"AADSTS50173: revoked\r\nTrace ID: x"}`), nil
			}
			polls = append(polls, time.Now())
			a := answers[0]
			answers = answers[1:]
			return a()
		})}
		h := newOAuthHTTP(base)
		var troubles int
		h.onPollTrouble = func(error) { troubles++ }
		ctx := t.Context()
		resp, err := h.Do(formRequest(ctx, "/t/oauth2/v2.0/devicecode", url.Values{"client_id": {"c"}}))
		if err != nil || resp.StatusCode != 200 {
			t.Fatal(err)
		}
		poll := url.Values{"grant_type": {"device_code"}, "device_code": {"d"}}
		var codes []string
		for range 5 {
			resp, err := h.Do(formRequest(ctx, "/t/oauth2/v2.0/token", poll))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if e, ok := parseOAuthError(body); ok {
				codes = append(codes, e.Code)
			} else {
				codes = append(codes, fmt.Sprint(resp.StatusCode))
			}
		}
		want := []string{"authorization_pending", "slow_down", "authorization_pending", "authorization_pending", "200"}
		if diff := cmp.Diff(want, codes); diff != "" {
			t.Errorf("answers MSAL sees (-want +got):\n%s", diff)
		}
		var gaps []time.Duration
		prev := start
		for _, p := range polls {
			gaps = append(gaps, p.Sub(prev))
			prev = p
		}
		wantGaps := []time.Duration{3 * time.Second, 3 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
		if diff := cmp.Diff(wantGaps, gaps); diff != "" {
			t.Errorf("gaps between polls (-want +got):\n%s", diff)
		}
		if troubles != 2 {
			t.Errorf("%d troubles reported, want 2", troubles)
		}
		if _, err := h.Do(formRequest(ctx, "/t/oauth2/v2.0/token", url.Values{"grant_type": {"refresh_token"}})); err != nil {
			t.Fatal(err)
		}
		last := h.lastError()
		if last.Code != "invalid_grant" || last.Description != "AADSTS50173: revoked" || last.Status != 400 {
			t.Errorf("remembered %+v", last)
		}
		var sr *SignInRequiredError
		if err := classify(ctx, errors.New("x"), last); !errors.As(err, &sr) {
			t.Errorf("classified %v, want sign-in required", err)
		}
		if err := classify(ctx, &url.Error{Op: "Post", URL: "u", Err: errors.New("dial tcp: refused")}, oauthError{}); !strings.Contains(err.Error(), "refused") {
			t.Errorf("network error classified %v", err)
		}
	})
}

// TestDropAccessTokens: the forced refresh keeps everything but the access
// tokens, and the token state reads expiry and refresh token.
func TestDropAccessTokens(t *testing.T) {
	c := testAccount(samID).Cache
	st, err := ReadTokenState(c)
	if err != nil || !st.Refresh || st.AccessUntil.Unix() != 1800000000 {
		t.Fatalf("state %+v %v", st, err)
	}
	dropped, err := dropAccessTokens(c)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(dropped, []byte(`"at"`)) || !bytes.Contains(dropped, []byte(`"rt"`)) {
		t.Errorf("dropped: %s", dropped)
	}
	st, _ = ReadTokenState(dropped)
	if !st.AccessUntil.IsZero() || !st.Refresh {
		t.Errorf("after drop %+v", st)
	}
	if _, err := dropAccessTokens([]byte("null")); err == nil {
		t.Error("null accepted")
	}
}

// TestNotice: what the add-on notification says in each situation, and
// that it is empty (dismissed) when nothing needs a sign-in.
func TestNotice(t *testing.T) {
	s := &Source{names: map[presence.UserID]string{alexID: "Alex", samID: "Sam"}, users: []presence.UserID{alexID, samID}, uncovered: map[presence.UserID]bool{}}
	if n := s.notice(); n != "" {
		t.Errorf("nothing wrong: %q", n)
	}
	s.uncovered[samID] = true
	if n := s.notice(); !strings.Contains(n, "presence of Sam") || !strings.Contains(n, "**Sign in**") {
		t.Errorf("uncovered: %q", n)
	}
	s.waiting = &DeviceCode{URL: "https://microsoft.com/devicelogin", Code: "ABCD1234", ExpiresAt: time.Now().Add(15 * time.Minute)}
	if n := s.notice(); !strings.Contains(n, "**https://microsoft.com/devicelogin**") || !strings.Contains(n, "**ABCD1234**") || strings.Contains(n, "Press") {
		t.Errorf("waiting: %q", n)
	}
	if got := s.waiting.Text(); got != "Open https://microsoft.com/devicelogin and enter the code ABCD1234" || len(got) > 255 {
		t.Errorf("sensor text %q", got)
	}
	s.waiting = nil
	s.uncovered = map[presence.UserID]bool{}
	expired := memAccount(testAccount(alexID))
	expired.State, expired.Reason = StateSignInRequired, "sign-in required (invalid_grant): AADSTS50173"
	s.order = []*account{expired}
	s.lastFail = "the code expired before it was entered"
	if n := s.notice(); !strings.Contains(n, "needs renewing") || !strings.Contains(n, "did not complete: the code expired") {
		t.Errorf("expired: %q", n)
	}
}
