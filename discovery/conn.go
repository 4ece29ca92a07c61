package discovery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/presence-bridge/presence-bridge/config"
)

// Conn is one MQTT connection as the sink uses it: QoS 1 throughout. The
// sink dials one per connection attempt (clean session, no automatic
// reconnect: the sink decides when to come back). DialPaho provides it over
// paho; tests provide an in-memory broker.
type Conn interface {
	// Publish sends a QoS 1 message; the token completes on PUBACK. It may
	// block (paho waits up to its write timeout when its queue is full), so
	// the sink never calls it while holding the lock SetStatus needs.
	Publish(topic string, retained bool, payload []byte) Token
	// Subscribe subscribes to filters at QoS 1. Messages are handed to
	// handle in the connection's own goroutine; handle must not block.
	Subscribe(filters []string, handle func(Message)) Token
	// Unsubscribe drops filters.
	Unsubscribe(filters ...string) Token
	// Lost is closed once the connection is gone; Err then says why.
	Lost() <-chan struct{}
	Err() error
	// Close disconnects, waiting up to quiesce for work in flight.
	Close(quiesce time.Duration)
}

// Token is the completion of one MQTT operation.
type Token interface {
	Done() <-chan struct{}
	Error() error
}

// Message is one message the broker delivered.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// DialOptions are what a connection is opened with.
type DialOptions struct {
	URL, ClientID      string
	Username, Password string
	TLS                *tls.Config
	// Will is published (QoS 1, retained) by the broker when the
	// connection is lost without a goodbye.
	WillTopic   string
	WillPayload []byte
}

// Dialer opens one connection; it returns an error wrapping ErrRefused when
// the broker refuses the credentials.
type Dialer func(ctx context.Context, o DialOptions) (Conn, error)

// Timing of a paho connection.
const (
	connectTimeout = 10 * time.Second
	keepAlive      = 30 * time.Second
	writeTimeout   = 10 * time.Second
)

// DialPaho opens a connection with paho: a fresh client with a clean
// session, no automatic reconnect.
func DialPaho(ctx context.Context, o DialOptions) (Conn, error) {
	c := &pahoConn{lost: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker(o.URL).
		SetClientID(o.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(connectTimeout).
		SetKeepAlive(keepAlive).
		SetWriteTimeout(writeTimeout).
		// Messages that match no subscription any more (our own discovery
		// configs echoed after the sweep unsubscribed, while the
		// UNSUBSCRIBE was in flight) must still be acknowledged: paho
		// keeps an unacknowledged QoS 1 message in its store for the
		// whole connection (about 1.7 MB for 1,000 users' configs), and
		// the broker counts it against the connection's in-flight window.
		SetDefaultPublishHandler(func(mqtt.Client, mqtt.Message) {}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { c.setLost(err) })
	if o.WillTopic != "" {
		opts.SetBinaryWill(o.WillTopic, o.WillPayload, 1, true)
	}
	if o.Username != "" {
		opts.SetUsername(o.Username)
	}
	if o.Password != "" {
		opts.SetPassword(o.Password)
	}
	if o.TLS != nil {
		opts.SetTLSConfig(o.TLS.Clone())
	}
	c.client = mqtt.NewClient(opts)
	tok := c.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go func() { <-tok.Done(); c.client.Disconnect(0) }()
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		if errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return nil, err
	}
	return c, nil
}

// pahoConn is a Conn over a paho client.
type pahoConn struct {
	client   mqtt.Client
	lostOnce sync.Once
	lost     chan struct{}
	mu       sync.Mutex
	err      error
}

func (c *pahoConn) setLost(err error) {
	c.lostOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.lost)
	})
}

func (c *pahoConn) Publish(topic string, retained bool, payload []byte) Token {
	return c.client.Publish(topic, 1, retained, payload)
}

func (c *pahoConn) Subscribe(filters []string, handle func(Message)) Token {
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = 1
	}
	return c.client.SubscribeMultiple(m, func(_ mqtt.Client, msg mqtt.Message) {
		handle(Message{Topic: msg.Topic(), Payload: msg.Payload(), Retained: msg.Retained()})
	})
}

func (c *pahoConn) Unsubscribe(filters ...string) Token { return c.client.Unsubscribe(filters...) }

func (c *pahoConn) Lost() <-chan struct{} { return c.lost }

func (c *pahoConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *pahoConn) Close(quiesce time.Duration) {
	c.client.Disconnect(uint(quiesce / time.Millisecond))
	c.setLost(errors.New("disconnected"))
}

// tlsConfig returns the TLS settings for ssl:// (tls://, mqtts://) and
// wss:// brokers: the system roots plus the optional ca_file.
func tlsConfig(c config.MQTT) (*tls.Config, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("discovery: mqtt url: %w", err)
	}
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "wss":
	case "tcp", "mqtt", "ws":
		return nil, nil
	default:
		return nil, fmt.Errorf("discovery: mqtt url: unsupported scheme %q", u.Scheme)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("discovery: read ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("discovery: ca_file %s: no PEM certificate", c.CAFile)
		}
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
