package graphsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/public"

	"github.com/presence-bridge/presence-bridge/config"
)

// cacheBox is the cache store of one MSAL public client: it holds one
// account's token cache. MSAL's public client writes with an empty
// partition key and reads with the account's, so a store keyed by partition
// would lose tokens; one client and one box per account avoids keys
// altogether.
type cacheBox struct {
	mu    sync.Mutex
	data  []byte // what Replace hands MSAL
	saved []byte // what MSAL last exported
}

func (b *cacheBox) Replace(_ context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	b.mu.Lock()
	data := b.data
	b.mu.Unlock()
	if len(data) == 0 {
		data = []byte("{}")
	}
	return u.Unmarshal(data)
}

func (b *cacheBox) Export(_ context.Context, m cache.Marshaler, _ cache.ExportHints) error {
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.saved = data
	b.mu.Unlock()
	return nil
}

// set loads data for the next operation and forgets the last export.
func (b *cacheBox) set(data []byte) {
	b.mu.Lock()
	b.data, b.saved = data, nil
	b.mu.Unlock()
}

// changed returns what MSAL exported, when it differs from what it was
// given.
func (b *cacheBox) changed() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.saved == nil || bytes.Equal(b.saved, b.data) {
		return nil, false
	}
	return b.saved, true
}

// dropAccessTokens returns the cache without its access tokens, so that
// MSAL's next silent acquisition redeems the refresh token: SPEC §3 gives a
// token Graph refused while it is still valid locally one refresh.
func dropAccessTokens(cache []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(cache, &m); err != nil {
		return nil, fmt.Errorf("token cache: %w", err)
	}
	if m == nil {
		return nil, errors.New("token cache: not a JSON object")
	}
	if _, ok := m["AccessToken"]; !ok {
		return cache, nil
	}
	m["AccessToken"] = json.RawMessage("{}")
	return json.Marshal(m)
}

// TokenState describes an account's cached tokens for `accounts`.
type TokenState struct {
	// AccessUntil is when the cached access token expires (zero: none).
	AccessUntil time.Time
	// Refresh reports whether a refresh token is kept.
	Refresh bool
}

// ReadTokenState reads what a token cache holds, without any secret.
func ReadTokenState(cache []byte) (TokenState, error) {
	var c struct {
		AccessToken map[string]struct {
			ExpiresOn json.RawMessage `json:"expires_on"`
		} `json:"AccessToken"`
		RefreshToken map[string]json.RawMessage `json:"RefreshToken"`
	}
	if err := json.Unmarshal(cache, &c); err != nil {
		return TokenState{}, fmt.Errorf("token cache: %w", err)
	}
	st := TokenState{Refresh: len(c.RefreshToken) > 0}
	for _, at := range c.AccessToken {
		if t, ok := unixField(at.ExpiresOn); ok && t.After(st.AccessUntil) {
			st.AccessUntil = t
		}
	}
	return st, nil
}

// unixField reads MSAL's Unix time, written as a string of seconds (or a
// number).
func unixField(raw json.RawMessage) (time.Time, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(raw)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}

// msalOptions build the public client of one account or sign-in.
func msalClient(cfg config.Graph, box *cacheBox, h *oauthHTTP) (public.Client, error) {
	c, err := public.New(cfg.ClientID,
		public.WithAuthority(cfg.AuthorityURL()),
		public.WithCache(box),
		public.WithHTTPClient(h),
		public.WithInstanceDiscovery(cfg.MicrosoftAuthority()),
	)
	if err != nil {
		return public.Client{}, fmt.Errorf("graph sign-in: %w", err)
	}
	return c, nil
}

// refreshMargin: a token that expires sooner is refreshed first (MSAL's own
// margin is 5 minutes).
const refreshMargin = 5 * time.Minute

// tokens acquires the access tokens of one account. Its mutex serialises
// every use of the account's MSAL client and cache.
type tokens struct {
	mu     sync.Mutex
	app    public.Client
	http   *oauthHTTP
	box    *cacheBox
	scopes []string
	home   string
	acct   public.Account
	token  string
	until  time.Time
	// persist saves a cache MSAL changed (a redeemed refresh token).
	persist func(cache []byte) error
}

func newTokens(cfg config.Graph, a Account, base *http.Client, persist func([]byte) error) (*tokens, error) {
	t := &tokens{box: &cacheBox{}, http: newOAuthHTTP(base), home: a.HomeAccountID, persist: persist}
	t.box.set(a.Cache)
	for _, s := range a.Scopes {
		if n := scopeName(s); n == "Presence.Read" || n == "Presence.Read.All" {
			t.scopes = append(t.scopes, s)
		}
	}
	if len(t.scopes) == 0 {
		t.scopes = cfg.Scopes
	}
	app, err := msalClient(cfg, t.box, t.http)
	if err != nil {
		return nil, err
	}
	t.app = app
	return t, nil
}

// Token returns an access token: the one in hand while it is valid for
// more than refreshMargin, else MSAL's (which redeems the refresh token
// when needed). force drops the cached access token first (Graph refused
// it). Errors are *SignInRequiredError or *TransientError (or ctx's).
func (t *tokens) Token(ctx context.Context, force bool) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !force && t.token != "" && time.Until(t.until) > refreshMargin {
		return t.token, nil
	}
	t.token = ""
	if force {
		t.box.mu.Lock()
		dropped, err := dropAccessTokens(t.box.data)
		t.box.mu.Unlock()
		if err != nil {
			return "", &SignInRequiredError{Code: "unreadable_cache", Description: "the stored sign-in cannot be read"}
		}
		t.box.set(dropped)
	}
	if t.acct.HomeAccountID == "" {
		accounts, err := t.app.Accounts(ctx)
		if err != nil {
			return "", &SignInRequiredError{Code: "unreadable_cache", Description: "the stored sign-in cannot be read"}
		}
		for _, a := range accounts {
			if a.HomeAccountID == t.home {
				t.acct = a
			}
		}
		if t.acct.HomeAccountID == "" {
			return "", &SignInRequiredError{Code: "no_account", Description: "the stored sign-in holds no account"}
		}
	}
	t.http.reset()
	res, err := t.app.AcquireTokenSilent(ctx, t.scopes, public.WithSilentAccount(t.acct))
	if err != nil {
		return "", classify(ctx, err, t.http.lastError())
	}
	if data, ok := t.box.changed(); ok {
		t.box.set(data)
		if t.persist != nil {
			if err := t.persist(data); err != nil {
				return "", err
			}
		}
	}
	t.token, t.until = res.AccessToken, res.ExpiresOn
	return t.token, nil
}
