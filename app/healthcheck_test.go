package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/health/healthtest"
	"github.com/presence-bridge/presence-bridge/internal/testnet"
)

// writeConfig writes a minimal valid configuration with the given health_addr.
func writeConfig(t *testing.T, healthAddr string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "presence-bridge.yaml")
	yaml := "health_addr: \"" + healthAddr + "\"\n" +
		"users:\n  - id: 6f1c2a3b-1111-2222-3333-444455556666\n    name: Alex\n" +
		"service_bus:\n  connection_string: ${SB_CONN}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHealthcheckExitCodes(t *testing.T) {
	healthy := bridge.NewHealth()
	healthy.SetStatus("service_bus", true, "")
	healthy.SetStatus("mqtt", true, "")
	unhealthy := bridge.NewHealth()
	unhealthy.SetStatus("service_bus", true, "")
	unhealthy.SetStatus("mqtt", false, "connection refused")

	healthyAddr := healthtest.Serve(t, healthy)
	unhealthyAddr := healthtest.Serve(t, unhealthy)
	deadAddr := testnet.ClosedAddr(t)

	tests := []struct {
		name       string
		args       []string
		want       int
		wantStderr string
	}{
		{name: "healthy", args: []string{"-addr", healthyAddr}, want: ExitOK},
		{name: "unhealthy", args: []string{"-addr", unhealthyAddr}, want: ExitFailure, wantStderr: "mqtt (connection refused)"},
		{name: "unreachable", args: []string{"-addr", deadAddr}, want: ExitFailure, wantStderr: "healthcheck"},
		{name: "config healthy", args: []string{"-config", writeConfig(t, healthyAddr)}, want: ExitOK},
		{name: "config unhealthy", args: []string{"-config", writeConfig(t, unhealthyAddr)}, want: ExitFailure},
		{name: "addr wins over config", args: []string{"-config", writeConfig(t, deadAddr), "-addr", healthyAddr}, want: ExitOK},
		{name: "config with endpoint off", args: []string{"-config", writeConfig(t, "")}, want: ExitFailure, wantStderr: "health_addr is empty"},
		{name: "config missing", args: []string{"-config", filepath.Join(t.TempDir(), "nope.yaml")}, want: ExitUsage},
		{name: "unknown flag", args: []string{"-bogus"}, want: ExitUsage, wantStderr: "usage"},
		{name: "extra argument", args: []string{"-addr", healthyAddr, "extra"}, want: ExitUsage},
		{name: "addr without port", args: []string{"-addr", "localhost"}, want: ExitUsage, wantStderr: "host:port"},
		{name: "help", args: []string{"-h"}, want: ExitOK, wantStderr: "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := Env{
				Stdout: &stdout, Stderr: &stderr,
				LookupEnv: func(name string) (string, bool) {
					if name == "SB_CONN" {
						return "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0", true
					}
					return "", false
				},
			}
			got := Run(t.Context(), append([]string{"healthcheck"}, tt.args...), env)
			if got != tt.want {
				t.Fatalf("exit = %d, want %d\nstdout: %s\nstderr: %s", got, tt.want, &stdout, &stderr)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", &stderr, tt.wantStderr)
			}
		})
	}
}
