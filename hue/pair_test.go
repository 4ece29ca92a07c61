package hue

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
)

func TestPair(t *testing.T) {
	tests := []struct {
		name       string
		opts       huetest.Options
		faults     []int
		wantErr    error
		wantTries  int
		wantPrompt int
		wantWait   time.Duration
	}{
		{name: "pressed already", opts: huetest.Options{LinkButtonPressed: true}, wantTries: 1},
		{name: "pressed after three tries", opts: huetest.Options{PressAfter: 3}, wantTries: 4, wantPrompt: 1, wantWait: 3 * time.Second},
		{name: "never pressed", opts: huetest.Options{}, wantErr: ErrPairTimeout, wantTries: 30, wantPrompt: 1, wantWait: 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := huetest.New(tt.opts)
				prompts := 0
				start := time.Now()
				user, err := Pair(context.Background(), PairOptions{
					Host: "192.0.2.10", DeviceType: "presence-bridge#test", Timeout: 30 * time.Second,
					HTTPClient: fake.Client(), Waiting: func() { prompts++ },
				})
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if err == nil && !contains(fake.Users(), user) {
					t.Errorf("user %q not on the bridge (%v)", user, fake.Users())
				}
				if got := fake.PairingAttempts(); got != tt.wantTries {
					t.Errorf("%d attempts, want %d", got, tt.wantTries)
				}
				if prompts != tt.wantPrompt {
					t.Errorf("%d prompts, want %d", prompts, tt.wantPrompt)
				}
				if got := time.Since(start); got != tt.wantWait {
					t.Errorf("took %v, want %v", got, tt.wantWait)
				}
			})
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A busy bridge (429/5xx) is tried again; other failures end pairing.
func TestPairRetriesBusyBridge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{LinkButtonPressed: true, MinInterval: -1})
		fake.SetIntercept(busyOnce())
		if _, err := Pair(context.Background(), PairOptions{Host: "192.0.2.10", HTTPClient: fake.Client()}); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := Pair(t.Context(), PairOptions{Host: "https://hue.local"}); err == nil {
		t.Error("https host accepted")
	}
}

func TestListGroups(t *testing.T) {
	fake := huetest.Start(t, huetest.Options{Groups: []huetest.Group{
		{ID: "12", Name: "Hall", Type: "Zone", Lights: []string{"4"}},
		{ID: "3", Name: "Office", Type: "Room", Lights: []string{"1", "2"}},
	}})
	got, err := ListGroups(t.Context(), fake.Host(), testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Group{
		{ID: "3", Name: "Office", Type: "Room", Lights: []string{"1", "2"}},
		{ID: "12", Name: "Hall", Type: "Zone", Lights: []string{"4"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	if _, err := ListGroups(t.Context(), fake.Host(), "wrong", nil); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong key: err = %v", err)
	}
}

func busyOnce() func(w http.ResponseWriter, r *http.Request) bool {
	done := false
	return func(w http.ResponseWriter, r *http.Request) bool {
		if done {
			return false
		}
		done = true
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
}

// A real bridge allows at most 20 characters of application name and 19 of
// device name; a long host name is cut, and the fake bridge (which enforces
// the same limits) accepts the result.
func TestDeviceTypeFitsTheBridgeLimits(t *testing.T) {
	for _, host := range []string{"", "pi", "homeassistant-living-room-raspberry", "ünïcödé-ünïcödé-ünïcödé"} {
		dt := DeviceType(host)
		app, dev, _ := strings.Cut(dt, "#")
		if len(app) > 20 || len(dev) > 19 || !utf8.ValidString(dt) {
			t.Errorf("DeviceType(%q) = %q: %d + %d characters", host, dt, len(app), len(dev))
		}
	}
	fake := huetest.New(huetest.Options{LinkButtonPressed: true})
	host, err := fake.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	if _, err := Pair(t.Context(), PairOptions{Host: host, DeviceType: DeviceType("homeassistant-living-room-raspberry"), Timeout: 5 * time.Second}); err != nil {
		t.Errorf("pairing with a long host name: %v", err)
	}
}
