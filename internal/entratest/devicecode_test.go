package entratest

import (
	"encoding/json"
	"net/url"
	"testing"
)

// TestDeviceCodeOutcomes drives the fake's device-code endpoints by hand:
// a poll sooner than the interval is slow_down, then pending, scripted
// slow_down, declined, expired, success, and a dropped connection.
func TestDeviceCodeOutcomes(t *testing.T) {
	s := New(Options{ClientID: "app", People: []Person{alex}, DeviceCodeInterval: 1})
	defer s.Close()
	c := s.Client()
	post := func(path string, form url.Values) (int, map[string]any, error) {
		resp, err := c.PostForm(s.Authority("organizations")+path, form)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			return resp.StatusCode, nil, err
		}
		return resp.StatusCode, m, nil
	}
	start := func() (device, user string) {
		status, m, err := post("/oauth2/v2.0/devicecode", url.Values{"client_id": {"app"}, "scope": {"Presence.Read.All offline_access"}})
		if err != nil || status != 200 {
			t.Fatalf("devicecode: %d %v %v", status, m, err)
		}
		if m["interval"].(float64) != 1 || m["expires_in"].(float64) != 900 {
			t.Errorf("answer %v", m)
		}
		return m["device_code"].(string), m["user_code"].(string)
	}
	poll := func(device string) string {
		t.Helper()
		status, m, err := post("/oauth2/v2.0/token", url.Values{"client_id": {"app"}, "grant_type": {deviceCodeGrant}, "device_code": {device}})
		if err != nil {
			t.Fatal(err)
		}
		if status == 200 {
			return "tokens:" + m["scope"].(string)
		}
		return m["error"].(string)
	}
	backdate := func(user string) { // the interval has passed
		s.mu.Lock()
		s.devices.byUser[user].lastPoll = s.devices.byUser[user].lastPoll.Add(-2e9)
		s.mu.Unlock()
	}

	device, user := start()
	if got := poll(device); got != "slow_down" || s.TooFastPolls() != 1 {
		t.Errorf("a poll before the interval: %s (too fast %d)", got, s.TooFastPolls())
	}
	backdate(user)
	if got := poll(device); got != "authorization_pending" {
		t.Errorf("pending: %s", got)
	}
	_ = s.SlowDown(user, 1)
	backdate(user)
	if got := poll(device); got != "slow_down" {
		t.Errorf("scripted: %s", got)
	}
	if err := s.EnterCode(user, alex.ObjectID); err != nil {
		t.Fatal(err)
	}
	backdate(user)
	if got := poll(device); got != "tokens:Presence.Read.All" {
		t.Errorf("entered: %s", got)
	}
	backdate(user)
	if got := poll(device); got != "invalid_grant" {
		t.Errorf("redeemed twice: %s", got)
	}
	if s.DevicePolls(user) != 5 {
		t.Errorf("polls %d", s.DevicePolls(user))
	}

	device, user = start()
	_ = s.DeclineCode(user)
	backdate(user)
	if got := poll(device); got != "authorization_declined" {
		t.Errorf("declined: %s", got)
	}
	device, user = start()
	_ = s.ExpireCode(user)
	if got := poll(device); got != "expired_token" {
		t.Errorf("expired: %s", got)
	}
	if err := s.EnterCode(user, alex.ObjectID); err == nil {
		t.Error("an expired code could be entered")
	}
	s.FailNext(1)
	if _, _, err := post("/oauth2/v2.0/devicecode", url.Values{"client_id": {"app"}, "scope": {"x"}}); err == nil {
		t.Error("FailNext: the request got an answer")
	}
	if len(s.UserCodes()) != 3 {
		t.Errorf("user codes %v", s.UserCodes())
	}
}
