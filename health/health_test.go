package health

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/presence-bridge/presence-bridge/internal/testnet"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/presence-bridge/presence-bridge/bridge"
)

type status struct {
	component string
	ok        bool
	detail    string
}

func newHealth(sts ...status) *bridge.Health {
	h := bridge.NewHealth()
	for _, s := range sts {
		h.SetStatus(s.component, s.ok, s.detail)
	}
	return h
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name     string
		statuses []status
		method   string
		wantCode int
		wantOK   map[string]bool // component → ok in the body; nil: no body check
		healthy  bool
	}{
		{name: "nothing reported yet", method: http.MethodGet, wantCode: http.StatusOK, wantOK: map[string]bool{}, healthy: true},
		{
			name:     "all healthy",
			statuses: []status{{"service_bus", true, ""}, {"mqtt", true, ""}, {"hue", true, ""}},
			method:   http.MethodGet, wantCode: http.StatusOK,
			wantOK:  map[string]bool{"service_bus": true, "mqtt": true, "hue": true},
			healthy: true,
		},
		{
			name:     "one failing",
			statuses: []status{{"service_bus", true, ""}, {"mqtt", false, "connection refused"}},
			method:   http.MethodGet, wantCode: http.StatusServiceUnavailable,
			wantOK: map[string]bool{"service_bus": true, "mqtt": false},
		},
		{
			name:     "recovered",
			statuses: []status{{"hue", false, "timeout"}, {"hue", true, ""}},
			method:   http.MethodGet, wantCode: http.StatusOK,
			wantOK: map[string]bool{"hue": true}, healthy: true,
		},
		{name: "head", statuses: []status{{"mqtt", false, "down"}}, method: http.MethodHead, wantCode: http.StatusServiceUnavailable},
		{name: "post refused", method: http.MethodPost, wantCode: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Handler(newHealth(tt.statuses...)).ServeHTTP(rec, httptest.NewRequest(tt.method, Path, nil))
			if rec.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d (body %q)", rec.Code, tt.wantCode, rec.Body)
			}
			if tt.wantOK == nil {
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var rep Report
			if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if rep.Healthy != tt.healthy {
				t.Errorf("healthy = %v, want %v", rep.Healthy, tt.healthy)
			}
			got := map[string]bool{}
			for c, st := range rep.Components {
				got[c] = st.OK
			}
			if diff := cmp.Diff(tt.wantOK, got); diff != "" {
				t.Errorf("components (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlerDetail(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(newHealth(status{"hue", false, "key rejected"})).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path, nil))
	var rep Report
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if got := rep.Components["hue"].Detail; got != "key rejected" {
		t.Errorf("detail = %q", got)
	}
	if rep.Components["hue"].Since.IsZero() {
		t.Error("since is zero")
	}
}

// serve runs ServeListener on a loopback port and returns its address.
func serve(t *testing.T, h *bridge.Health) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, h, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListener: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("ServeListener did not return after cancel")
		}
	})
	return ln.Addr().String()
}

func TestCheck(t *testing.T) {
	healthy := serve(t, newHealth(status{"mqtt", true, ""}, status{"service_bus", true, ""}))
	unhealthy := serve(t, newHealth(status{"mqtt", true, ""}, status{"service_bus", false, "unauthorized"}, status{"hue", false, ""}))
	weird := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	t.Cleanup(weird.Close)

	tests := []struct {
		name          string
		addr          string
		wantErr       bool
		wantUnhealthy bool
		wantText      string
	}{
		{name: "healthy", addr: healthy},
		{name: "unhealthy", addr: unhealthy, wantErr: true, wantUnhealthy: true, wantText: "hue, service_bus (unauthorized)"},
		{name: "unreachable", addr: testnet.ClosedAddr(t), wantErr: true, wantText: "connect"},
		{name: "other status", addr: strings.TrimPrefix(weird.URL, "http://"), wantErr: true, wantText: "500"},
		{name: "no port", addr: "localhost", wantErr: true, wantText: "address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(t.Context(), tt.addr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Check = %v, want error %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if errors.Is(err, ErrUnhealthy) != tt.wantUnhealthy {
				t.Errorf("errors.Is(ErrUnhealthy) = %v, want %v (%v)", !tt.wantUnhealthy, tt.wantUnhealthy, err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not contain %q", err, tt.wantText)
			}
		})
	}
}

func TestCheckFollowsChanges(t *testing.T) {
	h := newHealth(status{"mqtt", true, ""})
	addr := serve(t, h)
	if err := Check(t.Context(), addr); err != nil {
		t.Fatalf("healthy: %v", err)
	}
	h.SetStatus("mqtt", false, "broker gone")
	if err := Check(t.Context(), addr); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("after failure: %v", err)
	}
	h.SetStatus("mqtt", true, "")
	if err := Check(t.Context(), addr); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestServeListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := Serve(t.Context(), ln.Addr().String(), bridge.NewHealth(), nil); err == nil {
		t.Fatal("Serve on a busy port returned nil")
	}
}

func TestServeStopsWithContext(t *testing.T) {
	addr := testnet.ClosedAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr, bridge.NewHealth(), nil) }()
	// Wait until it answers, then cancel.
	deadline := time.Now().Add(5 * time.Second)
	for Check(t.Context(), addr) != nil {
		if time.Now().After(deadline) {
			t.Fatal("endpoint never answered")
		}
		select {
		case err := <-done:
			t.Fatalf("Serve returned early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestInterpret(t *testing.T) {
	tests := []struct {
		name          string
		code          int
		body          string
		wantErr       bool
		wantUnhealthy bool
	}{
		{name: "ok ignores body", code: 200, body: "not json"},
		{name: "503 report", code: 503, body: `{"healthy":false,"components":{"mqtt":{"ok":false}}}`, wantErr: true, wantUnhealthy: true},
		{name: "503 garbage", code: 503, body: `<html>`, wantErr: true, wantUnhealthy: true},
		{name: "503 empty", code: 503, body: ``, wantErr: true, wantUnhealthy: true},
		{name: "503 wrong types", code: 503, body: `{"components":{"mqtt":{"ok":"no"}}}`, wantErr: true, wantUnhealthy: true},
		{name: "404", code: 404, body: `not found`, wantErr: true},
		{name: "204", code: 204, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := interpret(tt.code, []byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("interpret = %v, want error %v", err, tt.wantErr)
			}
			if errors.Is(err, ErrUnhealthy) != tt.wantUnhealthy {
				t.Errorf("unhealthy = %v, want %v", !tt.wantUnhealthy, tt.wantUnhealthy)
			}
		})
	}
}

func FuzzInterpret(f *testing.F) {
	f.Add(503, []byte(`{"healthy":false,"components":{"mqtt":{"ok":false,"detail":"x"}}}`))
	f.Add(200, []byte(`{}`))
	f.Add(503, []byte(`{"components":null}`))
	f.Fuzz(func(t *testing.T, code int, body []byte) {
		err := interpret(code, body)
		if (code == http.StatusOK) != (err == nil) {
			t.Fatalf("code %d: err %v", code, err)
		}
		if code == http.StatusServiceUnavailable && !errors.Is(err, ErrUnhealthy) {
			t.Fatalf("503 not unhealthy: %v", err)
		}
	})
}
