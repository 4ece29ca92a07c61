package signin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"
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
