package hue

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "192.168.1.20", want: "http://192.168.1.20"},
		{in: "192.168.1.20:8080", want: "http://192.168.1.20:8080"},
		{in: "http://hue.local", want: "http://hue.local"},
		{in: "HTTP://hue.local:80/", want: "http://hue.local:80"},
		{in: " [::1]:8080 ", want: "http://[::1]:8080"},
		{in: "", bad: true},
		{in: "https://hue.local", bad: true},
		{in: "http://hue.local/api", bad: true},
		{in: "http://user:pw@hue.local", bad: true},
		{in: "http://", bad: true},
		{in: "hue.local/x?y", bad: true},
		{in: "http://%zz", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParseHost(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseHost(%q) = %v, want an error", tt.in, u)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.String() != tt.want {
				t.Errorf("ParseHost(%q) = %q, want %q", tt.in, u, tt.want)
			}
		})
	}
}

func TestParseActionReply(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr error // errors.Is target; nil = success
		apiType int   // when the error is an *APIError
	}{
		{name: "success", body: `[{"success":{"/groups/1/action/on":true}},{"success":{"/groups/1/action/bri":254}}]`},
		{name: "unauthorized", body: `[{"error":{"type":1,"address":"/groups/1/action","description":"unauthorized user"}}]`, wantErr: ErrUnauthorized, apiType: 1},
		{name: "not available", body: `[{"error":{"type":3,"address":"/groups/9","description":"resource, /groups/9, not available"}}]`, wantErr: ErrNotAvailable, apiType: 3},
		{name: "error after success", body: `[{"success":{"/groups/1/action/on":true}},{"error":{"type":7,"address":"/groups/1/action/bri","description":"invalid value"}}]`, apiType: 7},
		{name: "error without address (huego panicked)", body: `[{"error":{"type":1,"description":"unauthorized user"}}]`, wantErr: ErrUnauthorized, apiType: 1},
		{name: "error without description", body: `[{"error":{"type":101}}]`, wantErr: ErrLinkButton, apiType: 101},
		{name: "error address not a string", body: `[{"error":{"type":3,"address":7,"description":null}}]`, wantErr: ErrNotAvailable, apiType: 3},
		{name: "error without type", body: `[{"error":{"address":"/x","description":"y"}}]`, wantErr: ErrBadReply},
		{name: "error type a string", body: `[{"error":{"type":"1"}}]`, wantErr: ErrBadReply},
		{name: "error type fractional", body: `[{"error":{"type":1.5}}]`, wantErr: ErrBadReply},
		{name: "error type huge", body: `[{"error":{"type":1e400}}]`, wantErr: ErrBadReply},
		{name: "error not an object", body: `[{"error":"boom"}]`, wantErr: ErrBadReply},
		{name: "empty array", body: `[]`, wantErr: ErrBadReply},
		{name: "object", body: `{"success":true}`, wantErr: ErrBadReply},
		{name: "null", body: `null`, wantErr: ErrBadReply},
		{name: "item neither", body: `[{}]`, wantErr: ErrBadReply},
		{name: "item null", body: `[null]`, wantErr: ErrBadReply},
		{name: "success null", body: `[{"success":null}]`, wantErr: ErrBadReply},
		{name: "html", body: `<html>503</html>`, wantErr: ErrBadReply},
		{name: "empty", body: ``, wantErr: ErrBadReply},
		{name: "truncated", body: `[{"success":{"/groups/1/action/on":tr`, wantErr: ErrBadReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ParseActionReply([]byte(tt.body))
			if tt.wantErr == nil && tt.apiType == 0 {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("err = nil, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			var ae *APIError
			if tt.apiType != 0 && (!errors.As(err, &ae) || ae.Type != tt.apiType) {
				t.Errorf("err = %#v, want APIError type %d", err, tt.apiType)
			}
		})
	}
}

func TestParseGroups(t *testing.T) {
	good := `{"1":{"name":"Office","lights":["1","2"],"type":"Room","state":{"all_on":true,"any_on":true},"action":{"on":true}},
	          "10":{"name":"Kitchen","lights":[],"type":"Zone"},
	          "2":{"name":"","type":"LightGroup","extra":{"x":1}}}`
	got, err := ParseGroups([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []Group{
		{ID: "1", Name: "Office", Type: "Room", Lights: []string{"1", "2"}, AllOn: true},
		{ID: "2", Name: "", Type: "LightGroup"},
		{ID: "10", Name: "Kitchen", Type: "Zone", Lights: []string{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}

	bad := []struct {
		name, body string
		want       error
	}{
		{"unauthorized array", `[{"error":{"type":1,"address":"/groups","description":"unauthorized user"}}]`, ErrUnauthorized},
		{"success array", `[{"success":{"x":1}}]`, ErrBadReply},
		{"non-numeric id", `{"abc":{"name":"x"}}`, ErrBadReply},
		{"negative id", `{"-1":{"name":"x"}}`, ErrBadReply},
		{"no name", `{"1":{"type":"Room"}}`, ErrBadReply},
		{"name not a string", `{"1":{"name":5}}`, ErrBadReply},
		{"lights not strings", `{"1":{"name":"x","lights":[1,2]}}`, ErrBadReply},
		{"group not an object", `{"1":"Office"}`, ErrBadReply},
		{"null", `null`, ErrBadReply},
		{"string", `"groups"`, ErrBadReply},
		{"empty", ``, ErrBadReply},
		{"huge id", `{"12345678901234567890":{"name":"x"}}`, ErrBadReply},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseGroups([]byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseCreateUserReply(t *testing.T) {
	user, err := ParseCreateUserReply([]byte(`[{"success":{"username":"83b7780291a6ceffbe0bd049104df"}}]`))
	if err != nil || user != "83b7780291a6ceffbe0bd049104df" {
		t.Fatalf("got %q, %v", user, err)
	}
	bad := []struct {
		name, body string
		want       error
	}{
		{"link button", `[{"error":{"type":101,"address":"","description":"link button not pressed"}}]`, ErrLinkButton},
		{"no username", `[{"success":{"clientkey":"x"}}]`, ErrBadReply},
		{"empty username", `[{"success":{"username":""}}]`, ErrBadReply},
		{"username not a string", `[{"success":{"username":42}}]`, ErrBadReply},
		{"username with a slash", `[{"success":{"username":"../config"}}]`, ErrBadReply},
		{"username with a newline", `[{"success":{"username":"ab\ncd"}}]`, ErrBadReply},
		{"object", `{"username":"x"}`, ErrBadReply},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCreateUserReply([]byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseLightGamuts(t *testing.T) {
	got, err := ParseLightGamuts([]byte(`{"1":{"capabilities":{"control":{"colorgamuttype":"B"}}},"2":{"type":"Dimmable light"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"1": "B", "2": ""}, got); diff != "" {
		t.Error(diff)
	}
	for _, body := range []string{`[{"error":{"type":1}}]`, `{"x":{}}`, `{"1":{"capabilities":{"control":{"colorgamuttype":3}}}}`, `[]`} {
		if _, err := ParseLightGamuts([]byte(body)); err == nil {
			t.Errorf("ParseLightGamuts(%s): no error", body)
		}
	}
}

// FuzzParseReplies feeds arbitrary bytes to every reply parser: none may
// panic, and what they accept must hold their promises.
func FuzzParseReplies(f *testing.F) {
	for _, s := range []string{
		`[{"success":{"/groups/1/action/on":true}}]`,
		`[{"error":{"type":1,"address":"/groups","description":"unauthorized user"}}]`,
		`[{"error":{"type":101}}]`,
		`[{"success":{"username":"abc"}}]`,
		`{"1":{"name":"Office","lights":["1"],"type":"Room","state":{"all_on":true}}}`,
		`{"1":{"capabilities":{"control":{"colorgamuttype":"C"}}}}`,
		`[{"error":{"type":"x","address":null}}]`, `[{}]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = ParseActionReply(data)
		if user, err := ParseCreateUserReply(data); err == nil && (user == "" || !validKey(user)) {
			t.Errorf("accepted username %q", user)
		}
		if groups, err := ParseGroups(data); err == nil {
			for _, g := range groups {
				if !numericID(g.ID) {
					t.Errorf("accepted group id %q", g.ID)
				}
			}
		}
		if gamuts, err := ParseLightGamuts(data); err == nil {
			for id := range gamuts {
				if !numericID(id) {
					t.Errorf("accepted light id %q", id)
				}
			}
		}
	})
}

// huego's State.On had no omitempty: State{Bri: 100} switched the group
// off. An Action sends only the fields set.
func TestActionNeverSendsUnintendedOff(t *testing.T) {
	tests := []struct {
		action Action
		want   string
	}{
		{Action{Bri: ptr(uint8(100))}, `{"bri":100}`},
		{Action{XY: &[2]float64{0.7, 0.3}}, `{"xy":[0.7,0.3]}`},
		{Action{Effect: EffectColorloop}, `{"effect":"colorloop"}`},
		{Action{On: ptr(false)}, `{"on":false}`},
		{Action{On: ptr(true), Bri: ptr(uint8(1))}, `{"on":true,"bri":1}`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.action)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("Marshal(%v) = %s, want %s", tt.action, got, tt.want)
		}
	}
	// And the sink never builds an action with on:false for a lit look.
	for _, known := range []groupState{{}, {onKnown: true, on: true}, {onKnown: true, on: false, colorKnown: true}} {
		g := known
		g.desired, g.hasDesired = Look{On: true, Bri: 100, XY: [2]float64{0.5, 0.4}, Effect: EffectNone}, true
		if a := actionFor(&g); a.On != nil && !*a.On {
			t.Errorf("actionFor(lit look, %+v) sends on:false", known)
		}
	}
}

// huego could not send hue 0, sat 0 or transitiontime 0 (omitempty on
// values); Action can.
func TestActionSendsZeroValues(t *testing.T) {
	got, err := json.Marshal(Action{Hue: ptr(uint16(0)), Sat: ptr(uint8(0)), TransitionTime: ptr(uint16(0))})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"hue":0,"sat":0,"transitiontime":0}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestActionFor(t *testing.T) {
	red := Look{On: true, Bri: 254, XY: [2]float64{0.69, 0.30}, Effect: EffectNone}
	green := Look{On: true, Bri: 254, XY: [2]float64{0.17, 0.69}, Effect: EffectNone}
	dim := Look{On: true, Bri: 25, XY: red.XY, Effect: EffectNone}
	loop := Look{On: true, Bri: 254, Effect: EffectColorloop}
	tests := []struct {
		name  string
		state groupState
		want  string
	}{
		{"unknown lamps get everything", groupState{desired: red}, `{"on":true,"bri":254,"xy":[0.69,0.3],"effect":"none"}`},
		{"known on: on all the same (a shared or hand-switched lamp)", groupState{desired: red, onKnown: true, on: true}, `{"on":true,"bri":254,"xy":[0.69,0.3],"effect":"none"}`},
		{"same look: nothing", groupState{desired: red, onKnown: true, on: true, colorKnown: true, known: red}, `{}`},
		{"colour change only", groupState{desired: green, onKnown: true, on: true, colorKnown: true, known: red}, `{"on":true,"xy":[0.17,0.69]}`},
		{"brightness change only", groupState{desired: dim, onKnown: true, on: true, colorKnown: true, known: red}, `{"on":true,"bri":25}`},
		{"off to same colour: on only", groupState{desired: red, onKnown: true, on: false, colorKnown: true, known: red}, `{"on":true}`},
		{"to colorloop: no xy", groupState{desired: loop, onKnown: true, on: true, colorKnown: true, known: red}, `{"on":true,"effect":"colorloop"}`},
		{"from colorloop: effect none and xy", groupState{desired: red, onKnown: true, on: true, colorKnown: true, known: loop}, `{"on":true,"xy":[0.69,0.3],"effect":"none"}`},
		{"off when on", groupState{desired: Look{}, onKnown: true, on: true}, `{"on":false}`},
		{"off when unknown", groupState{desired: Look{}}, `{"on":false}`},
		{"off when off: nothing", groupState{desired: Look{}, onKnown: true, on: false}, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.state
			g.hasDesired = true
			got, _ := json.Marshal(actionFor(&g))
			if string(got) != tt.want {
				t.Errorf("actionFor = %s, want %s", got, tt.want)
			}
		})
	}
}

// The API key is in every URL; no error may carry it.
func TestErrorsNeverCarryTheKey(t *testing.T) {
	const key = "s3cr3tKeyThatMustNotLeak"
	// A port nothing listens on: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	fake := huetest.Start(t, huetest.Options{Username: key})
	fake.FailCommands(503)

	ctx := t.Context()
	for _, host := range []string{closed, fake.Host()} {
		c, err := NewClient(ClientOptions{Host: host, Username: key, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = c.SetGroupAction(ctx, "1", Action{On: ptr(true)})
		if err == nil {
			t.Fatalf("%s: no error", host)
		}
		if strings.Contains(err.Error(), key) {
			t.Errorf("%s: error carries the key: %v", host, err)
		}
		_, err = c.Groups(ctx)
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("%s: error carries the key: %v", host, err)
		}
	}
}

func TestClientStatusCodes(t *testing.T) {
	fake := huetest.Start(t, huetest.Options{MinInterval: -1})
	c, err := NewClient(ClientOptions{Host: "http://" + fake.Host(), Username: testKey})
	if err != nil {
		t.Fatal(err)
	}
	fake.FailCommands(429, 503, 500)
	for _, want := range []int{429, 503, 500} {
		err := c.SetGroupAction(t.Context(), "1", Action{On: ptr(true)})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != want {
			t.Errorf("err = %v, want status %d", err, want)
		}
		if errors.Is(err, ErrRateLimited) != (want == 429) {
			t.Errorf("status %d: errors.Is(ErrRateLimited) = %v", want, !(want == 429))
		}
	}
	// A success array with HTTP 200 is a success (huego could not tell a
	// 503 with such a body from one).
	if err := c.SetGroupAction(t.Context(), "1", Action{On: ptr(true)}); err != nil {
		t.Errorf("after faults: %v", err)
	}
}

// Every call has a time-out through its context, even against a bridge
// that never answers (huego relied on the caller's context alone).
func TestClientTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		fake.SetDelay(time.Hour)
		c, err := NewClient(ClientOptions{Host: "hue.test", Username: testKey, HTTPClient: fake.Client()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = c.SetGroupAction(context.Background(), "1", Action{On: ptr(true)})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline", err)
		}
		if got := time.Since(start); got != DefaultTimeout {
			t.Errorf("gave up after %v, want %v", got, DefaultTimeout)
		}
		_, err = c.Groups(context.Background())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Groups err = %v, want a deadline", err)
		}
	})
}

// huego rewrote a scheme-less host in place (a data race). One Client used
// from many goroutines never changes; run under -race.
func TestClientConcurrentUseNoRace(t *testing.T) {
	fake := huetest.Start(t, huetest.Options{MinInterval: -1})
	c, err := NewClient(ClientOptions{Host: fake.Host(), Username: testKey})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			if i%2 == 0 {
				_, err := c.Groups(t.Context())
				errs <- err
				return
			}
			errs <- c.SetGroupAction(t.Context(), "1", Action{Bri: ptr(uint8(10 + i))})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if c.Host() != fake.Host() {
		t.Errorf("host changed to %q", c.Host())
	}
}

// The client uses the HTTP client it is given, never http.DefaultClient.
func TestClientUsesInjectedHTTPClient(t *testing.T) {
	var used bool
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used = true
		return nil, errors.New("injected transport")
	})}
	c, err := NewClient(ClientOptions{Host: "192.0.2.1", Username: testKey, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Groups(t.Context()); err == nil || !used {
		t.Fatalf("err = %v, used = %v", err, used)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A reply larger than any real bridge's is refused, not read into memory.
func TestClientRefusesHugeReply(t *testing.T) {
	fake := huetest.Start(t, huetest.Options{})
	fake.SetIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.Write([]byte(`{"1":{"name":"`))
		w.Write([]byte(strings.Repeat("x", maxReplySize)))
		w.Write([]byte(`"}}`))
		return true
	})
	c, _ := NewClient(ClientOptions{Host: fake.Host(), Username: testKey})
	if _, err := c.Groups(t.Context()); !errors.Is(err, ErrBadReply) {
		t.Errorf("err = %v, want ErrBadReply", err)
	}
}
