package sbtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/go-amqp"
	"github.com/google/go-cmp/cmp"

	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const sub = "t1/Subscriptions/home"

func receiver(t *testing.T, c *azservicebus.Client, sq azservicebus.SubQueue) *azservicebus.Receiver {
	t.Helper()
	r, err := c.NewReceiverForSubscription("t1", "home", &azservicebus.ReceiverOptions{SubQueue: sq})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

func receiveOne(t *testing.T, ctx context.Context, r *azservicebus.Receiver) *azservicebus.ReceivedMessage {
	t.Helper()
	msgs, err := r.ReceiveMessages(ctx, 1, nil)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("received %d messages, want 1", len(msgs))
	}
	return msgs[0]
}

func TestFanOutAndSettlement(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := sbtest.Start(t, sbtest.Options{Subscriptions: []string{"t1/home", "t1/office"}, MaxDeliveryCount: 3})
	b.Send(ctx, "t1", []byte(`one`), []byte(`two`))

	// The other subscription got its own copies.
	if got := b.Count(ctx, "t1/Subscriptions/office", 0); got != 2 {
		t.Errorf("office subscription holds %d messages, want 2", got)
	}

	r := receiver(t, b.Client(), 0)
	m := receiveOne(t, ctx, r)
	if string(m.Body) != "one" || m.DeliveryCount != 1 || m.LockedUntil == nil || m.EnqueuedTime == nil || m.SequenceNumber == nil {
		t.Fatalf("first delivery: body %q count %d lockedUntil %v enqueued %v seq %v", m.Body, m.DeliveryCount, m.LockedUntil, m.EnqueuedTime, m.SequenceNumber)
	}
	before := *m.LockedUntil
	if err := r.RenewMessageLock(ctx, m, nil); err != nil {
		t.Fatalf("renew lock: %v", err)
	}
	if !m.LockedUntil.After(before) && !m.LockedUntil.Equal(before) {
		t.Errorf("renewed lock until %v, before %v", m.LockedUntil, before)
	}
	if err := r.AbandonMessage(ctx, m, nil); err != nil {
		t.Fatalf("abandon: %v", err)
	}
	m = receiveOne(t, ctx, r)
	if string(m.Body) != "one" || m.DeliveryCount != 2 {
		t.Fatalf("after abandon: body %q count %d, want one/2", m.Body, m.DeliveryCount)
	}
	if err := r.DeadLetterMessage(ctx, m, &azservicebus.DeadLetterOptions{Reason: ptr("InvalidJSON"), ErrorDescription: ptr("bad")}); err != nil {
		t.Fatalf("dead-letter: %v", err)
	}
	m = receiveOne(t, ctx, r)
	if err := r.CompleteMessage(ctx, m, nil); err != nil {
		t.Fatalf("complete: %v", err)
	}

	dl := b.DeadLetters(ctx, sub, 1)
	got := []string{string(dl[0].Body), deref(dl[0].DeadLetterReason), deref(dl[0].DeadLetterErrorDescription)}
	if diff := cmp.Diff([]string{"one", "InvalidJSON", "bad"}, got); diff != "" {
		t.Errorf("dead letter (-want +got):\n%s", diff)
	}
	if got := b.Count(ctx, sub, 0); got != 0 {
		t.Errorf("subscription holds %d messages after settling all, want 0", got)
	}
}

func TestLockExpiryAndMaxDeliveryCount(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := sbtest.Start(t, sbtest.Options{Subscriptions: []string{"t1/home"}, LockDuration: time.Second, MaxDeliveryCount: 2})
	b.Send(ctx, "t1", []byte(`x`))
	r := receiver(t, b.Client(), 0)
	first := receiveOne(t, ctx, r) // the lock runs out: delivered again
	m := receiveOne(t, ctx, r)
	if m.DeliveryCount != 2 {
		t.Errorf("delivery count after lock expiry %d, want 2", m.DeliveryCount)
	}
	err := r.CompleteMessage(ctx, first, nil)
	var sbErr *azservicebus.Error
	if !errors.As(err, &sbErr) || sbErr.Code != azservicebus.CodeLockLost {
		t.Errorf("complete with an expired lock: %v, want lock lost", err)
	}
	if err := r.RenewMessageLock(ctx, m, nil); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if err := r.AbandonMessage(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	dl := b.DeadLetters(ctx, sub, 1)
	if deref(dl[0].DeadLetterReason) != "MaxDeliveryCountExceeded" {
		t.Errorf("reason %q, want MaxDeliveryCountExceeded", deref(dl[0].DeadLetterReason))
	}
}

func TestUnknownEntityAndBadKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := sbtest.Start(t, sbtest.Options{Subscriptions: []string{"t1/home"}, Keys: map[string]string{"k": "secret"}})

	r, err := b.Client().NewReceiverForSubscription("t1", "nope", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.ReceiveMessages(ctx, 1, nil)
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Condition != amqp.ErrCondNotFound {
		t.Errorf("receive from a missing subscription: %v, want amqp:not-found", err)
	}

	bad, err := sbtest.NewClient(b.ConnectionStringWithKey("k", "wrong"))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close(ctx)
	r, err = bad.NewReceiverForSubscription("t1", "home", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.ReceiveMessages(ctx, 1, nil)
	var sbErr *azservicebus.Error
	if !errors.As(err, &sbErr) || sbErr.Code != azservicebus.CodeUnauthorizedAccess {
		t.Errorf("receive with a wrong key: %v, want unauthorized", err)
	}
}

func TestKillRestartKeepsMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	b := sbtest.Start(t, sbtest.Options{Subscriptions: []string{"t1/home"}})
	b.Send(ctx, "t1", []byte(`a`), []byte(`b`), []byte(`c`))
	r := receiver(t, b.Client(), 0)
	m := receiveOne(t, ctx, r)
	if err := r.CompleteMessage(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	port := b.Port()
	b.Restart()
	if b.Port() != port {
		t.Fatalf("port %d after restart, want %d", b.Port(), port)
	}
	var bodies []string
	for len(bodies) < 2 {
		msgs, err := r.ReceiveMessages(ctx, 2, nil)
		if err != nil {
			t.Fatalf("receive after restart: %v", err)
		}
		for _, m := range msgs {
			bodies = append(bodies, string(m.Body))
			if err := r.CompleteMessage(ctx, m, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if diff := cmp.Diff([]string{"b", "c"}, bodies); diff != "" {
		t.Errorf("after restart (-want +got):\n%s", diff)
	}
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
