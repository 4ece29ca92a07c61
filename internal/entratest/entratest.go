// Package entratest is a fake Microsoft Entra ID (the login.microsoftonline.com
// OAuth 2.0 / OpenID Connect endpoints) over TLS, for tests and the demo.
//
// It serves, for any tenant segment:
//
//   - GET  /<tenant>/v2.0/.well-known/openid-configuration
//   - GET  /<tenant>/oauth2/v2.0/authorize: a page listing the simulated
//     people, each a button; choosing one form-posts code and state to the
//     redirect_uri (response_mode=form_post), Cancel posts an error
//   - POST /<tenant>/oauth2/v2.0/token: authorization_code (single-use codes,
//     PKCE S256 checked, redirect_uri checked), refresh_token (refused once
//     the person's sign-ins are revoked), client_credentials (an app
//     token of the tenant in the path) and the device code grant
//   - POST /<tenant>/oauth2/v2.0/devicecode: the device authorization
//     request of the device-code flow (RFC 8628); the test plays the person
//     who enters the code (EnterCode, DeclineCode, ExpireCode, SlowDown), see
//     devicecode.go
//
// A confidential client authenticates with client_secret, or with a
// client_assertion (a certificate's signed JWT, or a federated credential
// such as a managed identity's token); Options.ClientAssertion decides
// which assertions pass, and Assertions records them.
//
// Tokens carry what MSAL needs: id tokens with the nonce, oid, tid, name and
// preferred_username; client_info; the requested scope echoed. Access
// tokens are opaque; AccessTokenOwner tells whose one is (the fake Graph
// uses it). Every secret it issues is recorded (Secrets), so that a test can
// check that none of them reaches a log line or a page.
//
// It also signs what Microsoft Graph's change-notification publisher gets
// from Entra: ChangeNotificationToken mints the validationTokens of rich
// notifications (RS256 with the fake's signing key), whose public half the
// fake publishes at /<tenant>/discovery/v2.0/keys (and /discovery/keys),
// as Entra does.
package entratest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"html/template"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// Person is a simulated colleague who can sign in.
type Person struct {
	ObjectID presence.UserID
	TenantID string
	Name     string // display name; may hold anything (tests use hostile HTML)
	UPN      string
}

// Options configure a Server.
type Options struct {
	// ClientID is the only client accepted; empty accepts any.
	ClientID string
	// ClientSecret, when set, is required of confidential clients that
	// authenticate with a secret (a client_assertion is accepted as is).
	ClientSecret string
	People       []Person
	// ClientAssertion, when set, checks every client_assertion (nil error:
	// accepted); unset, any assertion is accepted.
	ClientAssertion func(assertion string) error
	// TokenLifetime of access tokens; default 1 h. MSAL treats a token that
	// expires within 5 minutes as expired, so a shorter lifetime makes
	// every silent acquisition redeem the refresh token.
	TokenLifetime time.Duration
	// DeviceCodeInterval is the polling interval the device authorization
	// answers, in whole seconds (default 5, Entra's); a poll sooner than
	// that after the previous one is answered slow_down.
	DeviceCodeInterval int
	// DeviceCodeLifetime is how long a device code may be entered (default
	// 15 minutes, Entra's).
	DeviceCodeLifetime time.Duration
	// SignInPageURL, when set, is where browsers meet the sign-in page
	// (the authorization endpoint the discovery document names): a plain
	// http server of the caller's that serves SignInPage, so that a person
	// trying the demo sees no certificate warning. The token endpoint stays
	// on the fake's TLS server, as MSAL requires.
	SignInPageURL string
}

type code struct {
	person      Person
	clientID    string
	redirectURI string
	challenge   string
	nonce       string
	scope       string
	expires     time.Time
	used        bool
}

type refresh struct {
	person Person
	scope  string
}

type owner struct {
	user    presence.UserID
	tenant  string
	scope   string
	expires time.Time
}

// Server is a running fake.
type Server struct {
	srv      *httptest.Server
	opts     Options
	lifetime time.Duration

	mu         sync.Mutex
	people     []Person
	codes      map[string]*code
	refreshes  map[string]refresh
	access     map[string]owner
	secrets    []string
	tokenReqs  map[string]int // by grant type
	assertions []string

	signOnce sync.Once
	signKey  *rsa.PrivateKey
	devices  deviceCodes
	failNext int // token and devicecode requests to drop (a network error)
}

// SigningKeyID is the kid of the fake's token-signing key.
const SigningKeyID = "entratest-signing-key-1"

// GraphPublisherAppID is the appid of Graph's change-notification
// publisher, which validation tokens carry.
const GraphPublisherAppID = "0bf30f3b-4a52-48df-9a82-234910c4a086"

// New starts a fake on a loopback port with a self-signed certificate;
// Client trusts it. Close stops it.
func New(o Options) *Server {
	s := &Server{
		opts:      o,
		lifetime:  o.TokenLifetime,
		people:    slices.Clone(o.People),
		codes:     make(map[string]*code),
		refreshes: make(map[string]refresh),
		access:    make(map[string]owner),
		tokenReqs: make(map[string]int),
	}
	if s.lifetime <= 0 {
		s.lifetime = time.Hour
	}
	if o.ClientSecret != "" {
		s.secrets = append(s.secrets, o.ClientSecret)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", s.discovery)
	mux.Handle("/{tenant}/oauth2/v2.0/authorize/", s.SignInPage())
	mux.Handle("/{tenant}/oauth2/v2.0/authorize", s.SignInPage())
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.token)
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", s.keys)
	mux.HandleFunc("GET /{tenant}/discovery/keys", s.keys)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/devicecode", s.deviceAuthorization)
	s.srv = httptest.NewTLSServer(mux)
	return s
}

// URL is the fake's base URL (https://127.0.0.1:port).
func (s *Server) URL() string { return s.srv.URL }

// Authority is the authority URL of a tenant segment ("organizations", a
// tenant id).
func (s *Server) Authority(tenant string) string { return s.srv.URL + "/" + tenant }

// Client is an HTTP client that trusts the fake's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// CertificatePEM is the fake's TLS certificate (httptest's, shared by every
// httptest TLS server, so it also trusts the fake Graph and the management
// fake): a process under test trusts them all with SSL_CERT_FILE.
func (s *Server) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// AddPerson adds a colleague who can sign in.
func (s *Server) AddPerson(p Person) {
	s.mu.Lock()
	s.people = append(s.people, p)
	s.mu.Unlock()
}

// Revoke makes every refresh token of the person fail with invalid_grant
// from now on (an admin revoking sessions, a password reset). Signing in
// again issues tokens that work.
func (s *Server) Revoke(id presence.UserID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, r := range s.refreshes {
		if r.person.ObjectID == id {
			delete(s.refreshes, tok)
		}
	}
}

// AccessTokenOwner tells whose access token tok is; false for a token the
// fake did not issue or that expired. An app token (client credentials)
// has no person: its user is "".
func (s *Server) AccessTokenOwner(tok string) (presence.UserID, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.access[tok]
	if !ok || time.Now().After(o.expires) {
		return "", "", false
	}
	return o.user, o.tenant, true
}

// Secrets returns every secret the fake issued or was given: codes, access,
// refresh and id tokens, and the client secret.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.secrets)
}

// Assertions returns the client assertions that token requests carried,
// in order.
func (s *Server) Assertions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.assertions)
}

// TokenRequests counts token requests by grant type.
func (s *Server) TokenRequests(grant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenReqs[grant]
}

func (s *Server) mint(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	v := prefix + base64.RawURLEncoding.EncodeToString(b)
	s.secrets = append(s.secrets, v)
	return v
}

// SignInPage serves the sign-in page a browser meets (GET
// /<tenant>/oauth2/v2.0/authorize and its form's POST .../authorize/choose),
// to be mounted on another server when Options.SignInPageURL names it.
func (s *Server) SignInPage() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", s.authorizePage)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/authorize/choose", s.choose)
	return mux
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	base := s.srv.URL + "/" + r.PathValue("tenant")
	page := base
	if s.opts.SignInPageURL != "" {
		page = strings.TrimSuffix(s.opts.SignInPageURL, "/") + "/" + r.PathValue("tenant")
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"authorization_endpoint":                page + "/oauth2/v2.0/authorize",
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"issuer":                                base + "/v2.0",
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"response_types_supported":              []string{"code", "id_token", "code id_token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"code_challenge_methods_supported":      []string{"S256"},
	})
}

// request is a validated authorize request.
type request struct {
	clientID, redirectURI, state, nonce, challenge, scope, loginHint string
}

func (s *Server) parseAuthorize(q url.Values) (request, error) {
	r := request{
		clientID: q.Get("client_id"), redirectURI: q.Get("redirect_uri"), state: q.Get("state"),
		nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), scope: q.Get("scope"), loginHint: q.Get("login_hint"),
	}
	switch {
	case r.clientID == "" || (s.opts.ClientID != "" && r.clientID != s.opts.ClientID):
		return r, errors.New("AADSTS700016: Application not found in the directory")
	case q.Get("response_type") != "code":
		return r, errors.New("AADSTS900144: response_type must be code")
	case r.redirectURI == "":
		return r, errors.New("AADSTS900144: redirect_uri is required")
	case q.Get("response_mode") != "form_post":
		return r, errors.New("this fake only answers response_mode=form_post")
	case r.challenge == "" || q.Get("code_challenge_method") != "S256":
		return r, errors.New("AADSTS9002325: Proof Key for Code Exchange is required (code_challenge with S256)")
	case r.state == "" || r.nonce == "":
		return r, errors.New("state and nonce are required by this fake")
	}
	return r, nil
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in (simulated Microsoft)</title>
<style>body{font-family:sans-serif;max-width:30em;margin:3em auto}button{display:block;width:100%;margin:.4em 0;padding:.7em;font-size:1em;text-align:left}</style>
</head><body>
<h1>Pick an account</h1>
<p>This is a simulated Microsoft sign-in page: choose who you are.</p>
{{range .People}}<form method="post" action="{{$.Action}}">
<input type="hidden" name="query" value="{{$.Query}}"><input type="hidden" name="person" value="{{.ObjectID}}">
<button type="submit" id="person-{{.ObjectID}}">{{.Name}} <small>{{.UPN}}</small></button></form>
{{end}}<form method="post" action="{{.Action}}"><input type="hidden" name="query" value="{{.Query}}"><input type="hidden" name="person" value="">
<button type="submit" id="cancel">Cancel</button></form>
</body></html>`))

var postTmpl = template.Must(template.New("post").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Working...</title></head>
<body onload="document.forms[0].submit()"><form method="post" action="{{.Action}}">
{{range $k, $v := .Fields}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<noscript><button type="submit">Continue</button></noscript></form></body></html>`))

func (s *Server) authorizePage(w http.ResponseWriter, r *http.Request) {
	if _, err := s.parseAuthorize(r.URL.Query()); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	people := slices.Clone(s.people)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = pageTmpl.Execute(w, map[string]any{
		"People": people,
		"Action": "/" + r.PathValue("tenant") + "/oauth2/v2.0/authorize/choose",
		"Query":  r.URL.RawQuery,
	})
}

// choose is the page's button: it answers the auto-submitting form that
// carries code and state (or an error) to the redirect URI.
func (s *Server) choose(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.PostFormValue("query"))
	if err != nil {
		http.Error(w, "bad query", http.StatusBadRequest)
		return
	}
	redirect, fields, err := s.SignIn(q, presence.UserID(r.PostFormValue("person")))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	flat := map[string]string{}
	for k := range fields {
		flat[k] = fields.Get(k)
	}
	_ = postTmpl.Execute(w, map[string]any{"Action": redirect, "Fields": flat})
}

// SignIn does what the authorize page does when the person with id picks
// their account (an empty id: Cancel): it checks the authorize request's
// parameters (query) and returns the redirect URI and the form fields Entra
// would post there (code and state, or error, error_description and state).
func (s *Server) SignIn(query url.Values, id presence.UserID) (redirectURI string, form url.Values, err error) {
	req, err := s.parseAuthorize(query)
	if err != nil {
		return "", nil, err
	}
	if id == "" {
		return req.redirectURI, url.Values{"error": {"access_denied"}, "error_description": {"AADSTS65004: User declined to consent to access the app."}, "state": {req.state}}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.people, func(p Person) bool { return p.ObjectID == presence.CanonicalUserID(string(id)) })
	if i < 0 {
		return "", nil, fmt.Errorf("no simulated person %s", id)
	}
	c := s.mint("code-")
	s.codes[c] = &code{person: s.people[i], clientID: req.clientID, redirectURI: req.redirectURI, challenge: req.challenge,
		nonce: req.nonce, scope: req.scope, expires: time.Now().Add(10 * time.Minute)}
	return req.redirectURI, url.Values{"code": {c}, "state": {req.state}}, nil
}

// SignInURL is SignIn for an authorize URL (what /auth/start redirects to).
func (s *Server) SignInURL(authorizeURL string, id presence.UserID) (string, url.Values, error) {
	u, err := url.Parse(authorizeURL)
	if err != nil {
		return "", nil, err
	}
	if !strings.HasPrefix(authorizeURL, s.srv.URL+"/") {
		return "", nil, fmt.Errorf("%s is not this fake's", u.Host)
	}
	return s.SignIn(u.Query(), id)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed body")
		return
	}
	f := r.PostForm
	grant := f.Get("grant_type")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenReqs[grant]++
	if s.dropLocked(w) {
		return
	}
	clientID := f.Get("client_id")
	if clientID == "" || (s.opts.ClientID != "" && clientID != s.opts.ClientID) {
		oauthError(w, http.StatusBadRequest, "unauthorized_client", "AADSTS700016: Application not found in the directory.")
		return
	}
	if a := f.Get("client_assertion"); a != "" {
		s.assertions = append(s.assertions, a)
		if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS50027: client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.")
			return
		}
		if s.opts.ClientAssertion != nil {
			if err := s.opts.ClientAssertion(a); err != nil {
				oauthError(w, http.StatusUnauthorized, "invalid_client", "AADSTS700213: No matching federated identity record found for presented assertion: "+err.Error())
				return
			}
		}
	}
	if f.Get("client_assertion") == "" && s.opts.ClientSecret != "" &&
		subtle.ConstantTimeCompare([]byte(f.Get("client_secret")), []byte(s.opts.ClientSecret)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
		return
	}
	switch grant {
	case "authorization_code":
		c := s.codes[f.Get("code")]
		switch {
		case c == nil || time.Now().After(c.expires):
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70008: The provided authorization code or refresh token has expired or is invalid.")
			return
		case c.used:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.")
			return
		}
		c.used = true
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case c.clientID != clientID:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70000: The code was issued to another client.")
		case c.redirectURI != f.Get("redirect_uri"):
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS50148: The redirect_uri does not match the one of the authorization request.")
		case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.")
		default:
			s.issue(w, c.person, c.nonce, echoScope(c.scope, f.Get("scope")))
		}
	case "refresh_token":
		rt, ok := s.refreshes[f.Get("refresh_token")]
		if !ok {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed.")
			return
		}
		s.issue(w, rt.person, "", echoScope(rt.scope, f.Get("scope")))
	case deviceCodeGrant, "device_code": // MSAL sends the short form, Entra takes both
		s.pollDeviceCode(w, f)
	case "client_credentials":
		at := s.mint("app-at-")
		s.access[at] = owner{tenant: r.PathValue("tenant"), expires: time.Now().Add(s.lifetime)}
		writeJSON(w, http.StatusOK, map[string]any{
			"token_type": "Bearer", "access_token": at, "expires_in": int(s.lifetime.Seconds()),
			"ext_expires_in": int(s.lifetime.Seconds()), "scope": f.Get("scope"),
		})
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
	}
}

// echoScope is what Entra answers in scope: the requested resource scopes
// (without OIDC's), or those of the original grant.
func echoScope(granted, requested string) string {
	src := requested
	if src == "" {
		src = granted
	}
	var out []string
	for sc := range strings.FieldsSeq(src) {
		switch sc {
		case "openid", "profile", "offline_access", "email":
			continue
		}
		out = append(out, sc)
	}
	return strings.Join(out, " ")
}

func (s *Server) issue(w http.ResponseWriter, p Person, nonce, scope string) {
	at := s.mint("at-")
	rt := s.mint("rt-")
	s.access[at] = owner{user: p.ObjectID, tenant: p.TenantID, scope: scope, expires: time.Now().Add(s.lifetime)}
	s.refreshes[rt] = refresh{person: p, scope: scope}
	now := time.Now()
	claims := map[string]any{
		"aud": s.opts.ClientID, "iss": s.srv.URL + "/" + p.TenantID + "/v2.0", "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "name": p.Name, "oid": string(p.ObjectID), "preferred_username": p.UPN,
		"sub": "sub-" + string(p.ObjectID), "tid": p.TenantID, "ver": "2.0",
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	idt := jwt(claims)
	s.secrets = append(s.secrets, idt)
	info, _ := json.Marshal(map[string]string{"uid": string(p.ObjectID), "utid": p.TenantID})
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "scope": scope, "expires_in": int(s.lifetime.Seconds()), "ext_expires_in": int(s.lifetime.Seconds()),
		"access_token": at, "refresh_token": rt, "id_token": idt, "client_info": base64.RawURLEncoding.EncodeToString(info),
	})
}

// jwt builds an unsigned-looking token: MSAL decodes the claims without
// checking the signature, and the poller checks only the nonce.
func jwt(claims map[string]any) string {
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "fake"})
	body, _ := json.Marshal(claims)
	sig := make([]byte, 32)
	_, _ = rand.Read(sig)
	return base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString(body) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// signingKey is made on first use (most tests never need it).
func (s *Server) signingKey() *rsa.PrivateKey {
	s.signOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err) // the system's randomness failed: nothing can run
		}
		s.signKey = k
	})
	return s.signKey
}

// keys serves the signing keys as a JSON Web Key Set.
func (s *Server) keys(w http.ResponseWriter, r *http.Request) {
	pub := s.signingKey().PublicKey
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "use": "sig", "kid": SigningKeyID, "x5t": SigningKeyID,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

// ChangeNotificationToken is a validation token as Microsoft Graph puts in
// rich notifications for the app Options.ClientID and tenant: a v1 token
// issued by https://sts.windows.net/<tenant>/ to Graph's publisher
// (appid GraphPublisherAppID), valid for an hour, signed with the key the
// fake publishes.
func (s *Server) ChangeNotificationToken(tenant string) string {
	now := time.Now()
	return s.SignToken(map[string]any{
		"aud": s.opts.ClientID, "iss": "https://sts.windows.net/" + tenant + "/", "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "appid": GraphPublisherAppID, "appidacr": "2",
		"idp": "https://sts.windows.net/" + tenant + "/", "tid": tenant, "ver": "1.0",
	})
}

// SignToken signs any claims with the fake's key (RS256), for tests that
// need a token with something wrong in it.
func (s *Server) SignToken(claims map[string]any) string {
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": SigningKeyID, "x5t": SigningKeyID})
	body, _ := json.Marshal(claims)
	signed := base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString(body)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.signingKey(), crypto.SHA256, sum[:])
	if err != nil {
		panic(err) // cannot happen with a valid key
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]any{
		"error": code, "error_description": desc + "\r\nTrace ID: 00000000-0000-0000-0000-000000000000\r\nTimestamp: " + time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		"error_codes": []int{}, "timestamp": time.Now().UTC().Format("2006-01-02 15:04:05Z"),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
