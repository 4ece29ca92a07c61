package servicebus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
)

// QueuedMessage is one message for a queue that requires sessions.
type QueuedMessage struct {
	// MessageID lets the queue's duplicate detection drop a message sent
	// twice (a retried timer invocation).
	MessageID string
	// SessionID groups messages: Service Bus hands a session to one
	// receiver at a time.
	SessionID string
	Body      []byte
}

// WorkQueueOptions configure a WorkQueue.
type WorkQueueOptions struct {
	// ConnectionString of the namespace that holds the queue (Send rights).
	ConnectionString string
	Queue            string
	// Concurrency bounds the sends in flight; default 32.
	Concurrency int
	// ClientOptions tune the SDK client; default ClientOptions().
	ClientOptions *azservicebus.ClientOptions
}

// WorkQueue sends a refresh cycle's work items to the work queue. It is
// safe for concurrent use.
type WorkQueue struct {
	client *azservicebus.Client
	sender *azservicebus.Sender
	n      int
}

// NewWorkQueue makes a WorkQueue; nothing connects until the first send.
func NewWorkQueue(o WorkQueueOptions) (*WorkQueue, error) {
	cs, err := ParseConnectionString(o.ConnectionString)
	if err != nil {
		return nil, fmt.Errorf("servicebus: work queue: %w", err)
	}
	opts := o.ClientOptions
	if opts == nil {
		opts = ClientOptions()
	}
	c, err := azservicebus.NewClientFromConnectionString(o.ConnectionString, opts)
	if err != nil {
		return nil, fmt.Errorf("servicebus: work queue in %s: %w", cs.Host, err)
	}
	s, err := c.NewSender(o.Queue, nil)
	if err != nil {
		_ = c.Close(context.Background())
		return nil, fmt.Errorf("servicebus: sender for %s: %w", o.Queue, err)
	}
	n := o.Concurrency
	if n <= 0 {
		n = 32
	}
	return &WorkQueue{client: c, sender: s, n: n}, nil
}

// Enqueue sends every message (content type application/json), several
// at a time, and returns once Service Bus has accepted them all, or with
// the failures. Messages of one session need no order among themselves.
func (q *WorkQueue) Enqueue(ctx context.Context, msgs []QueuedMessage) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, q.n)
	ct := "application/json"
	for _, m := range msgs {
		select {
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, context.Cause(ctx))...)
		case sem <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-sem }()
			err := q.sender.SendMessage(ctx, &azservicebus.Message{MessageID: &m.MessageID, SessionID: &m.SessionID, ContentType: &ct, Body: m.Body}, nil)
			if err != nil {
				mu.Lock()
				if len(errs) < 3 {
					errs = append(errs, fmt.Errorf("servicebus: send %s: %w", m.MessageID, err))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close closes the sender and its client.
func (q *WorkQueue) Close(ctx context.Context) error {
	return errors.Join(q.sender.Close(ctx), q.client.Close(ctx))
}
