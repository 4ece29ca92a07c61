package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Broker is the demo's embedded MQTT broker: NATS server with its MQTT
// listener, which needs JetStream (kept in a temporary folder, removed at
// Close). It replaces mochi-mqtt, whose v2.7.9 has an unfixed data race
// between storing a retained message and a subscribe's scan (upstream
// issue #200): `go test -race` tripped on it one run in two. NATS server is
// well kept and race-free, but about 16 MB of binary: the reason the demo is
// a program of its own, not a command of the add-on's binary.
type Broker struct {
	srv  *server.Server
	dir  string
	addr string
}

// StartBroker starts an open broker (no authentication: loopback use) on
// addr; port 0 picks a free port.
func StartBroker(addr string) (*Broker, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("demo: broker address %q: %w", addr, err)
	}
	// Listen first: the server reports a busy port only in its log, and a
	// person who runs the demo twice deserves a plain error.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo: the MQTT broker cannot listen on %s (another broker running? try -listen 127.0.0.1:0): %w", addr, err)
	}
	p, _ := strconv.Atoi(port)
	if p == 0 {
		p = ln.Addr().(*net.TCPAddr).Port
	}
	ln.Close()
	dir, err := os.MkdirTemp("", "presence-demo-broker-")
	if err != nil {
		return nil, fmt.Errorf("demo: broker: %w", err)
	}
	opts := &server.Options{
		ServerName: "presence-demo",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT, // the NATS port itself is not used
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	}
	opts.MQTT.Host = host
	opts.MQTT.Port = p
	srv, err := server.NewServer(opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("demo: broker: %w", err)
	}
	b := &Broker{srv: srv, dir: dir, addr: net.JoinHostPort(host, strconv.Itoa(p))}
	go srv.Start()
	if err := b.waitListening(10 * time.Second); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// waitListening waits until the MQTT listener accepts connections.
func (b *Broker) waitListening(d time.Duration) error {
	if !b.srv.ReadyForConnections(d) {
		return errors.New("demo: broker did not start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var dialer net.Dialer
	for {
		c, err := dialer.DialContext(ctx, "tcp", b.addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: MQTT listener on %s: %w", b.addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Addr is the host:port MQTT clients connect to.
func (b *Broker) Addr() string { return b.addr }

// URL is the broker's tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.addr }

// Close stops the broker and removes its storage.
func (b *Broker) Close() {
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
	os.RemoveAll(b.dir)
}
