package discovery_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery"
	"github.com/presence-bridge/presence-bridge/presence"
)

const wait = 10 * time.Second

var (
	alex = config.User{ID: "6f1c2a3b-1111-2222-3333-444455556666", Name: "Alex"}
	sam  = config.User{ID: "0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff", Name: "Sam"}
)

func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (needs mosquitto)")
	}
}

// msg is one message a watcher received.
type msg struct {
	topic, payload string
	retained       bool
}

// watcher subscribes to a filter and records every message in order.
type watcher struct {
	client mqtt.Client
	seq    atomic.Int64
	mu     sync.Mutex
	msgs   []msg
	change chan struct{}
}

var clientSeq atomic.Int64

func newClient(t *testing.T, url string) mqtt.Client {
	t.Helper()
	id := fmt.Sprintf("test-%d", clientSeq.Add(1))
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).SetConnectTimeout(wait))
	await(t, c.Connect(), "connect "+id)
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func await(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(wait) {
		t.Fatalf("%s: no answer within %v", what, wait)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func watch(t *testing.T, url, filter string) *watcher {
	t.Helper()
	w := &watcher{client: newClient(t, url), change: make(chan struct{})}
	await(t, w.client.SubscribeMultiple(map[string]byte{filter: 1, "test/sync": 1}, func(_ mqtt.Client, m mqtt.Message) {
		w.mu.Lock()
		w.msgs = append(w.msgs, msg{m.Topic(), string(m.Payload()), m.Retained()})
		close(w.change)
		w.change = make(chan struct{})
		w.mu.Unlock()
	}), "subscribe "+filter)
	return w
}

// waitFor waits until cond holds on the messages received so far.
func (w *watcher) waitFor(t *testing.T, desc string, cond func([]msg) bool) []msg {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		msgs, ch := append([]msg(nil), w.msgs...), w.change
		w.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; got %d messages:\n%s", desc, len(msgs), dump(msgs))
		}
	}
}

// sync publishes a marker and waits for it: every message the broker
// routed to the watcher before the marker has then been received.
func (w *watcher) sync(t *testing.T) []msg {
	t.Helper()
	marker := fmt.Sprintf("m%d", w.seq.Add(1))
	await(t, w.client.Publish("test/sync", 1, false, marker), "publish marker")
	msgs := w.waitFor(t, "marker "+marker, func(ms []msg) bool {
		return len(ms) > 0 && has(ms, "test/sync", marker)
	})
	var out []msg
	for _, m := range msgs {
		if m.topic != "test/sync" {
			out = append(out, m)
		}
	}
	return out
}

// snapshot returns the broker's retained messages, as a fresh subscriber
// sees them.
func snapshot(t *testing.T, url string) map[string]string {
	t.Helper()
	w := watch(t, url, "#")
	out := make(map[string]string)
	for _, m := range w.sync(t) {
		if m.retained {
			out[m.topic] = m.payload
		}
	}
	return out
}

func has(msgs []msg, topic, payload string) bool {
	for _, m := range msgs {
		if m.topic == topic && m.payload == payload {
			return true
		}
	}
	return false
}

func count(msgs []msg, topic string) int {
	n := 0
	for _, m := range msgs {
		if m.topic == topic {
			n++
		}
	}
	return n
}

func last(msgs []msg, topic string) (string, bool) {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].topic == topic {
			return msgs[i].payload, true
		}
	}
	return "", false
}

func dump(msgs []msg) string {
	var b strings.Builder
	for _, m := range msgs {
		p := m.payload
		if len(p) > 80 {
			p = p[:80] + "…"
		}
		fmt.Fprintf(&b, "  %s retained=%v %q\n", m.topic, m.retained, p)
	}
	return b.String()
}

// statusLog is a bridge.StatusReporter that records what it is told.
type statusLog struct {
	mu      sync.Mutex
	entries []string
	seen    int
	change  chan struct{}
}

func newStatusLog() *statusLog { return &statusLog{change: make(chan struct{})} }

func (s *statusLog) SetStatus(component string, ok bool, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, fmt.Sprintf("%s ok=%v %s", component, ok, detail))
	close(s.change)
	s.change = make(chan struct{})
}

// waitFor waits for a status entry containing want, reported after the
// previous waitFor's match.
func (s *statusLog) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		entries, ch := s.entries, s.change
		for i, e := range entries[s.seen:] {
			if strings.Contains(e, want) {
				s.seen += i + 1
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("status %q never reported; got %q", want, entries)
		}
	}
}

// running is a sink whose Run goroutine the test controls.
type running struct {
	*discovery.Sink
	cancel context.CancelFunc
	done   chan error
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

func options(url string, users ...config.User) discovery.Options {
	return discovery.Options{
		Config:         config.MQTT{URL: url, ClientID: "presence-bridge-test", DiscoveryPrefix: "homeassistant", BaseTopic: "presence-bridge"},
		Users:          users,
		Logger:         slog.New(slog.DiscardHandler),
		Version:        "test",
		RepublishDelay: func() time.Duration { return 0 },
	}
}

func start(t *testing.T, opts discovery.Options) *running {
	t.Helper()
	s, err := discovery.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Sink: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop(t) })
	return r
}

func (r *running) ready(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
}

func (r *running) apply(t *testing.T, states ...bridge.State) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := r.Apply(ctx, states); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func state(u config.User, a presence.Availability, act presence.Activity, version uint64) bridge.State {
	return bridge.State{
		UserID: u.ID, Availability: a, Activity: act, Online: true, Version: version,
		ObservedAt: time.Date(2026, 11, 26, 20, 0, int(version), 0, time.UTC), Source: "service_bus",
	}
}

// modeControl is a fake Hue mode.
type modeControl struct {
	mu    sync.Mutex
	mode  string
	calls chan string
}

func (m *modeControl) Mode() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mode
}

func (m *modeControl) SetMode(mode string) error {
	defer func() { m.calls <- mode }()
	switch mode {
	case config.HueModeAuto, config.HueModeAlways, config.HueModeOff:
		m.mu.Lock()
		m.mode = mode
		m.mu.Unlock()
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// proxy forwards TCP connections to the broker and can cut them all, which
// the broker sees as a client vanishing (so it publishes the last will).
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
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
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go pipe(in, out)
			go pipe(out, in)
		}
	}()
	return p
}

func pipe(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *proxy) url() string { return "tcp://" + p.ln.Addr().String() }

// cut closes every proxied connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// selfSigned returns a CA certificate and a server certificate and key for
// 127.0.0.1 signed by it, all PEM.
func selfSigned(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
