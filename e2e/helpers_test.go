package e2e

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/presence"
)

const wait = 30 * time.Second

// binary is the presence-bridge built for this test run ("" in -short).
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "presence-bridge-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "presence-bridge")
	build := exec.Command("go", "build", "-trimpath", "-o", binary, "github.com/presence-bridge/presence-bridge/cmd/presence-bridge")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build presence-bridge:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireBinary(tb testing.TB) {
	tb.Helper()
	if testing.Short() || binary == "" {
		tb.Skip("end-to-end test (builds the binary, needs mosquitto and the Service Bus stand-in)")
	}
}

// bridgeProc is a running presence-bridge binary.
type bridgeProc struct {
	cmd  *exec.Cmd
	logs *safebuf.Buffer
	done chan struct{}
	code int
}

// startBridge writes the configuration and runs `presence-bridge run`.
func startBridge(tb testing.TB, cfg string, env ...string) *bridgeProc {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "presence-bridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	p := &bridgeProc{logs: &safebuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, "run", "-config", path)
	p.cmd.Dir = filepath.Dir(path) // the default data_dir (./data) lands in the test's folder
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start presence-bridge: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("presence-bridge output:\n%s", p.logs.String())
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit code and how long the exit took.
func (p *bridgeProc) stop(tb testing.TB) (int, time.Duration) {
	tb.Helper()
	began := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.code, time.Since(began)
	case <-time.After(wait):
		tb.Fatalf("presence-bridge did not exit after SIGTERM:\n%s", p.logs.String())
		return 0, 0
	}
}

// rssKiB returns the process's resident set now and at its peak.
func (p *bridgeProc) rssKiB(tb testing.TB) (now, peak int) {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		tb.Fatalf("read process status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			now, _ = strconv.Atoi(f[1])
		case "VmHWM:":
			peak, _ = strconv.Atoi(f[1])
		}
	}
	return now, peak
}

// cpuTicks returns the process's user+system CPU time in clock ticks.
func (p *bridgeProc) cpuTicks(tb testing.TB) int64 {
	tb.Helper()
	return int64(cpuOf(p.cmd.Process.Pid) * clockTicks / time.Second)
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// guid returns a distinct GUID for user i.
func guid(i int) presence.UserID {
	return presence.UserID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
}

func body(tb testing.TB, u presence.Update) []byte {
	tb.Helper()
	b, err := presence.Encode(u)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// usersYAML lists n users (guid(i), U<i>).
func usersYAML(n int) string {
	var b strings.Builder
	b.WriteString("users:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {id: %s, name: U%d}\n", guid(i), i)
	}
	return b.String()
}

// watcher records every MQTT message of a filter, with its arrival time.
type watcher struct {
	client mqtt.Client
	mu     sync.Mutex
	msgs   []received
	change chan struct{}
}

type received struct {
	topic, payload string
	retained       bool
	at             time.Time
}

var clientSeq atomic.Int64

func newClient(tb testing.TB, url string) mqtt.Client {
	tb.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).
		SetClientID(fmt.Sprintf("e2e-%d", clientSeq.Add(1))).SetAutoReconnect(false).SetConnectTimeout(wait))
	awaitToken(tb, c.Connect(), "connect")
	tb.Cleanup(func() { c.Disconnect(0) })
	return c
}

func awaitToken(tb testing.TB, tok mqtt.Token, what string) {
	tb.Helper()
	if !tok.WaitTimeout(wait) {
		tb.Fatalf("%s: no answer within %v", what, wait)
	}
	if err := tok.Error(); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

func watch(tb testing.TB, url, filter string) *watcher {
	tb.Helper()
	w := &watcher{client: newClient(tb, url), change: make(chan struct{})}
	awaitToken(tb, w.client.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		at := time.Now()
		w.mu.Lock()
		w.msgs = append(w.msgs, received{m.Topic(), string(m.Payload()), m.Retained(), at})
		close(w.change)
		w.change = make(chan struct{})
		w.mu.Unlock()
	}), "subscribe")
	return w
}

// waitFor waits until cond holds on the messages so far and returns them.
func (w *watcher) waitFor(tb testing.TB, ctx context.Context, desc string, cond func([]received) bool) []received {
	tb.Helper()
	for {
		w.mu.Lock()
		msgs, ch := w.msgs, w.change
		w.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-ch:
		case <-ctx.Done():
			tb.Fatalf("timed out waiting for %s (%d messages)", desc, len(msgs))
		}
	}
}

func has(msgs []received, topic, fragment string) bool {
	for _, m := range msgs {
		if m.topic == topic && strings.Contains(m.payload, fragment) {
			return true
		}
	}
	return false
}

// holdProxy forwards TCP to a broker. While held, bytes from the broker to
// the client (PUBACKs among them) are kept back; release delivers them.
type holdProxy struct {
	ln   net.Listener
	mu   sync.Mutex
	held bool
	cond *sync.Cond
}

func newHoldProxy(tb testing.TB, target string) *holdProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &holdProxy{ln: ln}
	p.cond = sync.NewCond(&p.mu)
	var conns sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); p.release() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); p.pipe(out, in, false) }()
			go func() { defer conns.Done(); p.pipe(in, out, true) }()
		}
	}()
	return p
}

func (p *holdProxy) pipe(dst, src net.Conn, fromBroker bool) {
	defer dst.Close()
	buf := make([]byte, 64*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromBroker {
				p.mu.Lock()
				for p.held {
					p.cond.Wait()
				}
				p.mu.Unlock()
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *holdProxy) url() string { return "tcp://" + p.ln.Addr().String() }

func (p *holdProxy) hold() {
	p.mu.Lock()
	p.held = true
	p.mu.Unlock()
}

func (p *holdProxy) release() {
	p.mu.Lock()
	p.held = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// percentile returns the q-quantile (0..1) of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
