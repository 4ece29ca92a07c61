package signin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

var key = bytes.Repeat([]byte{7}, 32)

func TestSealerRoundTripAndTamper(t *testing.T) {
	s, err := NewSealer(key, cookieLabel)
	if err != nil {
		t.Fatal(err)
	}
	v := s.SealString([]byte("hello"), cookieAAD)
	if got, err := s.OpenString(v, cookieAAD); err != nil || string(got) != "hello" {
		t.Fatalf("round trip: %q %v", got, err)
	}
	raw := []byte(v)
	raw[len(raw)-3] ^= 1
	if _, err := s.OpenString(string(raw), cookieAAD); err == nil {
		t.Error("a tampered value opened")
	}
	if _, err := s.OpenString(v, []byte("other")); err == nil {
		t.Error("opened with another aad")
	}
	cache, _ := NewSealer(key, cacheLabel)
	if _, err := cache.OpenString(v, cookieAAD); err == nil {
		t.Error("the cache key opens a cookie: the keys are not separated")
	}
	if _, err := NewSealer(key[:16], cookieLabel); err == nil {
		t.Error("a 16-byte secret accepted")
	}
}

// FuzzSealedCookie: whatever a browser sends as the cookie, Finish refuses
// it without panicking, and never before checking it.
func FuzzSealedCookie(f *testing.F) {
	fl, err := NewFlow(FlowOptions{ClientID: "c", RedirectURI: "http://127.0.0.1/auth/end", SecretKey: key})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(ticket{State: "s", Nonce: "n", Verifier: "v", Expires: time.Now().Add(time.Hour).Unix()})
	f.Add(fl.sealer.SealString(good, cookieAAD), "s")
	f.Add("", "")
	f.Add("AAAA", "s")
	f.Add(fl.sealer.SealString([]byte(`{"s":""}`), cookieAAD), "")
	f.Add(fl.sealer.SealString([]byte(`not json`), cookieAAD), "x")
	f.Fuzz(func(t *testing.T, value, state string) {
		form := url.Values{"state": {state}} // no code: a valid cookie still stops at FailNoCode
		_, err := fl.Finish(t.Context(), form, &http.Cookie{Name: CookieName, Value: value})
		if err == nil {
			t.Fatal("a fuzzed cookie was accepted")
		}
	})
}

// TestCacheUnderAnotherKey: a cache sealed with another secret_key means
// sign-in required, not an error every cycle.
func TestCacheUnderAnotherKey(t *testing.T) {
	store := &memCaches{m: map[string][]byte{}}
	other, _ := NewSealer(bytes.Repeat([]byte{9}, 32), cacheLabel)
	store.m["6f1c2a3b-1111-2222-3333-444455556666"] = other.Seal([]byte("{}"), aad("6f1c2a3b-1111-2222-3333-444455556666"))
	tk, err := NewTokens(TokensOptions{Authority: "https://127.0.0.1:1/organizations", ClientID: "c", Credential: Credential{Secret: "s"},
		SecretKey: key, Store: store, Clients: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tk.Token(t.Context(), poller.Account{UserID: "6f1c2a3b-1111-2222-3333-444455556666"})
	if !errors.Is(err, poller.ErrSignInRequired) {
		t.Fatalf("got %v, want ErrSignInRequired", err)
	}
}

type memCaches struct{ m map[string][]byte }

func (s *memCaches) TokenCache(_ context.Context, id presence.UserID) ([]byte, error) {
	return s.m[string(id)], nil
}

func (s *memCaches) PutTokenCache(_ context.Context, id presence.UserID, b []byte) error {
	s.m[string(id)] = b
	return nil
}
