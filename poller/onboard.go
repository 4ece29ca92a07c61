package poller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// TopicManager manages the entities of one Service Bus namespace
// (servicebus.Manager is one).
type TopicManager interface {
	Host() string
	CountTopics(ctx context.Context) (int, error)
	Provision(ctx context.Context, topic string, subscriptions []string, listenKey bool) (servicebus.Provisioned, error)
}

// Onboarding is where a person's presence goes, and what the household
// needs to read it.
type Onboarding struct {
	Namespace string
	Topic     string
	// ListenConnectionString is shown once after sign-in; never logged.
	ListenConnectionString string
	// Manual is set when the key may not manage entities: the page says
	// what to create by hand.
	Manual *servicebus.ManageDeniedError
}

// Onboarder places a person's topic in a namespace and provisions it.
type Onboarder struct {
	Namespaces    []TopicManager
	Subscriptions []string
	ListenKeys    bool
}

// Onboard provisions the person's topic: in their current namespace when
// they signed in before, else in the namespace with the fewest topics (a tie
// goes to the first listed; a namespace that cannot be counted is skipped).
// Without Manage rights it returns an Onboarding with Manual set, not an
// error: the person is signed in and the page says what to create.
func (o *Onboarder) Onboard(ctx context.Context, id presence.UserID, current string) (Onboarding, error) {
	if len(o.Namespaces) == 0 {
		return Onboarding{}, errors.New("poller: no Service Bus namespace configured")
	}
	mgr := o.pick(ctx, current)
	out := Onboarding{Namespace: mgr.Host(), Topic: string(id)}
	p, err := mgr.Provision(ctx, out.Topic, o.Subscriptions, o.ListenKeys)
	var denied *servicebus.ManageDeniedError
	if errors.As(err, &denied) {
		out.Manual = denied
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("poller: provision topic %s: %w", out.Topic, err)
	}
	out.ListenConnectionString = p.ListenConnectionString
	return out, nil
}

func (o *Onboarder) pick(ctx context.Context, current string) TopicManager {
	for _, m := range o.Namespaces {
		if current != "" && strings.EqualFold(m.Host(), current) {
			return m
		}
	}
	if len(o.Namespaces) == 1 {
		return o.Namespaces[0]
	}
	best, bestN := o.Namespaces[0], -1
	for _, m := range o.Namespaces {
		n, err := m.CountTopics(ctx)
		if err != nil {
			continue
		}
		if bestN < 0 || n < bestN {
			best, bestN = m, n
		}
	}
	return best
}
