// Package azurite starts Azurite's Table service (Microsoft's local Azure
// Storage emulator, an npm package) for integration tests: one process per
// Start on a free loopback port, in memory, stopped at the end of the test.
//
// The binary is azurite-table on PATH, or the one .ci/run installs under the
// user's cache directory (see InstallHint). When it is missing the test is
// skipped, or fails under CI=true with the install command; -short skips it.
package azurite

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/testnet"
)

// Version is the Azurite release the tests run against.
const Version = "3.37.0"

// AccountName and AccountKey are Azurite's well-known development account
// (published in Azurite's documentation; not a secret).
const (
	AccountName = "devstoreaccount1"
	AccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// startTimeout bounds how long node takes to start the service.
const startTimeout = 30 * time.Second

// Dir is where .ci/run installs Azurite: $AZURITE_DIR, else
// $XDG_CACHE_HOME/presence-bridge/azurite (~/.cache/... by default).
func Dir() string {
	if d := os.Getenv("AZURITE_DIR"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "presence-bridge", "azurite")
}

// InstallHint is the command that installs Azurite where Binary finds it.
func InstallHint() string {
	return fmt.Sprintf("npm install --prefix %s azurite@%s (node 20 or later)", Dir(), Version)
}

// Binary finds azurite-table: on PATH first, then under Dir.
func Binary() (string, error) {
	if p, err := exec.LookPath("azurite-table"); err == nil {
		return p, nil
	}
	p := filepath.Join(Dir(), "node_modules", ".bin", "azurite-table")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("azurite-table is not on PATH nor at %s: install it with: %s", p, InstallHint())
	}
	return p, nil
}

// Require skips the test (or fails it under CI=true) when Azurite is not
// installed, and skips it in -short mode. It returns the binary's path.
func Require(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test with Azurite: skipped in -short mode")
	}
	p, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	return p
}

// Server is a running Azurite Table service.
type Server struct {
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *strings.Builder
}

// Start runs azurite-table on a free loopback port with in-memory
// persistence and telemetry off, and stops it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := Require(tb)
	dir := tb.TempDir()
	var lastErr error
	for range 3 { // a free port can be taken by someone else before node binds it
		port, err := testnet.FreePort()
		if err != nil {
			tb.Fatalf("azurite: free port: %v", err)
		}
		s := &Server{port: port}
		if lastErr = s.start(bin, dir); lastErr == nil {
			tb.Cleanup(s.Stop)
			return s
		}
	}
	tb.Fatalf("azurite: %v", lastErr)
	return nil
}

func (s *Server) start(bin, dir string) error {
	cmd := exec.Command(bin, "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--loose", "--silent",
		"--tableHost", "127.0.0.1", "--tablePort", strconv.Itoa(s.port))
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	log := &strings.Builder{}
	var logMu sync.Mutex
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			logMu.Lock()
			if log.Len() < 8<<10 {
				log.WriteString(sc.Text() + "\n")
			}
			logMu.Unlock()
			if !signalled && strings.Contains(sc.Text(), "successfully started") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(done)
	}()
	text := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return log.String()
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ready:
	case <-done:
		return fmt.Errorf("azurite-table exited at start: %s", text())
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("azurite-table did not start within %v: %s", startTimeout, text())
	}
	s.mu.Lock()
	s.cmd, s.done, s.log = cmd, done, log
	s.mu.Unlock()
	return nil
}

// Endpoint is the Table service URL of the development account.
func (s *Server) Endpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", s.port, AccountName)
}

// ConnectionString reaches the service with the development account's key.
// (aztables refuses the UseDevelopmentStorage=true shorthand.)
func (s *Server) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;TableEndpoint=%s;", AccountName, AccountKey, s.Endpoint())
}

// Stop kills the service; its data is gone (in memory). Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}
