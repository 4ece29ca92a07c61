package sbsource

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
)

// memEntity is an in-memory Service Bus entity with peek-lock semantics, so
// that the source's receive, settle and renew loop runs under
// `go test -short` and testing/synctest. What it models: messages locked
// for lockDuration on receive and available again when the lock expires,
// complete / abandon / dead-letter / renew by the delivery that holds the
// lock, delivery counts, peek from a sequence number (counted, as "peek"),
// and settlements that
// take settleDelay (a slow broker). The integration tests against the AMQP
// stand-in stay the reference for the wire.
type memEntity struct {
	mu           sync.Mutex
	lockDuration time.Duration
	settleDelay  time.Duration
	nextSeq      int64
	msgs         []*memMsg
	dead         []*memMsg
	counts       map[string]int // settlements by operation
	wake         chan struct{}
}

type memMsg struct {
	seq         int64
	body        []byte
	enqueued    time.Time
	delivery    *azservicebus.ReceivedMessage // the delivery holding the lock; nil when unlocked
	lockedUntil time.Time
	deliveries  uint32
	reason      string
}

func newMemEntity(lock time.Duration) *memEntity {
	return &memEntity{lockDuration: lock, counts: map[string]int{}, wake: make(chan struct{})}
}

func (e *memEntity) send(bodies ...[]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range bodies {
		e.nextSeq++
		e.msgs = append(e.msgs, &memMsg{seq: e.nextSeq, body: b, enqueued: time.Now()})
	}
	close(e.wake)
	e.wake = make(chan struct{})
}

func (e *memEntity) count(op string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[op]
}

func (e *memEntity) active() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.msgs)
}

func (e *memEntity) deadLettered() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, m := range e.dead {
		out = append(out, m.reason)
	}
	return out
}

// receiver opens a receiver on the entity (an openReceiver for Options).
func (e *memEntity) receiver(string) (receiver, error) { return &memReceiver{e: e}, nil }

type memReceiver struct {
	e      *memEntity
	mu     sync.Mutex
	closed bool
}

var _ receiver = (*memReceiver)(nil)

var errClosed = errors.New("memqueue: receiver closed")

func (r *memReceiver) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *memReceiver) ReceiveMessages(ctx context.Context, n int, _ *azservicebus.ReceiveMessagesOptions) ([]*azservicebus.ReceivedMessage, error) {
	e := r.e
	for {
		if r.isClosed() {
			return nil, errClosed
		}
		e.mu.Lock()
		now := time.Now()
		var out []*azservicebus.ReceivedMessage
		var nextExpiry time.Time
		for _, m := range e.msgs {
			if len(out) == n {
				break
			}
			if m.delivery != nil && now.Before(m.lockedUntil) {
				if nextExpiry.IsZero() || m.lockedUntil.Before(nextExpiry) {
					nextExpiry = m.lockedUntil
				}
				continue
			}
			m.deliveries++
			m.lockedUntil = now.Add(e.lockDuration)
			seq, enq, until := m.seq, m.enqueued, m.lockedUntil
			m.delivery = &azservicebus.ReceivedMessage{
				Body: m.body, SequenceNumber: &seq, EnqueuedTime: &enq, LockedUntil: &until,
				DeliveryCount: m.deliveries,
			}
			out = append(out, m.delivery)
		}
		wake := e.wake
		e.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		var expiry <-chan time.Time
		if !nextExpiry.IsZero() {
			t := time.NewTimer(time.Until(nextExpiry))
			defer t.Stop()
			expiry = t.C
		}
		select {
		case <-ctx.Done():
			return nil, nil // the SDK returns what it has, no error, on cancellation
		case <-wake:
		case <-expiry:
		}
	}
}

func (r *memReceiver) PeekMessages(_ context.Context, n int, o *azservicebus.PeekMessagesOptions) ([]*azservicebus.ReceivedMessage, error) {
	if r.isClosed() {
		return nil, errClosed
	}
	e := r.e
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts["peek"]++
	var from int64
	if o != nil && o.FromSequenceNumber != nil {
		from = *o.FromSequenceNumber
	}
	var out []*azservicebus.ReceivedMessage
	for _, m := range e.msgs {
		if m.seq >= from && len(out) < n {
			seq := m.seq
			out = append(out, &azservicebus.ReceivedMessage{Body: m.body, SequenceNumber: &seq})
		}
	}
	return out, nil
}

// settle waits the settlement delay, then applies fn to the message that
// delivery holds the lock of.
func (r *memReceiver) settle(ctx context.Context, op string, d *azservicebus.ReceivedMessage, fn func(i int, m *memMsg)) error {
	e := r.e
	if e.settleDelay > 0 {
		t := time.NewTimer(e.settleDelay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	i := slices.IndexFunc(e.msgs, func(m *memMsg) bool { return m.delivery == d })
	if i < 0 || !time.Now().Before(e.msgs[i].lockedUntil) {
		return errors.New("memqueue: the lock was lost")
	}
	fn(i, e.msgs[i])
	e.counts[op]++
	close(e.wake)
	e.wake = make(chan struct{})
	return nil
}

func (r *memReceiver) CompleteMessage(ctx context.Context, d *azservicebus.ReceivedMessage, _ *azservicebus.CompleteMessageOptions) error {
	return r.settle(ctx, "complete", d, func(i int, _ *memMsg) { r.e.msgs = slices.Delete(r.e.msgs, i, i+1) })
}

func (r *memReceiver) AbandonMessage(ctx context.Context, d *azservicebus.ReceivedMessage, _ *azservicebus.AbandonMessageOptions) error {
	return r.settle(ctx, "abandon", d, func(_ int, m *memMsg) { m.delivery = nil })
}

func (r *memReceiver) DeadLetterMessage(ctx context.Context, d *azservicebus.ReceivedMessage, o *azservicebus.DeadLetterOptions) error {
	return r.settle(ctx, "dead-letter", d, func(i int, m *memMsg) {
		if o != nil && o.Reason != nil {
			m.reason = *o.Reason
		}
		r.e.dead = append(r.e.dead, m)
		r.e.msgs = slices.Delete(r.e.msgs, i, i+1)
	})
}

func (r *memReceiver) RenewMessageLock(ctx context.Context, d *azservicebus.ReceivedMessage, _ *azservicebus.RenewMessageLockOptions) error {
	return r.settle(ctx, "renew", d, func(_ int, m *memMsg) {
		m.lockedUntil = time.Now().Add(r.e.lockDuration)
		until := m.lockedUntil
		d.LockedUntil = &until
	})
}

func (r *memReceiver) Close(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}
