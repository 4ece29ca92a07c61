package huetest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

func call(t *testing.T, c *http.Client, method, url, body string) (int, any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var v any
	_ = json.Unmarshal(data, &v)
	return res.StatusCode, v
}

func errType(v any) float64 {
	a, ok := v.([]any)
	if !ok || len(a) == 0 {
		return 0
	}
	m, _ := a[0].(map[string]any)
	e, _ := m["error"].(map[string]any)
	f, _ := e["type"].(float64)
	return f
}

// The fake answers as a real bridge does.
func TestBridgeSpeaksV1(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{})
		c := b.Client()
		base := "http://hue.test/api"
		tests := []struct {
			name         string
			method, path string
			body         string
			wait         time.Duration // before the call
			wantStatus   int
			wantErrType  float64
		}{
			{"pair before the button", "POST", "", `{"devicetype":"x#y"}`, 0, 200, 101},
			{"pair without devicetype", "POST", "", `{}`, 0, 200, 5},
			{"pair with bad json", "POST", "", `{`, 0, 200, 2},
			{"groups with a wrong key", "GET", "/nope/groups", "", 0, 200, 1},
			{"groups", "GET", "/test-key/groups", "", 0, 200, 0},
			{"one group", "GET", "/test-key/groups/1", "", 0, 200, 0},
			{"missing group", "GET", "/test-key/groups/9", "", 0, 200, 3},
			{"lights", "GET", "/test-key/lights", "", 0, 200, 0},
			{"action", "PUT", "/test-key/groups/1/action", `{"on":true,"bri":200}`, 0, 200, 0},
			{"action too soon", "PUT", "/test-key/groups/2/action", `{"on":true}`, 500 * time.Millisecond, 429, 0},
			{"action after a second", "PUT", "/test-key/groups/2/action", `{"on":true}`, 500 * time.Millisecond, 200, 0},
			{"action on a missing group", "PUT", "/test-key/groups/9/action", `{"on":true}`, time.Second, 200, 3},
			{"action with a wrong key", "PUT", "/nope/groups/1/action", `{"on":true}`, time.Second, 200, 1},
			{"action with bad json", "PUT", "/test-key/groups/1/action", `{"on":`, time.Second, 200, 2},
			{"action with a bad value", "PUT", "/test-key/groups/1/action", `{"bri":0}`, time.Second, 200, 7},
			{"action with an unknown parameter", "PUT", "/test-key/groups/1/action", `{"colour":"red"}`, time.Second, 200, 6},
			{"unknown resource", "GET", "/test-key/sensors", "", 0, 200, 4},
		}
		for _, tt := range tests {
			time.Sleep(tt.wait)
			status, v := call(t, c, tt.method, base+tt.path, tt.body)
			if status != tt.wantStatus || errType(v) != tt.wantErrType {
				t.Errorf("%s: status %d error type %v, want %d and %v (%v)", tt.name, status, errType(v), tt.wantStatus, tt.wantErrType, v)
			}
		}
		if got := b.RateLimited(); got != 1 {
			t.Errorf("RateLimited = %d, want 1", got)
		}
		act, _ := b.GroupAction("1")
		if act["on"] != true || act["bri"] != 200.0 {
			t.Errorf("group 1 action %v", act)
		}
		_, v := call(t, c, "GET", base+"/test-key/groups", "")
		g1 := v.(map[string]any)["1"].(map[string]any)
		if diff := cmp.Diff(map[string]any{"all_on": true, "any_on": true}, g1["state"]); diff != "" {
			t.Errorf("group 1 state: %s", diff)
		}
		b.PressLinkButton()
		_, v = call(t, c, "POST", base, `{"devicetype":"x#y"}`)
		user := v.([]any)[0].(map[string]any)["success"].(map[string]any)["username"].(string)
		if status, v := call(t, c, "GET", base+"/"+user+"/groups", ""); status != 200 || errType(v) != 0 {
			t.Errorf("new user refused: %v", v)
		}
		if b.PairingAttempts() != 2 {
			t.Errorf("PairingAttempts = %d", b.PairingAttempts())
		}
	})
}

// Start serves on loopback without a *testing.T; Close stops it.
func TestStartWithoutTesting(t *testing.T) {
	b := New(Options{LinkButtonPressed: true})
	host, err := b.Start()
	if err != nil {
		t.Fatal(err)
	}
	status, v := call(t, http.DefaultClient, "GET", "http://"+host+"/api/test-key/groups", "")
	if status != 200 || len(v.(map[string]any)) != 2 {
		t.Errorf("status %d body %v", status, v)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + host + "/api"); err == nil {
		t.Error("still serving after Close")
	}
}
