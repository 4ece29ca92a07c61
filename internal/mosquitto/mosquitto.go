// Package mosquitto starts a real mosquitto broker for integration tests: one
// process per Start on a free loopback port, with a throw-away configuration,
// stopped at the end of the test.
//
// When the mosquitto binary is missing the test is skipped, or fails under
// CI=true (CI installs it with apt-get install -y mosquitto).
package mosquitto

import (
	"bufio"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/testnet"
)

// Binary is where Debian's mosquitto package installs the broker.
const Binary = "/usr/sbin/mosquitto"

const installHint = "mosquitto is required: apt-get install -y mosquitto"

// startTimeout bounds how long the broker may take to start listening.
const startTimeout = 10 * time.Second

// Option changes how the broker is configured.
type Option func(*settings)

type settings struct {
	users     map[string]string
	extra     []string
	cert, key []byte
}

// WithTLS makes the listener speak TLS with the given PEM certificate chain
// and key; URL then starts with ssl://.
func WithTLS(certPEM, keyPEM []byte) Option {
	return func(s *settings) { s.cert, s.key = certPEM, keyPEM }
}

// WithCredentials makes the broker refuse anonymous clients and accept only
// the given user and password.
func WithCredentials(user, password string) Option {
	return func(s *settings) {
		if s.users == nil {
			s.users = make(map[string]string)
		}
		s.users[user] = password
	}
}

// WithConfig appends raw lines to the broker's configuration (for example
// "max_inflight_messages 1").
func WithConfig(lines ...string) Option {
	return func(s *settings) { s.extra = append(s.extra, lines...) }
}

// Broker is a running (or stopped) mosquitto process.
type Broker struct {
	t    testing.TB
	dir  string
	conf string
	port int
	tls  bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *logTail
}

// Start starts mosquitto on a free port of 127.0.0.1 and stops it when the
// test ends.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v (%s)", Binary, err, installHint)
		}
		t.Skipf("%s not found: %s", Binary, installHint)
	}
	var s settings
	for _, o := range opts {
		o(&s)
	}
	// The directory must be readable by the mosquitto user: as root the
	// broker drops its privileges before it reads the password file.
	dir, err := os.MkdirTemp("", "mosquitto-test-")
	if err != nil {
		t.Fatalf("mosquitto: temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("mosquitto: chmod temp dir: %v", err)
	}
	b := &Broker{t: t, dir: dir, conf: filepath.Join(dir, "mosquitto.conf"), tls: s.cert != nil}
	t.Cleanup(b.Stop)

	var lastErr error
	for range 3 { // a free port can be taken by someone else before mosquitto binds it
		port, err := testnet.FreePort()
		if err != nil {
			t.Fatalf("mosquitto: free port: %v", err)
		}
		b.port = port
		if err := b.writeConfig(s); err != nil {
			t.Fatalf("mosquitto: %v", err)
		}
		if lastErr = b.start(); lastErr == nil {
			return b
		}
	}
	t.Fatalf("mosquitto: start: %v", lastErr)
	return nil
}

// URL is the broker's address for MQTT clients: tcp://127.0.0.1:PORT, or
// ssl://127.0.0.1:PORT with WithTLS.
func (b *Broker) URL() string {
	if b.tls {
		return "ssl://" + b.Addr()
	}
	return "tcp://" + b.Addr()
}

// Addr is host:port of the broker.
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// Stop kills the broker (SIGKILL: no goodbye to its clients, like a crash)
// and waits for it to exit. Stopping a stopped broker does nothing.
func (b *Broker) Stop() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts the broker again on the same port after Stop (or stops it
// first). Retained messages are gone: persistence is off.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	var err error
	deadline := time.Now().Add(startTimeout)
	for {
		// The port is normally free at once (mosquitto sets SO_REUSEADDR);
		// retry while a lingering socket still holds it.
		if err = b.start(); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		b.t.Fatalf("mosquitto: restart: %v", err)
	}
}

// Log returns what the broker has logged so far (the last lines).
func (b *Broker) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.log == nil {
		return ""
	}
	return b.log.String()
}

func (b *Broker) writeConfig(s settings) error {
	var c strings.Builder
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", b.port)
	c.WriteString("persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\n")
	if len(s.users) == 0 {
		c.WriteString("allow_anonymous true\n")
	} else {
		pw := filepath.Join(b.dir, "passwd")
		var p strings.Builder
		for u, pass := range s.users {
			h, err := hashPassword(pass)
			if err != nil {
				return err
			}
			fmt.Fprintf(&p, "%s:%s\n", u, h)
		}
		if err := os.WriteFile(pw, []byte(p.String()), 0o644); err != nil {
			return fmt.Errorf("write password file: %w", err)
		}
		fmt.Fprintf(&c, "allow_anonymous false\npassword_file %s\n", pw)
	}
	if s.cert != nil {
		cert, key := filepath.Join(b.dir, "cert.pem"), filepath.Join(b.dir, "key.pem")
		if err := os.WriteFile(cert, s.cert, 0o644); err != nil {
			return fmt.Errorf("write certificate: %w", err)
		}
		if err := os.WriteFile(key, s.key, 0o644); err != nil {
			return fmt.Errorf("write key: %w", err)
		}
		fmt.Fprintf(&c, "certfile %s\nkeyfile %s\n", cert, key)
	}
	for _, l := range s.extra {
		c.WriteString(l + "\n")
	}
	if err := os.WriteFile(b.conf, []byte(c.String()), 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// start runs the process and waits until it logs that it is running (it
// opens its listener before), or exits.
func (b *Broker) start() error {
	cmd := exec.Command(Binary, "-c", b.conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("stderr pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	log := &logTail{}
	running := make(chan struct{})
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			log.add(line)
			if !signalled && strings.Contains(line, " running") {
				signalled = true
				close(running)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		close(done)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-running:
	case <-done:
		return fmt.Errorf("mosquitto exited at start: %s", log.String())
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("mosquitto did not start within %v: %s", startTimeout, log.String())
	}
	b.mu.Lock()
	b.cmd, b.done, b.log = cmd, done, log
	b.mu.Unlock()
	return nil
}

// hashPassword returns a mosquitto password-file hash ("$6$": SHA-512 over
// the password followed by a 12-byte salt, both base64 encoded).
func hashPassword(password string) (string, error) {
	salt := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	h := sha512.New()
	h.Write([]byte(password))
	h.Write(salt)
	enc := base64.StdEncoding
	return "$6$" + enc.EncodeToString(salt) + "$" + enc.EncodeToString(h.Sum(nil)), nil
}

// logTail keeps the last lines a broker wrote.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

const maxLogLines = 50

func (l *logTail) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
	if len(l.lines) > maxLogLines {
		l.lines = l.lines[len(l.lines)-maxLogLines:]
	}
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

var errNoBroker = errors.New("mosquitto: broker not running")

// Pid returns the process id of the running broker.
func (b *Broker) Pid() (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return 0, errNoBroker
	}
	return b.cmd.Process.Pid, nil
}
