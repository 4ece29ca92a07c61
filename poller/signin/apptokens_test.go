package signin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/entratest"
)

const testClient = "00000000-1111-2222-3333-444444444444"

// TestAppTokensPerTenant: the client credentials grant gives an app token
// of the tenant asked for, kept in memory (one token request per tenant).
func TestAppTokensPerTenant(t *testing.T) {
	entra := entratest.New(entratest.Options{ClientID: testClient, ClientSecret: "s3cret-value"})
	defer entra.Close()
	at, err := NewAppTokens(AppTokensOptions{Authority: entra.Authority("organizations"), ClientID: testClient,
		Credential: Credential{Secret: "s3cret-value"}, HTTPClient: entra.Client()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"tenant-a", "tenant-b", "tenant-a"} {
		tok, err := at.AppToken(t.Context(), tenant)
		if err != nil {
			t.Fatal(err)
		}
		user, tid, ok := entra.AccessTokenOwner(tok)
		if !ok || user != "" || tid != tenant {
			t.Errorf("token of %q/%q (%v), want an app token of %s", user, tid, ok, tenant)
		}
	}
	if n := entra.TokenRequests("client_credentials"); n != 2 {
		t.Errorf("%d token requests, want 2 (one per tenant, then from memory)", n)
	}
	bad, _ := NewAppTokens(AppTokensOptions{Authority: entra.Authority("organizations"), ClientID: testClient,
		Credential: Credential{Secret: "wrong"}, HTTPClient: entra.Client()})
	_, err = bad.AppToken(t.Context(), "tenant-c")
	var ee *EntraError
	if !errors.As(err, &ee) || ee.Code != "invalid_client" || strings.Contains(err.Error(), "wrong") {
		t.Errorf("a wrong secret: %v", err)
	}
}

// TestFederatedCredentialFromFile: the assertion is read from the file on
// use and sent as the client assertion; Entra refusing it is an error.
func TestFederatedCredentialFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	const good = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtaSJ9.c2ln"
	entra := entratest.New(entratest.Options{ClientID: testClient, ClientAssertion: func(a string) error {
		if a != good {
			return errors.New("unknown issuer")
		}
		return nil
	}})
	defer entra.Close()
	at, err := NewAppTokens(AppTokensOptions{Authority: entra.Authority("organizations"), ClientID: testClient,
		Credential: Credential{Assertion: FileAssertion(path)}, HTTPClient: entra.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := at.AppToken(t.Context(), "t1"); err == nil || !strings.Contains(err.Error(), "client assertion file") {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("not-the-one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := at.AppToken(t.Context(), "t1"); err == nil {
		t.Error("an assertion Entra refuses gave a token")
	}
	if err := os.WriteFile(path, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := at.AppToken(t.Context(), "t1"); err != nil {
		t.Fatal(err)
	}
	if got := entra.Assertions(); len(got) == 0 || got[len(got)-1] != good {
		t.Errorf("assertions sent: %v", got)
	}
}

// TestManagedIdentityAsFederatedCredential: on Azure Functions the
// platform's identity endpoint (IDENTITY_ENDPOINT, IDENTITY_HEADER) gives
// the managed identity a token for api://AzureADTokenExchange; that token
// is the app's client assertion. No secret exists anywhere.
func TestManagedIdentityAsFederatedCredential(t *testing.T) {
	const miToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmdW5jdGlvbi1hcHAifQ.bWk"
	const header = "identity-header-value"
	var asked []string
	identity := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-IDENTITY-HEADER") != header {
			http.Error(w, "missing header", http.StatusBadRequest)
			return
		}
		asked = append(asked, r.URL.Query().Get("resource")+" "+r.URL.Query().Get("client_id"))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"access_token": miToken, "token_type": "Bearer", "resource": r.URL.Query().Get("resource"),
			"expires_on": strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10),
		})
	}))
	defer identity.Close()
	t.Setenv("IDENTITY_ENDPOINT", identity.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", header)
	entra := entratest.New(entratest.Options{ClientID: testClient, ClientAssertion: func(a string) error {
		if a != miToken {
			return errors.New("not the function app's identity")
		}
		return nil
	}})
	defer entra.Close()
	// MSAL keeps managed identity tokens in a cache of its package: a
	// client id of its own makes this run ask the endpoint (-count=N).
	uami := fmt.Sprintf("11111111-2222-3333-4444-%012d", time.Now().UnixNano()%1e12)
	assert, err := ManagedIdentityAssertion(uami, identity.Client())
	if err != nil {
		t.Fatal(err)
	}
	at, err := NewAppTokens(AppTokensOptions{Authority: entra.Authority("organizations"), ClientID: testClient,
		Credential: Credential{Assertion: assert}, HTTPClient: entra.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := at.AppToken(t.Context(), "t1"); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 || asked[0] != TokenExchangeAudience+" "+uami {
		t.Errorf("identity endpoint asked for %v", asked)
	}
}
