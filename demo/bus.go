package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/app"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/sbsource"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// busHost names the demo's in-process namespace.
const busHost = "demo.servicebus.local"

// bus is the whole-system demo's in-process stand-in for Service Bus: the
// real poller provisions topics and publishes to it (poller.TopicManager
// and poller.Publisher), and the real bridge reads from it (app.Source),
// with the rules that matter to what a person sees: duplicate detection by
// message id, the body checked against its topic's user, and a message
// given back (and delivered again) when the bridge could not make it
// durable.
type bus struct {
	p *printer

	mu     sync.Mutex
	topics map[string]bool
	seen   map[string]bool // message ids, for duplicate detection
	queue  []busMessage
	wake   chan struct{}
}

type busMessage struct {
	topic string
	m     servicebus.Message
	at    time.Time
}

var (
	_ poller.TopicManager = (*bus)(nil)
	_ poller.Publisher    = (*bus)(nil)
	_ app.Source          = (*bus)(nil)
)

func newBus(p *printer) *bus {
	return &bus{p: p, topics: map[string]bool{}, seen: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Host implements poller.TopicManager.
func (b *bus) Host() string { return busHost }

// CountTopics implements poller.TopicManager.
func (b *bus) CountTopics(context.Context) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.topics), nil
}

// Provision implements poller.TopicManager: the topic exists from now on,
// and the household gets a (simulated) topic-scoped Listen key.
func (b *bus) Provision(_ context.Context, topic string, _ []string, listenKey bool) (servicebus.Provisioned, error) {
	b.mu.Lock()
	created := !b.topics[topic]
	b.topics[topic] = true
	b.mu.Unlock()
	out := servicebus.Provisioned{CreatedTopic: created}
	if listenKey {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		out.ListenConnectionString = "Endpoint=sb://" + busHost + "/;SharedAccessKeyName=listen;SharedAccessKey=" +
			base64.StdEncoding.EncodeToString(key) + ";EntityPath=" + topic
	}
	if created {
		b.p.linef("Bus        topic %s created, with a Listen-only key for the household", topic)
	}
	return out, nil
}

// Publish implements poller.Publisher.
func (b *bus) Publish(_ context.Context, namespace, topic string, m servicebus.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if namespace != busHost || !b.topics[topic] {
		return errors.New("demo bus: no such topic " + topic)
	}
	if m.ID != "" && b.seen[m.ID] {
		return nil // duplicate detection drops a retried send
	}
	b.seen[m.ID] = true
	b.queue = append(b.queue, busMessage{topic: topic, m: m, at: time.Now()})
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// Name implements app.Source: the bridge reads the bus as its Service Bus.
func (b *bus) Name() string { return sbsource.SourceName }

// Run implements app.Source: it hands each message to the core and gives
// it back when the core could not make it durable.
func (b *bus) Run(ctx context.Context, core bridge.Submitter) error {
	for {
		if err := core.WaitReady(ctx); err != nil {
			return nil
		}
		b.mu.Lock()
		msgs := b.queue
		b.queue = nil
		b.mu.Unlock()
		if len(msgs) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-b.wake:
			}
			continue
		}
		for _, bm := range msgs {
			u, err := presence.Decode(bm.m.Body, presence.Meta{EnqueuedTime: bm.at})
			if err == nil {
				err = presence.CheckUser(u, presence.CanonicalUserID(bm.topic))
			}
			if err != nil {
				b.p.linef("Bus        message on %s dead-lettered: %s", bm.topic, presence.ReasonOf(err))
				continue
			}
			settled := make(chan bridge.Outcome, 1)
			core.Submit(u, sbsource.SourceName, func(o bridge.Outcome) { settled <- o })
			select {
			case o := <-settled:
				if !o.Settle() {
					b.requeue(bm)
				}
			case <-ctx.Done():
				return nil
			}
		}
	}
}

func (b *bus) requeue(bm busMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queue = append([]busMessage{bm}, b.queue...)
}
