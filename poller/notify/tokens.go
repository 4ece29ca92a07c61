package notify

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// GraphPublisherAppID is the application id of Microsoft Graph's
// change-notification publisher: the appid of every validation token.
const GraphPublisherAppID = "0bf30f3b-4a52-48df-9a82-234910c4a086"

// ErrBadToken: a validation token is not one Graph issued for this app.
var ErrBadToken = errors.New("notify: validation token refused")

// Validator defaults.
const (
	// defaultLeeway tolerates clock skew on exp and nbf.
	defaultLeeway = 5 * time.Minute
	// keysFor is how long fetched signing keys are trusted before they are
	// fetched again (Entra rotates them every few weeks; an unknown kid
	// refetches sooner).
	keysFor = 24 * time.Hour
	// refetchEvery bounds the fetches an unknown kid can cause.
	refetchEvery = time.Minute
	maxToken     = 16 << 10
)

// TokenValidatorOptions configure a TokenValidator.
type TokenValidatorOptions struct {
	// KeysURL is the authority's JSON Web Key Set:
	// <authority>/discovery/v2.0/keys.
	KeysURL string
	// ClientID is the app registration: every token's audience.
	ClientID   string
	HTTPClient *http.Client
	// Leeway on exp and nbf; default 5 minutes.
	Leeway time.Duration
}

// TokenValidator checks the validationTokens of rich notifications: JWTs
// signed (RS256) by one of the authority's keys, for this app (aud), issued
// to Graph's change-notification publisher (appid, or azp in a v2 token),
// not expired, naming a tenant (tid) with a matching issuer.
type TokenValidator struct {
	o    TokenValidatorOptions
	http *http.Client

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetched time.Time
	tried   time.Time
}

// NewTokenValidator makes a validator; keys are fetched on first use (or
// by Refresh).
func NewTokenValidator(o TokenValidatorOptions) *TokenValidator {
	if o.Leeway <= 0 {
		o.Leeway = defaultLeeway
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &TokenValidator{o: o, http: hc}
}

// KeysURL is the signing-key set of an authority
// (https://login.microsoftonline.com/organizations → …/discovery/v2.0/keys).
func KeysURL(authority string) string {
	return strings.TrimRight(authority, "/") + "/discovery/v2.0/keys"
}

// Refresh fetches the signing keys now (serve warms the validator at start
// so that the first notification does not wait for it).
func (v *TokenValidator) Refresh(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fetch(ctx)
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

type jwtClaims struct {
	Aud   audience `json:"aud"`
	Iss   string   `json:"iss"`
	AppID string   `json:"appid"`
	Azp   string   `json:"azp"`
	Tid   string   `json:"tid"`
	Exp   *float64 `json:"exp"`
	Nbf   *float64 `json:"nbf"`
}

// audience is aud as a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// Validate checks one token and returns the tenant it was issued for.
func (v *TokenValidator) Validate(ctx context.Context, token string) (string, error) {
	if len(token) > maxToken {
		return "", fmt.Errorf("%w: too long", ErrBadToken)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: not a JWT", ErrBadToken)
	}
	var h jwtHeader
	if err := decodeSegment(parts[0], &h); err != nil {
		return "", fmt.Errorf("%w: header: %v", ErrBadToken, err)
	}
	if h.Alg != "RS256" || h.Kid == "" {
		return "", fmt.Errorf("%w: algorithm %q (want RS256 with a kid)", ErrBadToken, clip(h.Alg, 16))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("%w: signature is not base64url", ErrBadToken)
	}
	key, err := v.key(ctx, h.Kid)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return "", fmt.Errorf("%w: bad signature", ErrBadToken)
	}
	var c jwtClaims
	if err := decodeSegment(parts[1], &c); err != nil {
		return "", fmt.Errorf("%w: claims: %v", ErrBadToken, err)
	}
	now := time.Now()
	switch {
	case c.Exp == nil || now.After(time.Unix(int64(*c.Exp), 0).Add(v.o.Leeway)):
		return "", fmt.Errorf("%w: expired", ErrBadToken)
	case c.Nbf != nil && now.Add(v.o.Leeway).Before(time.Unix(int64(*c.Nbf), 0)):
		return "", fmt.Errorf("%w: not valid yet", ErrBadToken)
	case !containsFold(c.Aud, v.o.ClientID):
		return "", fmt.Errorf("%w: issued for another app", ErrBadToken)
	case !strings.EqualFold(c.AppID, GraphPublisherAppID) && !strings.EqualFold(c.Azp, GraphPublisherAppID):
		return "", fmt.Errorf("%w: not issued to Graph's change-notification publisher", ErrBadToken)
	case !presence.IsGUID(c.Tid):
		return "", fmt.Errorf("%w: no tenant", ErrBadToken)
	case !issuerOf(c.Iss, c.Tid):
		return "", fmt.Errorf("%w: issuer does not match the tenant", ErrBadToken)
	}
	return strings.ToLower(c.Tid), nil
}

// issuerOf accepts https://<host>/<tid>/ (v1 tokens, what Graph sends) and
// https://<host>/<tid>/v2.0. The host is not pinned: the signature by the
// authority's keys is what proves the token's origin.
func issuerOf(iss, tid string) bool {
	rest, ok := strings.CutPrefix(iss, "https://")
	if !ok {
		return false
	}
	_, path, ok := strings.Cut(rest, "/")
	if !ok {
		return false
	}
	path = strings.TrimSuffix(strings.TrimSuffix(path, "v2.0"), "/")
	return strings.EqualFold(path, tid)
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func decodeSegment(seg string, into any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errors.New("not base64url")
	}
	return json.Unmarshal(b, into)
}

// key returns the signing key kid, fetching the key set when it is stale or
// does not have kid (at most once a minute).
func (v *TokenValidator) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if k := v.keys[kid]; k != nil && time.Since(v.fetched) < keysFor {
		return k, nil
	}
	if time.Since(v.tried) >= refetchEvery {
		if err := v.fetch(ctx); err != nil && v.keys == nil {
			return nil, err
		}
	}
	if k := v.keys[kid]; k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: signed with an unknown key", ErrBadToken)
}

// fetch reads the key set (v.mu held).
func (v *TokenValidator) fetch(ctx context.Context) error {
	v.tried = time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.o.KeysURL, nil)
	if err != nil {
		return fmt.Errorf("notify: signing keys: %w", err)
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return fmt.Errorf("notify: signing keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("notify: signing keys: HTTP %d", resp.StatusCode)
	}
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return fmt.Errorf("notify: signing keys: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" || k.Kid == "" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 || len(n) < 256 {
			continue
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 {
			continue
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	}
	if len(keys) == 0 {
		return errors.New("notify: signing keys: the key set has no RSA key")
	}
	v.keys, v.fetched = keys, time.Now()
	return nil
}
