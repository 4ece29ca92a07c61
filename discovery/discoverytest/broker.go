// Package discoverytest is an in-memory MQTT broker behind the discovery
// sink's Dialer, so that the sink's connection lifecycle, its durable path
// (acknowledge only on PUBACK) and its reconnect back-off run under
// `go test -short` and testing/synctest, without mosquitto. It behaves like
// an MQTT 3.1.1 broker in what the sink relies on: retained messages
// delivered on subscribe (flagged retained) before later messages, live
// messages delivered unflagged, per-connection order, last wills on a lost
// connection, and a second connection with the same client id taking over
// the first. Tests against real mosquitto stay the reference.
package discoverytest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/discovery"
)

// ErrRefused is what Dial answers while the broker refuses credentials.
var ErrRefused = errors.New("discoverytest: not authorised")

// Message is one publication the broker accepted.
type Message struct {
	ClientID string
	Topic    string
	Payload  string
	Retained bool
}

// Broker is an in-memory MQTT broker. The zero value is not usable: call
// New.
type Broker struct {
	mu       sync.Mutex
	retained map[string]string
	conns    []*Conn
	log      []Message
	dials    int
	limit    int // dials beyond this fail; 0: no limit
	refuse   bool
	down     bool
	holdAcks bool
	held     []*token
	block    chan struct{} // non-nil: Publish blocks until it is closed
}

// New returns an empty broker that accepts everyone.
func New() *Broker {
	return &Broker{retained: map[string]string{}}
}

// Dial is a discovery.Dialer.
func (b *Broker) Dial(_ context.Context, o discovery.DialOptions) (discovery.Conn, error) {
	b.mu.Lock()
	b.dials++
	if b.down || (b.limit > 0 && b.dials > b.limit) {
		b.mu.Unlock()
		return nil, errors.New("discoverytest: connection refused")
	}
	if b.refuse {
		b.mu.Unlock()
		return nil, errors.Join(discovery.ErrRefused, ErrRefused)
	}
	var takenOver []*Conn
	for _, c := range b.conns {
		if c.opts.ClientID == o.ClientID {
			takenOver = append(takenOver, c)
		}
	}
	c := &Conn{b: b, opts: o, lost: make(chan struct{}), inbox: make(chan discovery.Message, 4096)}
	b.conns = append(b.conns, c)
	b.mu.Unlock()
	for _, old := range takenOver {
		old.drop(errors.New("discoverytest: session taken over"), true)
	}
	go c.deliver()
	return c, nil
}

// Dials counts connection attempts, failed ones included.
func (b *Broker) Dials() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dials
}

// SetDialLimit makes every dial after the n-th fail, so that a client that
// reconnects in a tight loop is seen counting instead of spinning forever.
func (b *Broker) SetDialLimit(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = n
}

// SetRefuse makes the broker refuse (or accept again) the credentials.
func (b *Broker) SetRefuse(refuse bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refuse = refuse
}

// SetDown makes new connections fail (a broker that is not listening).
func (b *Broker) SetDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = down
}

// HoldAcks withholds PUBACKs until ReleaseAcks (a broker that stalls).
func (b *Broker) HoldAcks() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holdAcks = true
}

// BlockPublishes makes Publish itself block (as paho's does, up to its
// write timeout, when its outgoing queue is full) until the returned
// function is called.
func (b *Broker) BlockPublishes() (release func()) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.block = ch
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.block = nil
			b.mu.Unlock()
			close(ch)
		})
	}
}

// ReleaseAcks acknowledges every held publication and stops holding.
func (b *Broker) ReleaseAcks() {
	b.mu.Lock()
	held := b.held
	b.held, b.holdAcks = nil, false
	b.mu.Unlock()
	for _, t := range held {
		t.complete(nil)
	}
}

// KickAll drops every connection as a network failure would: their wills
// are published.
func (b *Broker) KickAll() {
	b.mu.Lock()
	conns := slices.Clone(b.conns)
	b.mu.Unlock()
	for _, c := range conns {
		c.drop(errors.New("discoverytest: connection reset"), true)
	}
}

// Connected counts the live connections.
func (b *Broker) Connected() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// Retained returns the retained payload of topic.
func (b *Broker) Retained(topic string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.retained[topic]
	return p, ok
}

// Messages returns every publication accepted so far, wills included.
func (b *Broker) Messages() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.log)
}

// Publish publishes as another client would (Home Assistant, a user).
func (b *Broker) Publish(topic, payload string, retained bool) {
	b.publish(Message{ClientID: "test", Topic: topic, Payload: payload, Retained: retained})
}

func (b *Broker) publish(m Message) {
	b.mu.Lock()
	b.log = append(b.log, m)
	if m.Retained {
		if m.Payload == "" {
			delete(b.retained, m.Topic)
		} else {
			b.retained[m.Topic] = m.Payload
		}
	}
	// Delivered under the broker's lock, so that every subscriber sees
	// publications in one order, and a subscribe's retained messages come
	// before any later publication.
	for _, c := range b.conns {
		if c.subscribed(m.Topic) {
			c.enqueue(discovery.Message{Topic: m.Topic, Payload: []byte(m.Payload)})
		}
	}
	b.mu.Unlock()
}

func (b *Broker) remove(c *Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := slices.Index(b.conns, c)
	if i < 0 {
		return false
	}
	b.conns = slices.Delete(b.conns, i, i+1)
	return true
}

// Conn is one client connection; it implements discovery.Conn.
type Conn struct {
	b    *Broker
	opts discovery.DialOptions

	mu      sync.Mutex
	filters []string
	handle  func(discovery.Message)
	inbox   chan discovery.Message
	closed  bool
	err     error

	lostOnce sync.Once
	lost     chan struct{}
}

var _ discovery.Conn = (*Conn)(nil)

// Publish implements discovery.Conn.
func (c *Conn) Publish(topic string, retained bool, payload []byte) discovery.Token {
	t := newToken()
	c.b.mu.Lock()
	block := c.b.block
	c.b.mu.Unlock()
	if block != nil {
		<-block
	}
	select {
	case <-c.lost:
		t.complete(errors.New("discoverytest: not connected"))
		return t
	default:
	}
	c.b.publish(Message{ClientID: c.opts.ClientID, Topic: topic, Payload: string(payload), Retained: retained})
	c.b.mu.Lock()
	hold := c.b.holdAcks
	if hold {
		c.b.held = append(c.b.held, t)
	}
	c.b.mu.Unlock()
	if !hold {
		t.complete(nil)
	}
	return t
}

// Subscribe implements discovery.Conn: the retained messages that match
// arrive first, flagged retained.
func (c *Conn) Subscribe(filters []string, handle func(discovery.Message)) discovery.Token {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.mu.Lock()
	c.filters = append(c.filters, filters...)
	c.handle = handle
	c.mu.Unlock()
	var matches []discovery.Message
	topics := make([]string, 0, len(c.b.retained))
	for topic := range c.b.retained {
		topics = append(topics, topic)
	}
	slices.Sort(topics)
	for _, topic := range topics {
		for _, f := range filters {
			if Match(f, topic) {
				matches = append(matches, discovery.Message{Topic: topic, Payload: []byte(c.b.retained[topic]), Retained: true})
				break
			}
		}
	}
	for _, m := range matches {
		c.enqueue(m)
	}
	t := newToken()
	t.complete(nil)
	return t
}

// Unsubscribe implements discovery.Conn.
func (c *Conn) Unsubscribe(filters ...string) discovery.Token {
	c.mu.Lock()
	c.filters = slices.DeleteFunc(c.filters, func(f string) bool { return slices.Contains(filters, f) })
	c.mu.Unlock()
	t := newToken()
	t.complete(nil)
	return t
}

// Lost implements discovery.Conn.
func (c *Conn) Lost() <-chan struct{} { return c.lost }

// Err implements discovery.Conn.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close implements discovery.Conn: a clean disconnect, no will.
func (c *Conn) Close(time.Duration) { c.drop(errors.New("disconnected"), false) }

func (c *Conn) drop(err error, will bool) {
	if !c.b.remove(c) {
		return
	}
	c.mu.Lock()
	c.err, c.closed = err, true
	close(c.inbox)
	c.mu.Unlock()
	c.lostOnce.Do(func() { close(c.lost) })
	if will && c.opts.WillTopic != "" {
		c.b.publish(Message{ClientID: c.opts.ClientID, Topic: c.opts.WillTopic, Payload: string(c.opts.WillPayload), Retained: true})
	}
}

func (c *Conn) subscribed(topic string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.filters {
		if Match(f, topic) {
			return true
		}
	}
	return false
}

func (c *Conn) enqueue(m discovery.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	select {
	case c.inbox <- m:
	default: // a client that does not read: the broker drops, like a full queue
	}
}

// deliver hands messages to the subscription handler in order, in the
// connection's own goroutine, like paho's router.
func (c *Conn) deliver() {
	for m := range c.inbox {
		c.mu.Lock()
		h := c.handle
		c.mu.Unlock()
		if h != nil {
			h(m)
		}
	}
}

// Match reports whether an MQTT topic filter (with + and #) matches topic.
func Match(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		switch {
		case f == "#":
			return true
		case i >= len(ts):
			return false
		case f != "+" && f != ts[i]:
			return false
		}
	}
	return len(fs) == len(ts)
}

type token struct {
	once sync.Once
	done chan struct{}
	err  error
}

func newToken() *token { return &token{done: make(chan struct{})} }

func (t *token) complete(err error) {
	t.once.Do(func() {
		t.err = err
		close(t.done)
	})
}

func (t *token) Done() <-chan struct{} { return t.done }

func (t *token) Error() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}
