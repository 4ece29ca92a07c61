package sbtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

// TestSessionQueue: a session receiver gets only its session's messages,
// in order, and holds the session's lock until it closes; accepting the
// next session takes one nobody holds; with nothing to accept it times out
// within the context's deadline; a receiver without a session is refused.
func TestSessionQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	b := sbtest.Start(t, sbtest.Options{SessionQueues: []string{"work"}})
	var msgs []*azservicebus.Message
	for i := range 6 {
		sid := fmt.Sprintf("tenant-%d", i%2)
		msgs = append(msgs, &azservicebus.Message{Body: fmt.Appendf(nil, "%s/%d", sid, i), SessionID: &sid, MessageID: ptr(fmt.Sprint(i))})
	}
	b.SendMessages(ctx, "work", msgs...)
	c := b.Client()

	r0, err := c.AcceptSessionForQueue(ctx, "work", "tenant-0", nil)
	if err != nil {
		t.Fatalf("accept tenant-0: %v", err)
	}
	if _, err := c.AcceptSessionForQueue(ctx, "work", "tenant-0", nil); err == nil {
		t.Error("a second receiver locked a session already held")
	}
	next, err := c.AcceptNextSessionForQueue(ctx, "work", nil)
	if err != nil {
		t.Fatalf("accept next: %v", err)
	}
	if next.SessionID() != "tenant-1" {
		t.Errorf("next session %q, want tenant-1 (tenant-0 is held)", next.SessionID())
	}
	for _, r := range []*azservicebus.SessionReceiver{r0, next} {
		var got []string
		for len(got) < 3 {
			ms, err := r.ReceiveMessages(ctx, 3-len(got), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				if m.SessionID == nil || *m.SessionID != r.SessionID() {
					t.Errorf("message of session %v on %s's receiver", m.SessionID, r.SessionID())
				}
				got = append(got, string(m.Body))
				if err := r.CompleteMessage(ctx, m, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		want := []string{r.SessionID() + "/0", r.SessionID() + "/2", r.SessionID() + "/4"}
		if r.SessionID() == "tenant-1" {
			want = []string{"tenant-1/1", "tenant-1/3", "tenant-1/5"}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("session %s: %v, want %v in order", r.SessionID(), got, want)
		}
		if err := r.RenewSessionLock(ctx, nil); err != nil {
			t.Errorf("renew session lock: %v", err)
		}
	}
	if err := r0.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A new message for tenant-0 goes to whoever accepts next, now that
	// its lock was released; with nothing left, accepting times out.
	sid := "tenant-0"
	b.SendMessages(ctx, "work", &azservicebus.Message{Body: []byte("late"), SessionID: &sid})
	again, err := c.AcceptNextSessionForQueue(ctx, "work", nil)
	if err != nil || again.SessionID() != "tenant-0" {
		t.Fatalf("accept after release: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	began := time.Now()
	// The refusal (com.microsoft:timeout) reaches the SDK as a timeout, or,
	// when it reads the refused attach before the detach, as a lost link.
	if _, err = c.AcceptNextSessionForQueue(short, "work", nil); err == nil {
		t.Error("accepting with nothing to accept gave a session")
	}
	if time.Since(began) > 10*time.Second {
		t.Errorf("accepting with nothing to accept took %v", time.Since(began))
	}
	plain, err := c.NewReceiverForQueue("work", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(ctx)
	five, cancelFive := context.WithTimeout(ctx, 5*time.Second)
	defer cancelFive()
	if got, err := plain.ReceiveMessages(five, 1, nil); err == nil {
		t.Errorf("a receiver without a session read a session queue: %d messages", len(got))
	}
}

// TestSessionCloseReleasesItsMessages: a message a session receiver was
// sent but did not settle (it arrived as the receiver gave up waiting) is
// available again as soon as the receiver closes, its delivery uncounted:
// its lock was the session's.
func TestSessionCloseReleasesItsMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := sbtest.Start(t, sbtest.Options{SessionQueues: []string{"work"}})
	sid := "tenant-0"
	b.SendMessages(ctx, "work", &azservicebus.Message{Body: []byte("item"), SessionID: &sid})
	r, err := b.Client().AcceptNextSessionForQueue(ctx, "work", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.ReceiveMessages(ctx, 1, nil); err != nil || len(got) != 1 {
		t.Fatalf("receive: %v", err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	short, stop := context.WithTimeout(ctx, 5*time.Second) // well under the 30 s message lock
	defer stop()
	again, err := b.Client().AcceptNextSessionForQueue(short, "work", nil)
	if err != nil {
		t.Fatalf("the session's unsettled message is still locked: %v", err)
	}
	got, err := again.ReceiveMessages(short, 1, nil)
	if err != nil || len(got) != 1 || got[0].DeliveryCount != 1 {
		t.Fatalf("redelivery: %v %v", got, err)
	}
}
