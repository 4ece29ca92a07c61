package graph

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// Limits Graph documents for change-notification subscriptions.
const (
	// MaxPresenceLifetime is the longest a presence subscription may live
	// before it must be renewed.
	MaxPresenceLifetime = time.Hour
	// DefaultWriteBudget subscription writes (create, renew, reauthorize,
	// delete) per DefaultWriteWindow per tenant: under Graph's 1,000 per
	// 20 s per app per tenant.
	DefaultWriteBudget = 950
	// DefaultWriteWindow is the span the write budget counts over.
	DefaultWriteWindow = 20 * time.Second
	// MaxClientState and MaxCertificateID are the longest clientState and
	// encryptionCertificateId Graph accepts (clientState: 128 characters).
	MaxClientState   = 128
	MaxCertificateID = 128
)

// ErrSubscriptionNotFound: Graph does not know the subscription (it expired
// or was deleted); a new one must be created.
var ErrSubscriptionNotFound = errors.New("graph: no such subscription (expired or deleted)")

// SubscriptionError is a subscription write Graph refused, with Graph's
// error code and message (the message says, for example, that Graph could
// not validate the notification URL).
type SubscriptionError struct {
	Status  int
	Code    string
	Message string
}

func (e *SubscriptionError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("graph: subscription refused (HTTP %d %s): %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("graph: subscription refused (HTTP %d %s)", e.Status, e.Code)
}

// PresenceResource is the subscription resource of one person's presence.
func PresenceResource(id presence.UserID) string {
	return "communications/presences/" + string(id)
}

// NewSubscription is what a subscription is created with.
type NewSubscription struct {
	// Resource, for example PresenceResource(id); ChangeType "updated".
	Resource   string
	ChangeType string
	// NotificationURL receives change notifications, LifecycleURL
	// lifecycle notifications (the same URL may serve both); Graph
	// validates both before it answers.
	NotificationURL string
	LifecycleURL    string
	ExpiresAt       time.Time
	// ClientState is echoed in every notification (≤ MaxClientState).
	ClientState string
	// IncludeResourceData asks for rich notifications, encrypted to
	// Certificate (DER of an X.509 certificate with an RSA key of 2,048 to
	// 4,096 bits) named CertificateID (≤ MaxCertificateID).
	IncludeResourceData bool
	Certificate         []byte
	CertificateID       string
}

// SubscriptionInfo is Graph's answer to a create or renew.
type SubscriptionInfo struct {
	ID        string
	Resource  string
	ExpiresAt time.Time
}

// SubscriptionsOptions configure a Subscriptions client.
type SubscriptionsOptions struct {
	// Endpoint is Graph's base URL; default https://graph.microsoft.com.
	Endpoint string
	// HTTPClient makes the requests; default a client with a 30 s timeout
	// (a create waits for Graph to validate the notification URL, up to
	// 10 s).
	HTTPClient *http.Client
	// Budget writes per Window per tenant; defaults DefaultWriteBudget and
	// DefaultWriteWindow.
	Budget int
	Window time.Duration
	Logger *slog.Logger
}

// Subscriptions creates, renews, reauthorizes and deletes change-notification
// subscriptions with a person's delegated token, keeping Graph's write limit
// per tenant (writes wait for room in the window; after a 429 or 503 the
// tenant's writes fail at once with a *ThrottledError until Retry-After
// has passed). It is safe for concurrent use.
type Subscriptions struct {
	endpoint string
	http     *http.Client
	log      *slog.Logger
	tenants  *tenants
}

// NewSubscriptions returns a Subscriptions client.
func NewSubscriptions(o SubscriptionsOptions) *Subscriptions {
	s := &Subscriptions{
		endpoint: strings.TrimRight(o.Endpoint, "/"), http: o.HTTPClient, log: o.Logger,
		tenants: newTenants(cmp.Or(max(o.Budget, 0), DefaultWriteBudget), cmp.Or(max(o.Window, 0), DefaultWriteWindow), DefaultConcurrency),
	}
	if s.endpoint == "" {
		s.endpoint = DefaultEndpoint
	}
	if s.http == nil {
		s.http = &http.Client{Timeout: 30 * time.Second}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

func (s *Subscriptions) tenant(id string) *tenant { return s.tenants.get(id) }

type wireSubscription struct {
	ID                       string `json:"id,omitempty"`
	Resource                 string `json:"resource,omitempty"`
	ChangeType               string `json:"changeType,omitempty"`
	NotificationURL          string `json:"notificationUrl,omitempty"`
	LifecycleNotificationURL string `json:"lifecycleNotificationUrl,omitempty"`
	ExpirationDateTime       string `json:"expirationDateTime,omitempty"`
	ClientState              string `json:"clientState,omitempty"`
	IncludeResourceData      bool   `json:"includeResourceData,omitempty"`
	EncryptionCertificate    string `json:"encryptionCertificate,omitempty"`
	EncryptionCertificateID  string `json:"encryptionCertificateId,omitempty"`
}

func (w wireSubscription) info() (SubscriptionInfo, error) {
	if w.ID == "" {
		return SubscriptionInfo{}, errors.New("graph: subscription reply without an id")
	}
	exp, err := time.Parse(time.RFC3339Nano, w.ExpirationDateTime)
	if err != nil {
		return SubscriptionInfo{}, fmt.Errorf("graph: subscription reply: expirationDateTime: %w", err)
	}
	return SubscriptionInfo{ID: w.ID, Resource: w.Resource, ExpiresAt: exp}, nil
}

// Create creates a subscription (POST /subscriptions). Graph validates the
// notification URLs before it answers: a URL it cannot reach, or that does
// not echo the validation token in time, is a *SubscriptionError (HTTP 400).
func (s *Subscriptions) Create(ctx context.Context, tenantID, token string, n NewSubscription) (SubscriptionInfo, error) {
	if len(n.ClientState) > MaxClientState || len(n.CertificateID) > MaxCertificateID {
		return SubscriptionInfo{}, errors.New("graph: clientState or encryptionCertificateId too long")
	}
	w := wireSubscription{
		Resource: n.Resource, ChangeType: n.ChangeType, NotificationURL: n.NotificationURL, LifecycleNotificationURL: n.LifecycleURL,
		ExpirationDateTime: n.ExpiresAt.UTC().Format(time.RFC3339Nano), ClientState: n.ClientState, IncludeResourceData: n.IncludeResourceData,
		EncryptionCertificateID: n.CertificateID,
	}
	if n.Certificate != nil {
		w.EncryptionCertificate = base64.StdEncoding.EncodeToString(n.Certificate)
	}
	var out wireSubscription
	if err := s.write(ctx, tenantID, token, http.MethodPost, "/v1.0/subscriptions", w, &out); err != nil {
		return SubscriptionInfo{}, err
	}
	return out.info()
}

// Renew extends a subscription to expires (PATCH /subscriptions/{id}),
// which also reauthorizes it. With certificate set it also moves the
// subscription's rich notifications to that certificate (key rotation).
func (s *Subscriptions) Renew(ctx context.Context, tenantID, token, id string, expires time.Time, certificate []byte, certificateID string) (SubscriptionInfo, error) {
	w := wireSubscription{ExpirationDateTime: expires.UTC().Format(time.RFC3339Nano)}
	if certificate != nil {
		w.EncryptionCertificate = base64.StdEncoding.EncodeToString(certificate)
		w.EncryptionCertificateID = certificateID
	}
	var out wireSubscription
	if err := s.write(ctx, tenantID, token, http.MethodPatch, "/v1.0/subscriptions/"+pathID(id), w, &out); err != nil {
		return SubscriptionInfo{}, err
	}
	if out.ID == "" {
		out.ID = id
	}
	return out.info()
}

// Reauthorize answers a reauthorizationRequired lifecycle notification
// without extending the subscription (POST /subscriptions/{id}/reauthorize).
func (s *Subscriptions) Reauthorize(ctx context.Context, tenantID, token, id string) error {
	return s.write(ctx, tenantID, token, http.MethodPost, "/v1.0/subscriptions/"+pathID(id)+"/reauthorize", nil, nil)
}

// Delete deletes a subscription (DELETE /subscriptions/{id}); one Graph no
// longer knows is ErrSubscriptionNotFound.
func (s *Subscriptions) Delete(ctx context.Context, tenantID, token, id string) error {
	return s.write(ctx, tenantID, token, http.MethodDelete, "/v1.0/subscriptions/"+pathID(id), nil, nil)
}

// pathID keeps an id from another source (a store) from adding path
// segments or a query.
func pathID(id string) string {
	return strings.NewReplacer("/", "%2F", "?", "%3F", "#", "%23").Replace(id)
}

func (s *Subscriptions) write(ctx context.Context, tenantID, token, method, path string, body, into any) error {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return fmt.Errorf("graph: %w", err)
		}
	}
	what := method + " subscription"
	status, data, err := roundTrip(ctx, s.http, s.log, s.tenant(tenantID), tenantID, token, method, s.endpoint+path, what, raw, 1<<20)
	if err != nil {
		return err
	}
	switch {
	case status >= 200 && status < 300:
	case status == http.StatusNotFound:
		return ErrSubscriptionNotFound
	default:
		code, msg := errorDetail(data)
		return &SubscriptionError{Status: status, Code: code, Message: msg}
	}
	if into == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, into); err != nil {
		return fmt.Errorf("graph: %s: reply is not the expected JSON: %w", what, err)
	}
	return nil
}

func errorDetail(data []byte) (code, message string) {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil {
		return "", ""
	}
	return clip(e.Error.Code, 64), clip(e.Error.Message, 300)
}

// ParsePresence reads a presence resource as Graph sends it (a read's
// reply, or the decrypted resource data of a rich change notification).
func ParsePresence(data []byte, tenantID string) (presence.Update, error) {
	var w wirePresence
	if err := json.Unmarshal(data, &w); err != nil {
		return presence.Update{}, fmt.Errorf("graph: presence: %w", err)
	}
	u, err := w.update(tenantID)
	if err != nil {
		return presence.Update{}, fmt.Errorf("graph: presence: %w", err)
	}
	return u, nil
}
