package sbtest

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/Azure/go-amqp"
)

// Rule is a SAS rule of one entity: a key that signs tokens for that entity
// only, with the given rights (Listen, Send, Manage).
type Rule struct {
	Name   string   `json:"name"`
	Key    string   `json:"key"`
	Rights []string `json:"rights"`
}

// CreateTopic adds a topic at run time (what the management API does). With
// dedupe > 0 the topic drops a message whose message-id it has seen within
// that window (Service Bus duplicate detection). Creating an existing topic
// only updates its duplicate detection.
func (b *Broker) CreateTopic(ctx context.Context, name string, dedupe time.Duration) error {
	return b.control(ctx, map[string]any{"op": "topic", "name": name, "dedupe_ms": dedupe.Milliseconds()})
}

// CreateSubscription adds a subscription to an existing topic at run time.
func (b *Broker) CreateSubscription(ctx context.Context, topic, name string) error {
	return b.control(ctx, map[string]any{"op": "subscription", "topic": topic, "name": name})
}

// SetRules replaces the SAS rules of an entity. They are checked only when
// the broker was started with Options.Keys (otherwise any token passes).
func (b *Broker) SetRules(ctx context.Context, entity string, rules []Rule) error {
	if rules == nil {
		rules = []Rule{}
	}
	return b.control(ctx, map[string]any{"op": "rules", "entity": entity, "rules": rules})
}

// DropTopic removes a topic, its subscriptions and its rules.
func (b *Broker) DropTopic(ctx context.Context, name string) error {
	return b.control(ctx, map[string]any{"op": "drop_topic", "name": name})
}

// control sends one command on the broker's control link and waits for it
// to be applied (journalled, so it survives Restart).
func (b *Broker) control(ctx context.Context, cmd map[string]any) error {
	body, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	b.ctlMu.Lock()
	defer b.ctlMu.Unlock()
	if b.ctl == nil {
		conn, err := amqp.Dial(ctx, fmt.Sprintf("amqp://127.0.0.1:%d", b.Port()), &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()})
		if err != nil {
			return fmt.Errorf("sbtest: control: dial: %w", err)
		}
		sess, err := conn.NewSession(ctx, nil)
		if err != nil {
			conn.Close()
			return fmt.Errorf("sbtest: control: session: %w", err)
		}
		snd, err := sess.NewSender(ctx, "$sbtest/control", nil)
		if err != nil {
			conn.Close()
			return fmt.Errorf("sbtest: control: link: %w", err)
		}
		b.ctlConn, b.ctl = conn, snd
	}
	if err := b.ctl.Send(ctx, amqp.NewMessage(body), nil); err != nil {
		b.ctlConn.Close()
		b.ctlConn, b.ctl = nil, nil
		return fmt.Errorf("sbtest: control %s: %w", cmd["op"], err)
	}
	return nil
}

func (b *Broker) closeControl() {
	b.ctlMu.Lock()
	defer b.ctlMu.Unlock()
	if b.ctlConn != nil {
		b.ctlConn.Close()
		b.ctlConn, b.ctl = nil, nil
	}
}
