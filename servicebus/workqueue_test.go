package servicebus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/servicebus"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// TestWorkQueueSessions: every message arrives once, with its id, in its
// session.
func TestWorkQueueSessions(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	b := sbtest.Start(t, sbtest.Options{SessionQueues: []string{"presence-work"}})
	q, err := servicebus.NewWorkQueue(servicebus.WorkQueueOptions{ConnectionString: b.ConnectionString(), Queue: "presence-work", Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(context.Background())
	var msgs []servicebus.QueuedMessage
	for i := range 20 {
		tenant := fmt.Sprintf("tenant-%d", i%3)
		msgs = append(msgs, servicebus.QueuedMessage{MessageID: fmt.Sprintf("%s:1:%d", tenant, i), SessionID: tenant, Body: fmt.Appendf(nil, `{"i":%d}`, i)})
	}
	if err := q.Enqueue(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 3 {
		r, err := b.Client().AcceptNextSessionForQueue(ctx, "presence-work", nil)
		if err != nil {
			t.Fatal(err)
		}
		for {
			short, stop := context.WithTimeout(ctx, time.Second)
			got, _ := r.ReceiveMessages(short, 10, nil)
			stop()
			if len(got) == 0 {
				break
			}
			for _, m := range got {
				if *m.SessionID != r.SessionID() || m.ContentType == nil || *m.ContentType != "application/json" {
					t.Errorf("message %s: session %v on %s, content type %v", m.MessageID, m.SessionID, r.SessionID(), m.ContentType)
				}
				if seen[m.MessageID] {
					t.Errorf("%s twice", m.MessageID)
				}
				seen[m.MessageID] = true
				if err := r.CompleteMessage(ctx, m, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		_ = r.Close(ctx)
	}
	if len(seen) != 20 {
		t.Errorf("%d of 20 messages received", len(seen))
	}
}
