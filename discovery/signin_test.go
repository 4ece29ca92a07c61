package discovery_test

import (
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/discovery"
	"github.com/presence-bridge/presence-bridge/discovery/discoverytest"
)

const (
	signInPress = "presence-bridge/bridge/graph_sign_in/press"
	signInCode  = "presence-bridge/bridge/graph_sign_in_code"
)

// TestSignInButtonAndCode: with the graph source the bridge device carries
// the Sign in button and the code sensor; a press reaches the callback (a
// retained press left on the broker does not), and SetSignIn publishes the
// code retained, then empties it.
func TestSignInButtonAndCode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := discoverytest.New()
		b.Publish(signInPress, "PRESS", true) // left over: must not start a sign-in
		pressed := make(chan struct{}, 4)
		opts := fakeOptions(b, alex)
		opts.Sources = []string{"graph"}
		opts.SignIn = func() { pressed <- struct{}{} }
		s := start(t, opts)
		s.ready(t)
		synctest.Wait()
		if len(pressed) != 0 {
			t.Fatal("a retained press started a sign-in")
		}
		raw, _ := b.Retained("homeassistant/device/presence_bridge/config")
		var cfg discovery.DeviceConfig
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			t.Fatal(err)
		}
		if c := cfg.Components["graph_sign_in"]; c.Platform != "button" || c.CommandTopic != signInPress || c.PayloadPress != "PRESS" {
			t.Errorf("button %+v", c)
		}
		if c := cfg.Components["graph_sign_in_code"]; c.Platform != "sensor" || c.StateTopic != signInCode || c.EntityCategory != "diagnostic" {
			t.Errorf("sensor %+v", c)
		}
		if p, ok := b.Retained(signInCode); !ok || codeText(t, p) != "" {
			t.Errorf("initial code state %q %v", p, ok)
		}

		b.Publish(signInPress, "PRESS", false)
		synctest.Wait()
		if len(pressed) != 1 {
			t.Fatalf("%d presses seen, want 1", len(pressed))
		}
		b.Publish(signInPress, "nonsense", false)
		synctest.Wait()
		if len(pressed) != 1 {
			t.Error("a payload other than PRESS started a sign-in")
		}

		s.SetSignIn(discovery.SignInState{URL: "https://microsoft.com/devicelogin", Code: "ABCD1234", ExpiresAt: time.Now().Add(15 * time.Minute)})
		synctest.Wait()
		if p, _ := b.Retained(signInCode); codeText(t, p) != "Open https://microsoft.com/devicelogin and enter the code ABCD1234" {
			t.Errorf("code state %s", p)
		}
		s.SetSignIn(discovery.SignInState{LastResult: "signed_in"})
		synctest.Wait()
		if p, _ := b.Retained(signInCode); codeText(t, p) != "" {
			t.Errorf("code state after the sign-in %s", p)
		}
		_ = s.stop(t)
	})
}

func codeText(t *testing.T, payload string) string {
	t.Helper()
	var p struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		t.Fatalf("code state %q: %v", payload, err)
	}
	return p.Text
}
