package hue

// These tests pin the huego v1.2.1 defects that made this package call the
// bridge with net/http (see the package doc), each next to proof that
// Client does not have it. If a huego upgrade fixes one, its test fails and
// the package doc should be revisited.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/amimof/huego"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
)

// catch runs fn and returns what it panicked with (nil if it did not).
func catch(fn func()) (v any) {
	defer func() { v = recover() }()
	fn()
	return nil
}

func TestHuegoStateSendsOnFalse(t *testing.T) {
	b, err := json.Marshal(huego.State{Bri: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"on":false`) {
		t.Errorf("huego.State{Bri:100} = %s; the defect is gone", b)
	}
	ours, _ := json.Marshal(Action{Bri: ptr(uint8(100))})
	if strings.Contains(string(ours), `"on"`) {
		t.Errorf("Action{Bri:100} = %s sends on", ours)
	}
}

func TestHuegoCannotSendZeroes(t *testing.T) {
	b, _ := json.Marshal(huego.State{On: true, Hue: 0, Sat: 0, TransitionTime: 0})
	if strings.Contains(string(b), `"hue"`) || strings.Contains(string(b), `"transitiontime"`) {
		t.Errorf("huego sends zeroes now: %s", b)
	}
	ours, _ := json.Marshal(Action{Hue: ptr(uint16(0)), TransitionTime: ptr(uint16(0))})
	if !strings.Contains(string(ours), `"hue":0`) || !strings.Contains(string(ours), `"transitiontime":0`) {
		t.Errorf("Action drops zeroes: %s", ours)
	}
}

// An error object without "address" panics huego; Client returns the error.
func TestHuegoPanicsOnErrorWithoutAddress(t *testing.T) {
	fake := huetest.Start(t, huetest.Options{})
	fake.SetIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.Write([]byte(`[{"error":{"type":1,"description":"unauthorized user"}}]`))
		return true
	})
	hb := huego.New("http://"+fake.Host(), testKey)
	if p := catch(func() { _, _ = hb.GetGroupsContext(context.Background()) }); p == nil {
		t.Error("huego did not panic; the defect is gone")
	}
	c, _ := NewClient(ClientOptions{Host: fake.Host(), Username: testKey})
	var err error
	if p := catch(func() { _, err = c.Groups(t.Context()) }); p != nil {
		t.Fatalf("Client panicked: %v", p)
	}
	if !errors.Is(err, ErrUnauthorized) {
		t.Errorf("err = %v, want ErrUnauthorized", err)
	}
}

// huego reads no status code: a 503 whose body looks like success is a
// success to it. Client reports the status.
func TestHuegoIgnoresStatusCodes(t *testing.T) {
	fake := huetest.Start(t, huetest.Options{})
	fake.SetIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`[{"success":{"/groups/1/action/on":true}}]`))
		return true
	})
	hb := huego.New("http://"+fake.Host(), testKey)
	if _, err := hb.SetGroupStateContext(context.Background(), 1, huego.State{On: true}); err != nil {
		t.Errorf("huego saw the 503 (%v); the defect is gone", err)
	}
	c, _ := NewClient(ClientOptions{Host: fake.Host(), Username: testKey})
	var se *StatusError
	if err := c.SetGroupAction(t.Context(), "1", Action{On: ptr(true)}); !errors.As(err, &se) || se.Code != 503 {
		t.Errorf("err = %v, want status 503", err)
	}
}

// huego rewrites a host without a scheme in place (a data race when the
// Bridge is shared). Client keeps its configuration untouched.
func TestHuegoRewritesHostInPlace(t *testing.T) {
	fake := huetest.Start(t, huetest.Options{})
	hb := huego.New(fake.Host(), testKey)
	if _, err := hb.GetGroupsContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hb.Host == fake.Host() {
		t.Error("huego left the host alone; the defect is gone")
	}
	c, _ := NewClient(ClientOptions{Host: fake.Host(), Username: testKey})
	if _, err := c.Groups(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c.Host() != fake.Host() {
		t.Errorf("Client host changed to %q", c.Host())
	}
}

// huego's Group.On panics on a group that was not fetched. This package's
// Group is plain data with no methods that call the bridge.
func TestHuegoGroupOnPanicsWhenNotFetched(t *testing.T) {
	var g huego.Group
	if p := catch(func() { _ = g.On() }); p == nil {
		t.Error("huego Group.On did not panic; the defect is gone")
	}
}
