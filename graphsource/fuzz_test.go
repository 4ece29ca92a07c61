package graphsource

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// FuzzParseAccount: an account file of any content never panics the
// parser; what it accepts names a safe file and survives a round trip.
func FuzzParseAccount(f *testing.F) {
	good, _ := json.Marshal(testAccount(samID, "Presence.Read.All"))
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"home_account_id":"../../etc.passwd"}`))
	f.Add(bytes.Replace(good, []byte(`"active"`), []byte(`"bogus"`), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAccount(data)
		if err != nil {
			return
		}
		if !validHomeAccountID(a.HomeAccountID) || bytes.ContainsAny([]byte(a.HomeAccountID), "/\\") {
			t.Fatalf("accepted file name %q", a.HomeAccountID)
		}
		again, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseAccount(again); err != nil {
			t.Fatalf("accepted account does not parse back: %v", err)
		}
		_, _ = ReadTokenState(a.Cache)
		_, _ = dropAccessTokens(a.Cache)
	})
}

// FuzzOAuthReplies: Entra's error bodies and device authorization replies
// never panic the parsers; an interval is always usable; an error text
// carries no control character (it reaches logs).
func FuzzOAuthReplies(f *testing.F) {
	f.Add([]byte(`{"error":"slow_down","error_description":"AADSTS70016: x\r\nTrace ID: y"}`))
	f.Add([]byte(`{"device_code":"d","user_code":"U","interval":5,"expires_in":900}`))
	f.Add([]byte(`{"interval":1e308}`))
	f.Add([]byte(`{"interval":"5"}`))
	f.Add([]byte(`{"interval":1e-12}`))
	f.Add([]byte(`{"error":"\u001b[31mred"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if d := parseDeviceInterval(body); d <= 0 || d > time.Minute {
			t.Fatalf("interval %v", d)
		}
		if e, ok := parseOAuthError(body); ok {
			for _, r := range e.Code + e.Description {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("control character in %+v", e)
				}
			}
			if len(e.Code) > 64 || len(e.Description) > 300 {
				t.Fatalf("unbounded %+v", e)
			}
		}
	})
}

// FuzzTokenCache: MSAL's cache as stored never panics the readers, and
// dropping the access tokens keeps a JSON object.
func FuzzTokenCache(f *testing.F) {
	f.Add([]byte(testAccount(samID).Cache))
	f.Add([]byte(`{"AccessToken":{"k":{"expires_on":99999999999999999999}}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, cache []byte) {
		_, _ = ReadTokenState(cache)
		out, err := dropAccessTokens(cache)
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(out, &m) != nil || m == nil {
			t.Fatalf("dropped cache is not an object: %s", out)
		}
	})
}
