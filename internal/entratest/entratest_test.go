package entratest

import (
	"crypto/sha256"
	"encoding/base64"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/presence-bridge/presence-bridge/presence"
)

var alex = Person{ObjectID: "6f1c2a3b-1111-2222-3333-444455556666", TenantID: "72f988bf-0000-0000-0000-000000000000", Name: `Alex <b>Doe</b>`, UPN: "alex@contoso.com"}

func authorizeQuery(verifier string) url.Values {
	sum := sha256.Sum256([]byte(verifier))
	return url.Values{"client_id": {"app"}, "response_type": {"code"}, "redirect_uri": {"https://poller.example/auth/end"},
		"response_mode": {"form_post"}, "scope": {"Presence.Read offline_access openid profile"}, "state": {"st"}, "nonce": {"no"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
}

// TestAuthorizePageAsABrowserUsesIt: the page lists people (escaped); the
// chosen person's button answers an auto-submitting form carrying code and
// state to the redirect URI; the code redeems once with the right verifier.
func TestAuthorizePageAsABrowserUsesIt(t *testing.T) {
	s := New(Options{ClientID: "app", People: []Person{alex}})
	defer s.Close()
	c := s.Client()
	resp, err := c.Get(s.Authority("organizations") + "/oauth2/v2.0/authorize?" + authorizeQuery("verifier-0123456789-0123456789-0123456789").Encode())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Alex &lt;b&gt;Doe&lt;/b&gt;") || !strings.Contains(string(page), `id="person-`+string(alex.ObjectID)) {
		t.Fatalf("page %d:\n%s", resp.StatusCode, page)
	}
	query := regexp.MustCompile(`name="query" value="([^"]*)"`).FindSubmatch(page)
	if query == nil {
		t.Fatal("no query field")
	}
	resp, err = c.PostForm(s.Authority("organizations")+"/oauth2/v2.0/authorize/choose", url.Values{
		"query": {html.UnescapeString(string(query[1]))}, "person": {string(alex.ObjectID)}})
	if err != nil {
		t.Fatal(err)
	}
	post, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(post), `action="https://poller.example/auth/end"`) || !strings.Contains(string(post), `name="state" value="st"`) {
		t.Fatalf("form post:\n%s", post)
	}
	code := regexp.MustCompile(`name="code" value="([^"]*)"`).FindSubmatch(post)
	if code == nil {
		t.Fatal("no code")
	}
	redeem := func(verifier string) int {
		resp, err := c.PostForm(s.Authority("organizations")+"/oauth2/v2.0/token", url.Values{"grant_type": {"authorization_code"},
			"client_id": {"app"}, "code": {string(code[1])}, "redirect_uri": {"https://poller.example/auth/end"}, "code_verifier": {verifier}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := redeem("verifier-0123456789-0123456789-0123456789"); got != http.StatusOK {
		t.Fatalf("redeem: %d", got)
	}
	if got := redeem("verifier-0123456789-0123456789-0123456789"); got != http.StatusBadRequest {
		t.Errorf("replayed code: %d, want 400", got)
	}
	if len(s.Secrets()) < 4 {
		t.Errorf("secrets recorded: %d", len(s.Secrets()))
	}
}

func TestSignInRefusesABadRequest(t *testing.T) {
	s := New(Options{ClientID: "app", People: []Person{alex}})
	defer s.Close()
	q := authorizeQuery("v")
	q.Del("code_challenge")
	if _, _, err := s.SignIn(q, alex.ObjectID); err == nil {
		t.Error("no PKCE accepted")
	}
	if _, _, err := s.SignIn(authorizeQuery("v"), presence.UserID("0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff")); err == nil {
		t.Error("an unknown person signed in")
	}
	_, form, err := s.SignIn(authorizeQuery("v"), "")
	if err != nil || form.Get("error") != "access_denied" || form.Get("state") != "st" {
		t.Errorf("cancel: %v %v", form, err)
	}
}
