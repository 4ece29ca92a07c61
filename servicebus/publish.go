package servicebus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
)

// Message is one presence message to publish.
type Message struct {
	// ID is the message id; Service Bus duplicate detection drops a second
	// message with the same id, so a retried send reuses it.
	ID   string
	Body []byte
	// UserID, Availability and Activity become application properties, so
	// that subscriptions can filter with SQL rules.
	UserID, Availability, Activity string
}

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	// ConnectionStrings are the namespaces' connection strings (Send or
	// Manage rights); Publish names a namespace by its host.
	ConnectionStrings []string
	// IdleAfter closes a topic's sender that has not sent for this long;
	// default 2 minutes.
	IdleAfter time.Duration
	// ClientOptions tune the SDK clients; default ClientOptions().
	ClientOptions *azservicebus.ClientOptions
	Logger        *slog.Logger
}

// Publisher sends presence messages to per-person topics: one SDK client per
// namespace and one sender per topic, cached while it is in use and closed
// once idle (a poller of 1,000 people would otherwise hold 1,000 links). It
// is safe for concurrent use.
type Publisher struct {
	idle time.Duration
	log  *slog.Logger

	mu        sync.Mutex
	clients   map[string]*azservicebus.Client // by lower-case host
	senders   map[string]*sender              // by host + "/" + lower-case topic
	lastSweep time.Time
	closed    bool
}

type sender struct {
	s *azservicebus.Sender
	// mu serialises sends on one topic, so that a person's messages go out
	// in the order they were handed over.
	mu       sync.Mutex
	lastUsed time.Time
	busy     int
}

// ErrUnknownNamespace: Publish named a host no connection string is for.
var ErrUnknownNamespace = errors.New("servicebus: no connection string for that namespace")

// NewPublisher makes a Publisher; nothing connects until the first Publish.
func NewPublisher(o PublisherOptions) (*Publisher, error) {
	p := &Publisher{
		idle:    o.IdleAfter,
		log:     o.Logger,
		clients: make(map[string]*azservicebus.Client),
		senders: make(map[string]*sender),
	}
	if p.idle <= 0 {
		p.idle = 2 * time.Minute
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	opts := o.ClientOptions
	if opts == nil {
		opts = ClientOptions()
	}
	for i, s := range o.ConnectionStrings {
		cs, err := ParseConnectionString(s)
		if err != nil {
			return nil, fmt.Errorf("servicebus: namespace %d: %w", i, err)
		}
		c, err := azservicebus.NewClientFromConnectionString(s, opts)
		if err != nil {
			return nil, fmt.Errorf("servicebus: namespace %s: %w", cs.Host, err)
		}
		p.clients[strings.ToLower(cs.Host)] = c
	}
	return p, nil
}

// Publish sends m to topic in the namespace at host and returns once Service
// Bus has accepted it. Sends to one topic are serialised.
func (p *Publisher) Publish(ctx context.Context, host, topic string, m Message) error {
	s, key, err := p.sender(host, topic)
	if err != nil {
		return err
	}
	defer p.done(key, s)
	s.mu.Lock()
	defer s.mu.Unlock()
	ct := "application/json"
	msg := &azservicebus.Message{
		MessageID:   &m.ID,
		ContentType: &ct,
		Body:        m.Body,
		ApplicationProperties: map[string]any{
			"userId": m.UserID, "availability": m.Availability, "activity": m.Activity,
		},
	}
	if err := s.s.SendMessage(ctx, msg, nil); err != nil {
		p.drop(key, s)
		return fmt.Errorf("servicebus: send to %s: %w", topic, err)
	}
	return nil
}

func (p *Publisher) sender(host, topic string) (*sender, string, error) {
	hostKey := strings.ToLower(host)
	key := hostKey + "/" + strings.ToLower(topic)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, "", errors.New("servicebus: publisher closed")
	}
	if now.Sub(p.lastSweep) > p.idle/4 {
		p.lastSweep = now
		p.sweepLocked(now)
	}
	if s := p.senders[key]; s != nil {
		s.busy++
		return s, key, nil
	}
	c := p.clients[hostKey]
	if c == nil {
		return nil, "", fmt.Errorf("%w: %s", ErrUnknownNamespace, host)
	}
	snd, err := c.NewSender(topic, nil)
	if err != nil {
		return nil, "", fmt.Errorf("servicebus: sender for %s: %w", topic, err)
	}
	s := &sender{s: snd, busy: 1}
	p.senders[key] = s
	return s, key, nil
}

func (p *Publisher) done(key string, s *sender) {
	p.mu.Lock()
	s.busy--
	s.lastUsed = time.Now()
	p.mu.Unlock()
}

// drop forgets a sender whose send failed, so that the next send builds a
// fresh link.
func (p *Publisher) drop(key string, s *sender) {
	p.mu.Lock()
	if p.senders[key] == s {
		delete(p.senders, key)
	}
	p.mu.Unlock()
	go closeSender(s.s)
}

// sweepLocked closes senders idle for longer than IdleAfter.
func (p *Publisher) sweepLocked(now time.Time) {
	for key, s := range p.senders {
		if s.busy == 0 && now.Sub(s.lastUsed) > p.idle {
			delete(p.senders, key)
			go closeSender(s.s)
		}
	}
}

// CloseIdle closes the senders idle for longer than IdleAfter; serve calls
// it after each cycle, so that quiet topics do not keep links open until the
// next publish.
func (p *Publisher) CloseIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked(time.Now())
}

// Senders counts the cached senders (tests, health).
func (p *Publisher) Senders() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.senders)
}

func closeSender(s *azservicebus.Sender) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Close(ctx)
}

// Close closes every sender and client.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	senders, clients := p.senders, p.clients
	p.senders, p.clients = map[string]*sender{}, map[string]*azservicebus.Client{}
	p.mu.Unlock()
	var errs []error
	for _, s := range senders {
		if err := s.s.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range clients {
		if err := c.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
