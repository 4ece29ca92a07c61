package servicebus

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
)

// Topic settings every person's topic gets.
const (
	// TopicTTL is the default message time to live (ISO 8601): SPEC §2's
	// one hour.
	TopicTTL = "PT1H"
	// DuplicateWindow is how long Service Bus remembers message ids.
	DuplicateWindow = "PT10M"
	// ListenRuleName names the topic-scoped Listen-only SAS rule a
	// household receives.
	ListenRuleName = "presence-bridge-listen"
	// MaxRules is Service Bus's limit of SAS rules per entity.
	MaxRules = 12
)

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	// ConnectionString of the namespace, with Manage rights.
	ConnectionString string
	// AdminEndpoint overrides https://<namespace host>/ (emulators, tests);
	// it must be https.
	AdminEndpoint string
	// HTTPClient sends the management requests; default azcore's.
	HTTPClient *http.Client
}

// Manager creates people's topics, subscriptions and Listen keys in one
// namespace through the management API (ATOM over HTTPS).
type Manager struct {
	cs    ConnectionString
	admin *admin.Client
}

// ManageDeniedError: the namespace's key lacks Manage rights (401/403), so
// the topic and subscriptions must be created by hand.
type ManageDeniedError struct {
	Host          string
	Topic         string
	Subscriptions []string
	Status        int
}

func (e *ManageDeniedError) Error() string {
	return fmt.Sprintf("servicebus: the key of %s may not manage entities (HTTP %d): create topic %s with subscriptions %s by hand",
		e.Host, e.Status, e.Topic, strings.Join(e.Subscriptions, ", "))
}

// ErrTooManyRules: the topic already has MaxRules SAS rules and none is ours.
var ErrTooManyRules = errors.New("servicebus: the topic already has 12 authorization rules")

// NewManager makes a Manager for one namespace.
func NewManager(o ManagerOptions) (*Manager, error) {
	cs, err := ParseConnectionString(o.ConnectionString)
	if err != nil {
		return nil, fmt.Errorf("servicebus: manager: %w", err)
	}
	var opts admin.ClientOptions
	opts.Retry = policy.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 2 * time.Second}
	if o.HTTPClient != nil {
		opts.Transport = o.HTTPClient
	}
	if o.AdminEndpoint != "" {
		u, err := url.Parse(o.AdminEndpoint)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("servicebus: manager: admin endpoint %q is not an https URL", o.AdminEndpoint)
		}
		opts.PerCallPolicies = append(opts.PerCallPolicies, rewriteHost{host: u.Host})
	}
	c, err := admin.NewClientFromConnectionString(o.ConnectionString, &opts)
	if err != nil {
		return nil, fmt.Errorf("servicebus: manager for %s: %w", cs.Host, err)
	}
	return &Manager{cs: cs, admin: c}, nil
}

// rewriteHost sends the management requests to another host (admin_endpoint).
type rewriteHost struct{ host string }

func (r rewriteHost) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	raw.URL.Scheme, raw.URL.Host, raw.Host = "https", r.host, r.host
	return req.Next()
}

// Host is the namespace's host.
func (m *Manager) Host() string { return m.cs.Host }

// CountTopics counts the namespace's topics.
func (m *Manager) CountTopics(ctx context.Context) (int, error) {
	n := 0
	pager := m.admin.NewListTopicsPager(&admin.ListTopicsOptions{MaxPageSize: 100})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return 0, m.wrap(err, "", nil)
		}
		n += len(page.Topics)
	}
	return n, nil
}

// Provisioned is what Provision made.
type Provisioned struct {
	// CreatedTopic is true when the topic did not exist before.
	CreatedTopic bool
	// ListenConnectionString is the topic-scoped Listen-only connection
	// string for the bridge (empty without a listen key). It holds a key:
	// show it once, never log it.
	ListenConnectionString string
}

// Provision makes sure topic exists (duplicate detection on, default TTL 1
// h) with the given subscriptions and, with listenKey, gives it a fresh
// Listen-only SAS rule (32 random bytes): creating it, or rotating its key
// by read-modify-write of the topic, so that signing in again invalidates
// the key shown before. Without Manage rights it fails with a
// *ManageDeniedError naming what to create by hand.
func (m *Manager) Provision(ctx context.Context, topic string, subscriptions []string, listenKey bool) (Provisioned, error) {
	var out Provisioned
	t, err := m.admin.GetTopic(ctx, topic, nil)
	if err != nil {
		return out, m.wrap(err, topic, subscriptions)
	}
	if t == nil {
		_, err := m.admin.CreateTopic(ctx, topic, &admin.CreateTopicOptions{Properties: &admin.TopicProperties{
			RequiresDuplicateDetection:          ptr(true),
			DuplicateDetectionHistoryTimeWindow: ptr(DuplicateWindow),
			DefaultMessageTimeToLive:            ptr(TopicTTL),
		}})
		if err != nil && !isStatus(err, http.StatusConflict) {
			return out, m.wrap(err, topic, subscriptions)
		}
		out.CreatedTopic = err == nil
	}
	for _, sub := range subscriptions {
		s, err := m.admin.GetSubscription(ctx, topic, sub, nil)
		if err != nil {
			return out, m.wrap(err, topic, subscriptions)
		}
		if s != nil {
			continue
		}
		if _, err := m.admin.CreateSubscription(ctx, topic, sub, nil); err != nil && !isStatus(err, http.StatusConflict) {
			return out, m.wrap(err, topic, subscriptions)
		}
	}
	if !listenKey {
		return out, nil
	}
	key, err := m.rotateListenKey(ctx, topic)
	if err != nil {
		return out, m.wrap(err, topic, subscriptions)
	}
	out.ListenConnectionString = m.cs.EntityConnectionString(topic, ListenRuleName, key)
	return out, nil
}

// rotateListenKey sets a new key on the topic's Listen rule (adding the rule
// when missing): GetTopic, change, UpdateTopic with the whole description.
func (m *Manager) rotateListenKey(ctx context.Context, topic string) (string, error) {
	t, err := m.admin.GetTopic(ctx, topic, nil)
	if err != nil {
		return "", err
	}
	if t == nil {
		return "", fmt.Errorf("servicebus: topic %s vanished while provisioning", topic)
	}
	key, err := newKey()
	if err != nil {
		return "", err
	}
	second, err := newKey()
	if err != nil {
		return "", err
	}
	props := t.TopicProperties
	rules := slices.Clone(props.AuthorizationRules)
	i := slices.IndexFunc(rules, func(r admin.AuthorizationRule) bool { return r.KeyName != nil && *r.KeyName == ListenRuleName })
	if i < 0 {
		if len(rules) >= MaxRules {
			return "", ErrTooManyRules
		}
		rules = append(rules, admin.AuthorizationRule{KeyName: ptr(ListenRuleName)})
		i = len(rules) - 1
	}
	rules[i].AccessRights = []admin.AccessRight{admin.AccessRightListen}
	rules[i].PrimaryKey = &key
	// The secondary key is rotated too: the one shown before must stop
	// working, whichever slot it was in.
	rules[i].SecondaryKey = &second
	props.AuthorizationRules = rules
	if _, err := m.admin.UpdateTopic(ctx, topic, props, nil); err != nil {
		return "", err
	}
	return key, nil
}

func newKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("servicebus: key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func (m *Manager) wrap(err error, topic string, subs []string) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) && (re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden) {
		return &ManageDeniedError{Host: m.cs.Host, Topic: topic, Subscriptions: subs, Status: re.StatusCode}
	}
	if errors.As(err, &re) {
		return fmt.Errorf("servicebus: management of %s: HTTP %d %s", m.cs.Host, re.StatusCode, re.ErrorCode)
	}
	return fmt.Errorf("servicebus: management of %s: %w", m.cs.Host, err)
}

func isStatus(err error, status int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

func ptr[T any](v T) *T { return &v }
