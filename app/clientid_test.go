package app

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery/discoverytest"
)

func TestDefaultClientIDIsStablePerInstallation(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	first := mqttClientID(dir, "presence-bridge", log)
	if !strings.HasPrefix(first, "presence-bridge-") || len(first) != len("presence-bridge-")+8 {
		t.Fatalf("client id %q, want presence-bridge-<8 hex digits>", first)
	}
	if again := mqttClientID(dir, "presence-bridge", log); again != first {
		t.Errorf("after a restart the client id is %q, was %q", again, first)
	}
	if other := mqttClientID(t.TempDir(), "presence-bridge", log); other == first {
		t.Errorf("two installations share the client id %q", other)
	}
	if fi, err := os.Stat(filepath.Join(dir, clientIDFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("suffix file: %v, %v; want mode 0600", fi, err)
	}
	// A data directory that cannot be written: derived from host and base
	// topic, still stable, and different per base topic.
	ro := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(ro, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a := mqttClientID(ro, "presence-bridge", log)
	if a != mqttClientID(ro, "presence-bridge", log) || a == mqttClientID(ro, "office", log) {
		t.Errorf("derived ids not stable or not distinct: %q", a)
	}
}

// noSource is a source that submits nothing.
type noSource struct{}

func (noSource) Name() string                                      { return "demo" }
func (noSource) Run(ctx context.Context, _ bridge.Submitter) error { <-ctx.Done(); return nil }

// TestDaemonConnectsWithTheDefaultClientID: with mqtt.client_id empty the
// daemon connects as presence-bridge-<suffix>, the same after a restart.
func TestDaemonConnectsWithTheDefaultClientID(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.HealthAddr = ""
	cfg.MQTT.URL = "tcp://fake:1883"
	cfg.Users = []config.User{{ID: alexID, Name: "Alex"}}
	var ids []string
	for range 2 {
		synctest.Test(t, func(t *testing.T) {
			b := discoverytest.New()
			d, err := NewDaemon(DaemonOptions{
				Config: &cfg, MQTTDial: b.Dial,
				Sources: []SourceFactory{func(bridge.StatusReporter, *slog.Logger) (Source, error) { return noSource{}, nil }},
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			synctest.Wait()
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			ms := b.Messages()
			if len(ms) == 0 {
				t.Fatal("the daemon published nothing")
			}
			ids = append(ids, ms[0].ClientID)
		})
	}
	if !strings.HasPrefix(ids[0], "presence-bridge-") || ids[0] != ids[1] {
		t.Errorf("client ids of two runs: %q", ids)
	}
}
