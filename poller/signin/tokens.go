package signin

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// CacheStore is the part of poller.Store that keeps token caches.
type CacheStore interface {
	TokenCache(ctx context.Context, id presence.UserID) ([]byte, error)
	PutTokenCache(ctx context.Context, id presence.UserID, sealed []byte) error
}

// Credential is the app registration's secret, its certificate, or a
// federated credential: Assertion returns a token another identity
// provider issued (a managed identity's, see ManagedIdentityAssertion), which
// Entra accepts in place of a secret when the app registration trusts that
// issuer and subject.
type Credential struct {
	Secret    string
	Certs     []*x509.Certificate
	Key       crypto.PrivateKey
	Assertion func(ctx context.Context) (string, error)
}

// msal turns the credential into MSAL's.
func (c Credential) msal() (confidential.Credential, error) {
	switch {
	case c.Assertion != nil:
		get := c.Assertion
		return confidential.NewCredFromAssertionCallback(func(ctx context.Context, _ confidential.AssertionRequestOptions) (string, error) {
			return get(ctx)
		}), nil
	case c.Secret != "":
		return confidential.NewCredFromSecret(c.Secret)
	}
	return confidential.NewCredFromCert(c.Certs, c.Key)
}

// TokensOptions configure Tokens.
type TokensOptions struct {
	// Authority is https://<host>/<tenant>; ClientID the app registration.
	Authority, ClientID string
	Credential          Credential
	// Scopes are the Graph scopes asked for (Presence.Read.All).
	Scopes []string
	// SecretKey (32 bytes) encrypts the caches at rest.
	SecretKey []byte
	Store     CacheStore
	// Clients is the number of MSAL clients in the pool; default 8.
	Clients int
	// HTTPClient is what MSAL uses (tests: one that trusts the fake Entra).
	HTTPClient *http.Client
	// InstanceDiscovery is on for Microsoft's cloud hosts, off for any
	// other authority host (used as given).
	InstanceDiscovery bool
}

// Tokens acquires people's Graph access tokens from their token caches.
//
// MSAL keeps one in-memory cache per client and calls our ExportReplace
// around each operation; a confidential client shared by several people
// with a keyed store is racy (silent calls fail with "no token found" and
// one person's tokens land in another's row). So each MSAL client here
// serves one person at a time: a pool of clients, each taken for one
// operation, bound to that person's cache, which is loaded (or explicitly
// cleared) before and saved after. The pool keeps MSAL's authority
// metadata warm without holding a client per person in memory.
//
// Caches are sealed with AES-256-GCM (a key derived from secret_key) bound
// to the person's id before they reach the store.
type Tokens struct {
	pool   chan *slot
	sealer *Sealer
	store  CacheStore
	scopes []string

	// accounts memoises MSAL's account of each person (a few short
	// strings), saving a second decode of the cache on every acquisition.
	mu       sync.Mutex
	accounts map[presence.UserID]confidential.Account
}

var _ poller.TokenSource = (*Tokens)(nil)

type slot struct {
	app confidential.Client
	acc *accessor
}

// accessor is the cache.ExportReplace of one slot: Replace loads the cache
// of the person the slot is bound to (or an empty one: the explicit clear),
// Export captures what MSAL wrote.
type accessor struct {
	mu    sync.Mutex
	load  []byte
	saved []byte
}

func (a *accessor) Replace(ctx context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	a.mu.Lock()
	data := a.load
	a.mu.Unlock()
	if len(data) == 0 {
		data = []byte("{}")
	}
	return u.Unmarshal(data)
}

func (a *accessor) Export(ctx context.Context, m cache.Marshaler, _ cache.ExportHints) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.saved = b
	a.mu.Unlock()
	return nil
}

func (a *accessor) bind(plain []byte) {
	a.mu.Lock()
	a.load, a.saved = plain, nil
	a.mu.Unlock()
}

func (a *accessor) result() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.saved
}

// NewTokens builds the pool; nothing is fetched until the first use.
func NewTokens(o TokensOptions) (*Tokens, error) {
	sealer, err := NewSealer(o.SecretKey, cacheLabel)
	if err != nil {
		return nil, err
	}
	n := o.Clients
	if n <= 0 {
		n = 8
	}
	cred, err := o.Credential.msal()
	if err != nil {
		return nil, fmt.Errorf("signin: credential: %w", err)
	}
	t := &Tokens{pool: make(chan *slot, n), sealer: sealer, store: o.Store, scopes: o.Scopes, accounts: map[presence.UserID]confidential.Account{}}
	for range n {
		acc := &accessor{}
		opts := []confidential.Option{confidential.WithCache(acc), confidential.WithInstanceDiscovery(o.InstanceDiscovery)}
		if o.HTTPClient != nil {
			opts = append(opts, confidential.WithHTTPClient(o.HTTPClient))
		}
		app, err := confidential.New(o.Authority, o.ClientID, cred, opts...)
		if err != nil {
			return nil, fmt.Errorf("signin: msal client: %w", err)
		}
		t.pool <- &slot{app: app, acc: acc}
	}
	return t, nil
}

func (t *Tokens) take(ctx context.Context) (*slot, error) {
	select {
	case s := <-t.pool:
		return s, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (t *Tokens) give(s *slot) {
	s.acc.bind(nil) // nothing of this person stays in the slot
	t.pool <- s
}

func aad(id presence.UserID) []byte {
	return []byte("token-cache:" + string(presence.CanonicalUserID(string(id))))
}

// Token returns a valid access token for the person, redeeming the refresh
// token when the cached one expired (and then storing the new cache). A
// refresh token Entra refuses (invalid_grant, interaction_required,
// login_required, consent_required), or no cache at all, is
// poller.ErrSignInRequired.
func (t *Tokens) Token(ctx context.Context, a poller.Account) (string, error) {
	sealed, err := t.store.TokenCache(ctx, a.UserID)
	if err != nil {
		return "", fmt.Errorf("signin: read token cache: %w", err)
	}
	if sealed == nil {
		return "", poller.ErrSignInRequired
	}
	plain, err := t.sealer.Open(sealed, aad(a.UserID))
	if err != nil {
		// Sealed with another secret_key (or damaged): only a new sign-in
		// makes a cache this poller can read.
		return "", fmt.Errorf("%w: the stored token cache cannot be opened (was secret_key changed?)", poller.ErrSignInRequired)
	}
	s, err := t.take(ctx)
	if err != nil {
		return "", err
	}
	defer t.give(s)
	s.acc.bind(plain)
	t.mu.Lock()
	acct, known := t.accounts[a.UserID]
	t.mu.Unlock()
	if !known || acct.HomeAccountID != a.HomeAccountID {
		if acct, err = s.app.Account(ctx, a.HomeAccountID); err != nil {
			return "", fmt.Errorf("signin: account: %w", err)
		}
		if acct.HomeAccountID == "" {
			return "", poller.ErrSignInRequired
		}
		t.mu.Lock()
		t.accounts[a.UserID] = acct
		t.mu.Unlock()
	}
	res, err := s.app.AcquireTokenSilent(ctx, t.scopes, confidential.WithSilentAccount(acct))
	if err != nil {
		return "", classify(err)
	}
	if saved := s.acc.result(); saved != nil && !bytes.Equal(saved, plain) {
		if err := t.store.PutTokenCache(context.WithoutCancel(ctx), a.UserID, t.sealer.Seal(saved, aad(a.UserID))); err != nil {
			return "", fmt.Errorf("signin: store token cache: %w", err)
		}
	}
	return res.AccessToken, nil
}

// Forget drops what Tokens remembers of a person (accounts remove).
func (t *Tokens) Forget(id presence.UserID) {
	t.mu.Lock()
	delete(t.accounts, id)
	t.mu.Unlock()
}

// SaveCache seals and stores a cache made by a sign-in.
func (t *Tokens) SaveCache(ctx context.Context, id presence.UserID, plain []byte) error {
	if err := t.store.PutTokenCache(ctx, id, t.sealer.Seal(plain, aad(id))); err != nil {
		return fmt.Errorf("signin: store token cache: %w", err)
	}
	return nil
}

// authCodeURL is MSAL's authorize URL (without state, nonce, PKCE or
// response_mode, which MSAL cannot add).
func (t *Tokens) authCodeURL(ctx context.Context, clientID, redirectURI, loginHint string) (string, error) {
	s, err := t.take(ctx)
	if err != nil {
		return "", err
	}
	defer t.give(s)
	var opts []confidential.AuthCodeURLOption
	if loginHint != "" {
		opts = append(opts, confidential.WithLoginHint(loginHint))
	}
	// MSAL adds the OpenID Connect scopes to token requests but not to the
	// authorize URL: ask for them, and for the refresh token, here.
	scopes := append([]string{}, t.scopes...)
	scopes = append(scopes, "offline_access", "openid", "profile")
	return s.app.AuthCodeURL(ctx, clientID, redirectURI, scopes, opts...)
}

// redeem exchanges a code for tokens with the PKCE verifier, in a slot
// whose cache is cleared first; it returns the result and the new cache
// (not stored: the caller checks the id token first).
func (t *Tokens) redeem(ctx context.Context, code, redirectURI, verifier string) (confidential.AuthResult, []byte, error) {
	s, err := t.take(ctx)
	if err != nil {
		return confidential.AuthResult{}, nil, err
	}
	defer t.give(s)
	s.acc.bind(nil)
	res, err := s.app.AcquireTokenByAuthCode(ctx, code, redirectURI, t.scopes, confidential.WithChallenge(verifier))
	if err != nil {
		return res, nil, classify(err)
	}
	return res, s.acc.result(), nil
}

// EntraError is a refusal from Entra's token endpoint, by its OAuth error
// code; its text never holds a token or code.
type EntraError struct {
	Code        string // invalid_grant, ...
	Description string // the first line of error_description (AADSTS...)
	Status      int
}

func (e *EntraError) Error() string {
	return fmt.Sprintf("signin: entra refused (HTTP %d %s): %s", e.Status, e.Code, e.Description)
}

// classify turns an MSAL error into an *EntraError (or ErrSignInRequired
// wrapping it, for the codes that need a new sign-in), without MSAL's text,
// which repeats URLs and bodies.
func classify(err error) error {
	var ce msalerrors.CallErr
	if !errors.As(err, &ce) || ce.Resp == nil {
		return fmt.Errorf("signin: %w", err)
	}
	ee := &EntraError{Status: ce.Resp.StatusCode}
	text := ce.Error()
	if i := strings.IndexByte(text, '\n'); i >= 0 {
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal([]byte(text[i+1:]), &body) == nil {
			ee.Code = clip(body.Error, 64)
			desc, _, _ := strings.Cut(body.Description, "\r")
			desc, _, _ = strings.Cut(desc, "\n")
			ee.Description = clip(desc, 300)
		}
	}
	switch ee.Code {
	case "invalid_grant", "interaction_required", "login_required", "consent_required":
		return fmt.Errorf("%w: %w", poller.ErrSignInRequired, ee)
	}
	return ee
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
