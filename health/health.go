// Package health is the bridge's local health endpoint and its client.
//
// The daemon serves GET /health on health_addr (loopback by default): a JSON
// document with every component's last reported status, answered with 200
// when all are healthy and 503 otherwise. `presence-bridge healthcheck`, the
// image's Docker HEALTHCHECK, asks it with Check.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
)

// Path is where the endpoint answers.
const Path = "/health"

// Report is the endpoint's JSON document.
type Report struct {
	Healthy    bool                              `json:"healthy"`
	Components map[string]bridge.ComponentStatus `json:"components"`
}

// Handler serves h as a Report: 200 when healthy, 503 otherwise. It answers
// GET and HEAD on any path; Serve mounts it at Path.
func Handler(h *bridge.Health) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// One snapshot decides both the code and the body, so they agree.
		snap := h.Snapshot()
		rep := Report{Healthy: true, Components: snap}
		for _, st := range snap {
			if !st.OK {
				rep.Healthy = false
			}
		}
		body, err := json.Marshal(rep)
		if err != nil {
			http.Error(w, "encode health", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		code := http.StatusOK
		if !rep.Healthy {
			code = http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		if r.Method == http.MethodGet {
			_, _ = w.Write(append(body, '\n'))
		}
	})
}

// Serve listens on addr and serves the endpoint until ctx ends; it then shuts
// the server down and returns nil. A listen failure is returned at once.
func Serve(ctx context.Context, addr string, h *bridge.Health, logger *slog.Logger) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("health: listen: %w", err)
	}
	return ServeListener(ctx, ln, h, logger)
}

// ServeListener is Serve on a listener the caller opened (tests use port 0).
// It closes ln.
func ServeListener(ctx context.Context, ln net.Listener, h *bridge.Health, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, Handler(h))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      5 * time.Second,
		IdleTimeout:       30 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	logger.Info("health endpoint listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("health: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health: serve: %w", err)
	}
	return nil
}

// ErrUnhealthy is returned by Check when the endpoint answers that some
// component is not healthy.
var ErrUnhealthy = errors.New("unhealthy")

// maxReport bounds what Check reads of an answer.
const maxReport = 64 << 10

// Check asks the endpoint at addr (host:port). It returns nil when the bridge
// reports itself healthy, an error wrapping ErrUnhealthy naming the failing
// components when it does not, and another error when the endpoint cannot be
// reached or answers something else. Without a deadline on ctx it gives up
// after 5 seconds.
func Check(ctx context.Context, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("health: address %q: %w", addr, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	url := "http://" + addr + Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health: request: %w", err)
	}
	// No proxy, no keep-alive: a one-shot loopback request.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health: get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReport))
	if err != nil {
		return fmt.Errorf("health: read answer: %w", err)
	}
	return interpret(resp.StatusCode, body)
}

// interpret turns the endpoint's answer into Check's result.
func interpret(code int, body []byte) error {
	switch code {
	case http.StatusOK:
		return nil
	case http.StatusServiceUnavailable:
		var rep Report
		if err := json.Unmarshal(body, &rep); err != nil {
			return fmt.Errorf("health: %w (answer not understood: %v)", ErrUnhealthy, err)
		}
		return fmt.Errorf("health: %w: %s", ErrUnhealthy, failing(rep))
	default:
		return fmt.Errorf("health: unexpected status %d %s", code, http.StatusText(code))
	}
}

// failing lists the components that are not OK, sorted, with their details.
func failing(rep Report) string {
	var parts []string
	for name, st := range rep.Components {
		if st.OK {
			continue
		}
		if st.Detail != "" {
			parts = append(parts, name+" ("+st.Detail+")")
		} else {
			parts = append(parts, name)
		}
	}
	if len(parts) == 0 {
		return "no failing component named"
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
