package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/presence-bridge/presence-bridge/presence"
)

// Limits of what the webhook accepts in one request. Graph batches
// notifications; a batch is far smaller than this.
const (
	// MaxBody is the largest request body read.
	MaxBody = 4 << 20
	// maxItems and maxTokens bound a collection.
	maxItems  = 1000
	maxTokens = 100
	// maxField bounds the plain string fields.
	maxField = 512
)

// ErrMalformed: the body is not a change-notification collection.
var ErrMalformed = errors.New("notify: not a change-notification collection")

// Lifecycle events Graph sends (presence gets only reauthorizationRequired
// today; the others are handled in case it starts sending them).
const (
	EventReauthorizationRequired = "reauthorizationRequired"
	EventSubscriptionRemoved     = "subscriptionRemoved"
	EventMissed                  = "missed"
)

// Collection is Graph's changeNotificationCollection: what one POST to the
// webhook carries.
type Collection struct {
	Value []Notification `json:"value"`
	// ValidationTokens are JWTs Graph adds to rich notifications, one per
	// app and tenant of the batch.
	ValidationTokens []string `json:"validationTokens"`
}

// Notification is one changeNotification: a change (ChangeType set) or a
// lifecycle notification (LifecycleEvent set).
type Notification struct {
	ID                             string            `json:"id"`
	SubscriptionID                 string            `json:"subscriptionId"`
	SubscriptionExpirationDateTime string            `json:"subscriptionExpirationDateTime"`
	TenantID                       string            `json:"tenantId"`
	ClientState                    string            `json:"clientState"`
	ChangeType                     string            `json:"changeType"`
	LifecycleEvent                 string            `json:"lifecycleEvent"`
	Resource                       string            `json:"resource"`
	ResourceData                   *ResourceData     `json:"resourceData"`
	EncryptedContent               *EncryptedContent `json:"encryptedContent"`
}

// ResourceData names the changed resource.
type ResourceData struct {
	ID        string `json:"id"`
	ODataType string `json:"@odata.type"`
	ODataID   string `json:"@odata.id"`
}

// Parse reads a notification collection, refusing anything that is not
// one: invalid JSON, no items, too many items or tokens, an item that is
// neither a change nor a lifecycle notification, or oversized fields.
func Parse(body []byte) (Collection, error) {
	if len(body) > MaxBody {
		return Collection{}, fmt.Errorf("%w: body over %d bytes", ErrMalformed, MaxBody)
	}
	var c Collection
	if err := json.Unmarshal(body, &c); err != nil {
		return Collection{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case len(c.Value) == 0:
		return Collection{}, fmt.Errorf("%w: no notifications", ErrMalformed)
	case len(c.Value) > maxItems:
		return Collection{}, fmt.Errorf("%w: %d notifications in one request", ErrMalformed, len(c.Value))
	case len(c.ValidationTokens) > maxTokens:
		return Collection{}, fmt.Errorf("%w: %d validation tokens", ErrMalformed, len(c.ValidationTokens))
	}
	for i, n := range c.Value {
		if (n.ChangeType == "") == (n.LifecycleEvent == "") {
			return Collection{}, fmt.Errorf("%w: item %d is neither a change nor a lifecycle notification", ErrMalformed, i)
		}
		for _, f := range []string{n.ID, n.SubscriptionID, n.SubscriptionExpirationDateTime, n.TenantID, n.ClientState, n.ChangeType, n.LifecycleEvent, n.Resource} {
			if len(f) > maxField {
				return Collection{}, fmt.Errorf("%w: item %d has a field over %d bytes", ErrMalformed, i, maxField)
			}
		}
		if n.SubscriptionID == "" {
			return Collection{}, fmt.Errorf("%w: item %d has no subscriptionId", ErrMalformed, i)
		}
	}
	return c, nil
}

// UserID is the person a presence notification is about: resourceData.id,
// else the id in resource (communications/presences/{id} or
// communications/presences('{id}')). Both must agree when both are given.
func (n Notification) UserID() (presence.UserID, error) {
	var fromResource presence.UserID
	if n.Resource != "" {
		r := strings.TrimPrefix(strings.TrimPrefix(n.Resource, "/"), "v1.0/")
		var raw string
		switch {
		case hasPrefixFold(r, "communications/presences/"):
			raw = r[len("communications/presences/"):]
		case hasPrefixFold(r, "communications/presences('") && len(r) >= len("communications/presences('')") && strings.HasSuffix(r, "')"):
			raw = r[len("communications/presences('") : len(r)-2]
		default:
			return "", fmt.Errorf("notify: resource %q is not a presence", clip(n.Resource, 80))
		}
		id, err := presence.ParseUserID(raw)
		if err != nil {
			return "", fmt.Errorf("notify: resource: %w", err)
		}
		fromResource = id
	}
	if n.ResourceData != nil && n.ResourceData.ID != "" {
		id, err := presence.ParseUserID(n.ResourceData.ID)
		if err != nil {
			return "", fmt.Errorf("notify: resourceData.id: %w", err)
		}
		if fromResource != "" && fromResource != id {
			return "", errors.New("notify: resource and resourceData name different people")
		}
		return id, nil
	}
	if fromResource == "" {
		return "", errors.New("notify: the notification names no resource")
	}
	return fromResource, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
