// Package sbtest runs the Service Bus stand-in broker (broker.py, an AMQP 1.0
// server built on Debian's python3-qpid-proton) for tests, and offers helpers
// that talk to it through the real azservicebus SDK.
//
// The broker listens on a free loopback port and is reached with a
// UseDevelopmentEmulator=true connection string (plain AMQP, SASL ANONYMOUS,
// CBS put-token). It keeps its messages in a journal, so Kill followed by
// Restart on the same port loses nothing, like the real service.
package sbtest

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/go-amqp"
)

//go:embed broker.py
var brokerScript []byte

// Python is the interpreter that has python3-qpid-proton (Debian's package
// installs it for the system Python only).
const Python = "/usr/bin/python3"

// InstallHint is the command that installs the stand-in's dependency.
const InstallHint = "apt-get install -y python3 python3-qpid-proton"

// Default SAS key of the stand-in's connection strings. The broker accepts any
// token unless Options.Keys is set.
const (
	DefaultKeyName = "RootManageSharedAccessKey"
	DefaultKey     = "c3RhbmQtaW4ta2V5"
)

// Options declare the broker's entities and behaviour.
type Options struct {
	// Subscriptions are "topic/subscription" pairs; the topics are created
	// with them. A subscription not listed does not exist (amqp:not-found).
	Subscriptions []string
	// Topics without subscriptions (messages sent to them are dropped).
	Topics []string
	// Queues by name.
	Queues []string
	// SessionQueues are queues that require sessions (a receiver accepts
	// one session at a time and holds its lock until it closes).
	SessionQueues []string
	// Forwards maps an entity path to the path it auto-forwards to
	// ("t/Subscriptions/s" → "q").
	Forwards map[string]string
	// LockDuration of peek-locks; default 30s.
	LockDuration time.Duration
	// MaxDeliveryCount after which a message is dead-lettered; default 10.
	MaxDeliveryCount int
	// Keys, when set, are the only SAS keys accepted (name → key), each
	// with all rights. Empty: any token is accepted.
	Keys map[string]string
	// ListenOnlyKeys and SendOnlyKeys are accepted keys with one right only.
	ListenOnlyKeys, SendOnlyKeys map[string]string
}

// Broker is a running stand-in.
type Broker struct {
	tb     testing.TB
	opts   Options
	script string
	dir    string
	port   int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	client *azservicebus.Client

	ctlMu   sync.Mutex
	ctlConn *amqp.Conn
	ctl     *amqp.Sender
}

// Available reports whether the stand-in can run here; when it cannot, the
// error says why.
func Available() error {
	out, err := exec.Command(Python, "-c", "import proton").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s cannot import proton (%v: %s); install it with: %s",
			Python, err, bytes.TrimSpace(out), InstallHint)
	}
	return nil
}

// Require skips the test (or fails it under CI=true) when the stand-in
// cannot run, and skips it in -short mode.
func Require(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test with the Service Bus stand-in: skipped in -short mode")
	}
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
}

// Start runs a broker for the test and stops it when the test ends. It calls
// Require first.
func Start(tb testing.TB, opts Options) *Broker {
	tb.Helper()
	Require(tb)
	dir := tb.TempDir()
	b := &Broker{tb: tb, opts: opts, dir: dir, script: filepath.Join(dir, "broker.py")}
	if err := os.WriteFile(b.script, brokerScript, 0o600); err != nil {
		tb.Fatalf("sbtest: write broker script: %v", err)
	}
	if err := b.start(); err != nil {
		tb.Fatalf("sbtest: %v", err)
	}
	tb.Cleanup(func() {
		b.mu.Lock()
		client := b.client
		b.client = nil
		b.mu.Unlock()
		b.closeControl()
		if client != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = client.Close(ctx)
			cancel()
		}
		b.Kill()
		if tb.Failed() {
			if log, err := os.ReadFile(filepath.Join(dir, "broker.log")); err == nil && len(log) > 0 {
				tb.Logf("stand-in broker stderr:\n%s", tail(log, 4000))
			}
		}
	})
	return b
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (b *Broker) args() []string {
	o := b.opts
	args := []string{b.script, "--port", strconv.Itoa(b.port), "--journal", filepath.Join(b.dir, "journal")}
	lock := o.LockDuration
	if lock == 0 {
		lock = 30 * time.Second
	}
	args = append(args, "--lock-duration", strconv.FormatFloat(lock.Seconds(), 'f', -1, 64))
	if o.MaxDeliveryCount > 0 {
		args = append(args, "--max-delivery-count", strconv.Itoa(o.MaxDeliveryCount))
	}
	for _, s := range o.Subscriptions {
		args = append(args, "--subscription", s)
	}
	for _, s := range o.Topics {
		args = append(args, "--topic", s)
	}
	for _, q := range o.Queues {
		args = append(args, "--queue", q)
	}
	for _, q := range o.SessionQueues {
		args = append(args, "--session-queue", q)
	}
	for src, dst := range o.Forwards {
		args = append(args, "--forward", src+"="+dst)
	}
	for name, key := range o.Keys {
		args = append(args, "--key", name+"="+key)
	}
	for name, key := range o.ListenOnlyKeys {
		args = append(args, "--key", name+"="+key+"=Listen")
	}
	for name, key := range o.SendOnlyKeys {
		args = append(args, "--key", name+"="+key+"=Send")
	}
	return args
}

func (b *Broker) start() error {
	logf, err := os.OpenFile(filepath.Join(b.dir, "broker.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open broker log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(Python, b.args()...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("broker stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	exited := make(chan struct{})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for {
		select {
		case line := <-lines:
			p, ok := strings.CutPrefix(line, "LISTENING ")
			if !ok {
				continue
			}
			port, err := strconv.Atoi(p)
			if err != nil {
				_ = cmd.Process.Kill()
				return fmt.Errorf("broker printed %q", line)
			}
			b.mu.Lock()
			b.port, b.cmd, b.exited = port, cmd, exited
			b.mu.Unlock()
			return nil
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(b.dir, "broker.log"))
			return fmt.Errorf("broker exited before listening: %s", tail(log, 2000))
		case <-timer.C:
			_ = cmd.Process.Kill()
			return errors.New("broker did not start listening within 15s")
		}
	}
}

// Pid is the broker process's id (0 when it is not running): load runs
// read its CPU time.
func (b *Broker) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Port is the broker's loopback port; it stays the same across Restart.
func (b *Broker) Port() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.port
}

// ConnectionString reaches the broker with the default key.
func (b *Broker) ConnectionString() string {
	return b.ConnectionStringWithKey(DefaultKeyName, DefaultKey)
}

// ConnectionStringWithKey reaches the broker with the named SAS key.
func (b *Broker) ConnectionStringWithKey(name, key string) string {
	return fmt.Sprintf("Endpoint=sb://127.0.0.1:%d;SharedAccessKeyName=%s;SharedAccessKey=%s;UseDevelopmentEmulator=true",
		b.Port(), name, key)
}

// Kill stops the broker at once (SIGKILL), as a crash would. Messages stay
// in its journal.
func (b *Broker) Kill() {
	b.closeControl()
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart starts a killed broker again on the same port with the same
// journal.
func (b *Broker) Restart() {
	b.tb.Helper()
	b.Kill()
	if err := b.start(); err != nil {
		b.tb.Fatalf("sbtest: restart: %v", err)
	}
}

// Client is a shared SDK client for the helpers, with the default key.
func (b *Broker) Client() *azservicebus.Client {
	b.tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.client == nil {
		c, err := NewClient(b.connStringLocked())
		if err != nil {
			b.tb.Fatalf("sbtest: client: %v", err)
		}
		b.client = c
	}
	return b.client
}

func (b *Broker) connStringLocked() string {
	key, name := DefaultKey, DefaultKeyName
	for n, k := range b.opts.Keys {
		name, key = n, k
		break
	}
	return fmt.Sprintf("Endpoint=sb://127.0.0.1:%d;SharedAccessKeyName=%s;SharedAccessKey=%s;UseDevelopmentEmulator=true",
		b.port, name, key)
}

// NewClient makes an SDK client with short retries, suited to a loopback
// broker.
func NewClient(connStr string) (*azservicebus.Client, error) {
	return azservicebus.NewClientFromConnectionString(connStr, &azservicebus.ClientOptions{
		RetryOptions: azservicebus.RetryOptions{MaxRetries: 3, RetryDelay: 100 * time.Millisecond, MaxRetryDelay: time.Second},
	})
}

// Send sends each body as one message (content type application/json) to a
// topic or queue, several at a time, in order per sender goroutine; it fails
// the test on error.
func (b *Broker) Send(ctx context.Context, entity string, bodies ...[]byte) {
	b.tb.Helper()
	msgs := make([]*azservicebus.Message, len(bodies))
	for i, body := range bodies {
		msgs[i] = &azservicebus.Message{Body: body, ContentType: ptr("application/json")}
	}
	b.SendMessages(ctx, entity, msgs...)
}

// SendMessages sends messages to a topic or queue, in order.
func (b *Broker) SendMessages(ctx context.Context, entity string, msgs ...*azservicebus.Message) {
	b.tb.Helper()
	sender, err := b.Client().NewSender(entity, nil)
	if err != nil {
		b.tb.Fatalf("sbtest: new sender for %s: %v", entity, err)
	}
	defer sender.Close(context.WithoutCancel(ctx))
	for i, m := range msgs {
		if err := sender.SendMessage(ctx, m, nil); err != nil {
			b.tb.Fatalf("sbtest: send message %d to %s: %v", i, entity, err)
		}
	}
}

// DeadLetters receives and completes n messages from the dead-letter queue of
// entity (a queue name or "topic/Subscriptions/sub"), waiting until ctx ends.
func (b *Broker) DeadLetters(ctx context.Context, entity string, n int) []*azservicebus.ReceivedMessage {
	b.tb.Helper()
	got, err := Drain(ctx, b.Client(), entity, azservicebus.SubQueueDeadLetter, n)
	if err != nil {
		b.tb.Fatalf("sbtest: dead letters of %s: got %d of %d: %v", entity, len(got), n, err)
	}
	return got
}

// Count returns how many messages entity (or its dead-letter queue) holds,
// by peeking; it includes locked messages.
func (b *Broker) Count(ctx context.Context, entity string, sub azservicebus.SubQueue) int {
	b.tb.Helper()
	r, err := newReceiver(b.Client(), entity, sub)
	if err != nil {
		b.tb.Fatalf("sbtest: receiver for %s: %v", entity, err)
	}
	defer r.Close(context.WithoutCancel(ctx))
	var from int64
	total := 0
	for {
		msgs, err := r.PeekMessages(ctx, 1000, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &from})
		if err != nil {
			b.tb.Fatalf("sbtest: peek %s: %v", entity, err)
		}
		if len(msgs) == 0 {
			return total
		}
		total += len(msgs)
		from = *msgs[len(msgs)-1].SequenceNumber + 1
	}
}

// Drain receives and completes n messages from entity (or one of its
// sub-queues) with client, until ctx ends.
func Drain(ctx context.Context, client *azservicebus.Client, entity string, sub azservicebus.SubQueue, n int) ([]*azservicebus.ReceivedMessage, error) {
	r, err := newReceiver(client, entity, sub)
	if err != nil {
		return nil, err
	}
	defer r.Close(context.WithoutCancel(ctx))
	var out []*azservicebus.ReceivedMessage
	for len(out) < n {
		msgs, err := r.ReceiveMessages(ctx, n-len(out), nil)
		if err != nil {
			return out, fmt.Errorf("receive: %w", err)
		}
		for _, m := range msgs {
			if err := r.CompleteMessage(ctx, m, nil); err != nil {
				return out, fmt.Errorf("complete: %w", err)
			}
			out = append(out, m)
		}
	}
	return out, nil
}

func newReceiver(client *azservicebus.Client, entity string, sub azservicebus.SubQueue) (*azservicebus.Receiver, error) {
	opts := &azservicebus.ReceiverOptions{SubQueue: sub}
	if topic, s, ok := strings.Cut(entity, "/Subscriptions/"); ok {
		return client.NewReceiverForSubscription(topic, s, opts)
	}
	return client.NewReceiverForQueue(entity, opts)
}

func ptr[T any](v T) *T { return &v }

// Stats returns the stand-in's operation counts since it started
// (deliveries, dispositions by outcome, management operations, flow
// frames): what a client made it do. It asks the broker with SIGUSR1 and
// reads the answer from its log.
func (b *Broker) Stats(tb testing.TB) map[string]int {
	tb.Helper()
	b.mu.Lock()
	cmd := b.cmd
	b.mu.Unlock()
	path := filepath.Join(b.dir, "broker.log")
	before, _ := os.ReadFile(path)
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		tb.Fatalf("stand-in stats: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		log, _ := os.ReadFile(path)
		if len(log) > len(before) {
			if i := bytes.LastIndex(log, []byte("STATS ")); i >= len(before) {
				line, _, _ := bytes.Cut(log[i+len("STATS "):], []byte("\n"))
				out := map[string]int{}
				if err := json.Unmarshal(line, &out); err != nil {
					tb.Fatalf("stand-in stats %q: %v", line, err)
				}
				return out
			}
		}
		time.Sleep(10 * time.Millisecond) // polling the broker's log file
	}
	tb.Fatal("stand-in stats: no answer")
	return nil
}
