package notify_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/poller/notify"
)

const (
	clientID = "00000000-1111-2222-3333-444444444444"
	tenantA  = "72f988bf-0000-0000-0000-00000000000a"
)

func selfSigned(t *testing.T, kid string, claims map[string]any) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": kid})
	body, _ := json.Marshal(claims)
	signed := base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString(body)
	sum := sha256.Sum256([]byte(signed))
	sig, _ := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestValidationTokens: a token the authority signed for this app and
// Graph's publisher passes and names its tenant; every other kind is
// refused.
func TestValidationTokens(t *testing.T) {
	entra := entratest.New(entratest.Options{ClientID: clientID})
	defer entra.Close()
	v := notify.NewTokenValidator(notify.TokenValidatorOptions{KeysURL: notify.KeysURL(entra.Authority("organizations")), ClientID: clientID, HTTPClient: entra.Client()})
	tid, err := v.Validate(t.Context(), entra.ChangeNotificationToken(tenantA))
	if err != nil || tid != tenantA {
		t.Fatalf("genuine token: %q %v", tid, err)
	}
	now := time.Now()
	claims := func(change func(map[string]any)) map[string]any {
		c := map[string]any{"aud": clientID, "iss": "https://sts.windows.net/" + tenantA + "/", "appid": notify.GraphPublisherAppID,
			"tid": tenantA, "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		change(c)
		return c
	}
	genuine := entra.ChangeNotificationToken(tenantA)
	parts := strings.Split(genuine, ".")
	forgedBody, _ := json.Marshal(claims(func(c map[string]any) { c["tid"] = "72f988bf-0000-0000-0000-00000000000b" }))
	for name, tok := range map[string]string{
		"another app":          entra.SignToken(claims(func(c map[string]any) { c["aud"] = "99999999-1111-2222-3333-444444444444" })),
		"not Graph's":          entra.SignToken(claims(func(c map[string]any) { c["appid"] = "11111111-1111-2222-3333-444444444444" })),
		"expired":              entra.SignToken(claims(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() })),
		"not yet valid":        entra.SignToken(claims(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })),
		"no expiry":            entra.SignToken(claims(func(c map[string]any) { delete(c, "exp") })),
		"issuer of a tenant":   entra.SignToken(claims(func(c map[string]any) { c["iss"] = "https://sts.windows.net/72f988bf-0000-0000-0000-00000000000b/" })),
		"unknown signing key":  selfSigned(t, "someone-else", claims(func(map[string]any) {})),
		"our kid, another key": selfSigned(t, entratest.SigningKeyID, claims(func(map[string]any) {})),
		"claims swapped":       parts[0] + "." + base64.RawURLEncoding.EncodeToString(forgedBody) + "." + parts[2],
		"unsigned":             base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"x"}`)) + "." + parts[1] + ".",
		"not a JWT":            "validation",
	} {
		t.Run(name, func(t *testing.T) {
			if tid, err := v.Validate(t.Context(), tok); !errors.Is(err, notify.ErrBadToken) {
				t.Fatalf("Validate = %q, %v; want ErrBadToken", tid, err)
			}
		})
	}
	// A v2 token (azp instead of appid, issuer ending in /v2.0) passes too.
	v2 := entra.SignToken(claims(func(c map[string]any) {
		delete(c, "appid")
		c["azp"] = notify.GraphPublisherAppID
		c["iss"] = "https://login.microsoftonline.com/" + tenantA + "/v2.0"
	}))
	if _, err := v.Validate(t.Context(), v2); err != nil {
		t.Errorf("v2 token: %v", err)
	}
}
