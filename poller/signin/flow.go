package signin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// CookieName is the sign-in cookie.
const CookieName = "presence_signin"

// CookieMaxAge is how long a sign-in may take (the cookie and the sealed
// value both expire).
const CookieMaxAge = 10 * time.Minute

// Failure says why a sign-in was refused; each has a page that tells the
// person what to do. Nothing is stored for any of them.
type Failure string

// Failures (SPEC §9: every one answers 400).
const (
	FailEntra        Failure = "entra_error"   // Entra posted error / error_description
	FailNoCookie     Failure = "no_cookie"     // the sealed cookie is missing
	FailForged       Failure = "forged_cookie" // it does not open
	FailExpired      Failure = "expired"       // older than CookieMaxAge
	FailState        Failure = "state"         // missing state, or not the cookie's
	FailNoCode       Failure = "no_code"       // no code posted
	FailRedeem       Failure = "redeem"        // Entra refused the code (replayed, wrong verifier, expired)
	FailNonce        Failure = "nonce"         // the id token's nonce is not the cookie's
	FailIDToken      Failure = "id_token"      // no usable id token
	FailUnavailable  Failure = "unavailable"   // Entra could not be reached
	FailUnknownError Failure = "internal"      // anything else
)

// Error is a refused sign-in.
type Error struct {
	Failure Failure
	// Detail is safe to show and log: Entra's error code and AADSTS text,
	// never a code, token or cookie.
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "signin: " + string(e.Failure)
	}
	return "signin: " + string(e.Failure) + ": " + e.Detail
}

// FlowOptions configure a Flow.
type FlowOptions struct {
	ClientID    string
	RedirectURI string
	SecretKey   []byte
	Tokens      *Tokens
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Flow runs the authorization-code flow: Start builds the authorize URL and
// the sealed cookie, Finish checks the answer and redeems the code.
type Flow struct {
	o      FlowOptions
	sealer *Sealer
}

// NewFlow makes a Flow.
func NewFlow(o FlowOptions) (*Flow, error) {
	s, err := NewSealer(o.SecretKey, cookieLabel)
	if err != nil {
		return nil, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Flow{o: o, sealer: s}, nil
}

// ticket is what the cookie carries.
type ticket struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Expires  int64  `json:"e"` // Unix seconds
}

var cookieAAD = []byte("presence-poller sign-in v1")

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Start returns the URL to send the person to and the cookie to set.
func (f *Flow) Start(ctx context.Context, loginHint string) (string, *http.Cookie, error) {
	base, err := f.o.Tokens.authCodeURL(ctx, f.o.ClientID, f.o.RedirectURI, loginHint)
	if err != nil {
		return "", nil, &Error{Failure: FailUnavailable, Detail: "cannot reach the sign-in service"}
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("signin: authorize URL: %w", err)
	}
	t := ticket{State: random(), Nonce: random(), Verifier: random() + random()[:11], Expires: f.o.Now().Add(CookieMaxAge).Unix()}
	sum := sha256.Sum256([]byte(t.Verifier))
	q := u.Query()
	q.Set("state", t.State)
	q.Set("nonce", t.Nonce)
	q.Set("code_challenge", base64.RawURLEncoding.EncodeToString(sum[:]))
	q.Set("code_challenge_method", "S256")
	q.Set("response_mode", "form_post")
	u.RawQuery = q.Encode()
	plain, _ := json.Marshal(t)
	return u.String(), f.cookie(f.sealer.SealString(plain, cookieAAD), int(CookieMaxAge.Seconds())), nil
}

func (f *Flow) cookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: value, Path: "/auth/", MaxAge: maxAge, HttpOnly: true, Secure: true, SameSite: http.SameSiteNoneMode}
}

// ClearCookie removes the sign-in cookie (set on every /auth/end answer).
func (f *Flow) ClearCookie() *http.Cookie { return f.cookie("", -1) }

// Identity is who signed in.
type Identity struct {
	UserID        presence.UserID
	TenantID      string
	Name          string
	UPN           string
	HomeAccountID string
	// Cache is the person's new MSAL token cache, plaintext: seal it with
	// Tokens.SaveCache.
	Cache []byte
}

// Finish checks the posted answer (form) against the cookie, redeems the
// code with the PKCE verifier and checks the id token's nonce. A refusal is
// an *Error.
func (f *Flow) Finish(ctx context.Context, form url.Values, cookie *http.Cookie) (Identity, error) {
	if e := form.Get("error"); e != "" {
		desc, _, _ := strings.Cut(form.Get("error_description"), "\r")
		desc, _, _ = strings.Cut(desc, "\n")
		return Identity{}, &Error{Failure: FailEntra, Detail: clip(e, 64) + ": " + clip(desc, 300)}
	}
	if cookie == nil || cookie.Value == "" {
		return Identity{}, &Error{Failure: FailNoCookie}
	}
	plain, err := f.sealer.OpenString(cookie.Value, cookieAAD)
	if err != nil {
		return Identity{}, &Error{Failure: FailForged}
	}
	var t ticket
	if err := json.Unmarshal(plain, &t); err != nil || t.State == "" || t.Nonce == "" || t.Verifier == "" {
		return Identity{}, &Error{Failure: FailForged}
	}
	if f.o.Now().Unix() > t.Expires {
		return Identity{}, &Error{Failure: FailExpired}
	}
	state := form.Get("state")
	if state == "" || subtle.ConstantTimeCompare([]byte(state), []byte(t.State)) != 1 {
		return Identity{}, &Error{Failure: FailState}
	}
	code := form.Get("code")
	if code == "" {
		return Identity{}, &Error{Failure: FailNoCode}
	}
	res, cache, err := f.o.Tokens.redeem(ctx, code, f.o.RedirectURI, t.Verifier)
	if err != nil {
		var ee *EntraError
		if errors.As(err, &ee) {
			return Identity{}, &Error{Failure: FailRedeem, Detail: ee.Code + ": " + ee.Description}
		}
		return Identity{}, &Error{Failure: FailUnavailable, Detail: "cannot reach the sign-in service"}
	}
	claims, err := idClaims(res.IDToken.RawToken)
	if err != nil {
		return Identity{}, &Error{Failure: FailIDToken, Detail: err.Error()}
	}
	if claims.Nonce == "" || subtle.ConstantTimeCompare([]byte(claims.Nonce), []byte(t.Nonce)) != 1 {
		return Identity{}, &Error{Failure: FailNonce}
	}
	oid, err := presence.ParseUserID(claims.OID)
	if err != nil || claims.TID == "" || cache == nil {
		return Identity{}, &Error{Failure: FailIDToken, Detail: "the id token names no object id and tenant"}
	}
	upn := claims.PreferredUsername
	if upn == "" {
		upn = claims.UPN
	}
	return Identity{UserID: oid, TenantID: strings.ToLower(claims.TID), Name: claims.Name, UPN: upn,
		HomeAccountID: res.Account.HomeAccountID, Cache: cache}, nil
}

type claims struct {
	Nonce             string `json:"nonce"`
	OID               string `json:"oid"`
	TID               string `json:"tid"`
	Name              string `json:"name"`
	PreferredUsername string `json:"preferred_username"`
	UPN               string `json:"upn"`
}

// idClaims decodes an id token's claims. MSAL fetched it from the token
// endpoint over TLS (it is not a bearer credential here), so its signature
// is not checked again; the nonce binds it to this sign-in.
func idClaims(raw string) (claims, error) {
	var c claims
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || len(raw) > 16<<10 {
		return c, errors.New("the id token is not a JWT")
	}
	body, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, errors.New("the id token's claims are not base64url")
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return c, errors.New("the id token's claims are not JSON")
	}
	return c, nil
}
