// Package healthtest runs the real health endpoint for tests.
package healthtest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/health"
)

// Serve runs the health endpoint of h on a loopback port until the test
// ends, and returns its address. It fails the test if the endpoint does
// not stop, or stops with an error.
func Serve(t testing.TB, h *bridge.Health) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- health.ServeListener(ctx, ln, h, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("health endpoint: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("health endpoint did not stop")
		}
	})
	return ln.Addr().String()
}
