// Package graph is Presence Bridge's one Microsoft Graph client for presence,
// shared by the cloud poller and (later) the bridge's own Graph source.
//
// It reads a signed-in person's own presence (GET /me/presence) or up to 650
// people at once (POST /communications/getPresencesByUserId), and keeps
// Graph's limits per tenant: at most Budget requests in any Window (Graph
// allows 1,500 presence requests per 30 s per app per tenant; the default
// budget of 1,400 leaves room for clock skew), at most Concurrency requests
// in flight, and after a 429 or 503 no request to that tenant until its
// Retry-After has passed. Each tenant has its own pacing state, so one
// tenant's throttling or slowness never delays another's reads: a request
// for a tenant in its Retry-After period fails at once with a
// *ThrottledError instead of waiting.
//
// Availability and activity are parsed case-insensitively through the
// presence package (Graph has been seen sending camelCase); an unknown value
// becomes PresenceUnknown with the raw text kept in the update's
// UnknownAvailability or UnknownActivity. Graph's sequenceNumber is kept as
// the update's Sequence.
package graph

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// Limits Graph documents for presence.
const (
	// MaxBatch is the most ids one getPresencesByUserId request may carry.
	MaxBatch = 650
	// DefaultBudget requests per DefaultWindow per tenant: under Graph's
	// 1,500 per 30 s.
	DefaultBudget = 1400
	// DefaultWindow is the span the budget counts over.
	DefaultWindow = 30 * time.Second
	// DefaultConcurrency is how many requests per tenant may be in flight.
	DefaultConcurrency = 64
	// DefaultEndpoint is Microsoft Graph.
	DefaultEndpoint = "https://graph.microsoft.com"
)

// maxBody bounds a reply body (650 presences are well under it).
const maxBody = 4 << 20

// defaultRetryAfter is used when a 429 or 503 names no Retry-After.
const defaultRetryAfter = 10 * time.Second

// Errors a read can fail with, besides *ThrottledError and transport errors.
var (
	// ErrUnauthorized: Graph rejected the token (401). The caller may refresh
	// the token once; if the new one is rejected too, the sign-in is gone.
	ErrUnauthorized = errors.New("graph: the access token was rejected (401)")
	// ErrForbidden: the token lacks the permission (403), for example
	// Presence.Read.All for another person's presence.
	ErrForbidden = errors.New("graph: the token lacks the permission (403)")
	// ErrThrottled matches every *ThrottledError with errors.Is.
	ErrThrottled = errors.New("graph: throttled")
)

// ThrottledError is a 429 or 503 from Graph, or a read refused because the
// tenant is still inside an earlier Retry-After.
type ThrottledError struct {
	TenantID string
	Status   int
	// Until is when the tenant may be read again.
	Until time.Time
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("graph: tenant %s throttled (HTTP %d) until %s", e.TenantID, e.Status, e.Until.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// StatusError is any other unexpected reply.
type StatusError struct {
	Status int
	// Code is Graph's error code ("ResourceNotFound"), when it sent one.
	Code string
}

func (e *StatusError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("graph: HTTP %d (%s)", e.Status, e.Code)
	}
	return fmt.Sprintf("graph: HTTP %d", e.Status)
}

// Options configure a Client. The zero value reads Microsoft Graph with
// Graph's limits.
type Options struct {
	// Endpoint is Graph's base URL; default https://graph.microsoft.com.
	Endpoint string
	// HTTPClient makes the requests; default a client with a 30 s timeout.
	HTTPClient *http.Client
	// Budget requests per Window per tenant; defaults DefaultBudget and
	// DefaultWindow.
	Budget int
	Window time.Duration
	// Concurrency is the most requests in flight per tenant; default
	// DefaultConcurrency.
	Concurrency int
	Logger      *slog.Logger
}

// Client reads presence from Graph. It is safe for concurrent use.
type Client struct {
	endpoint string
	http     *http.Client
	log      *slog.Logger
	tenants  *tenants
}

// New returns a Client.
func New(o Options) *Client {
	c := &Client{
		endpoint: strings.TrimRight(o.Endpoint, "/"),
		http:     o.HTTPClient,
		log:      o.Logger,
	}
	if c.endpoint == "" {
		c.endpoint = DefaultEndpoint
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second}
	}
	c.tenants = newTenants(cmp.Or(max(o.Budget, 0), DefaultBudget), cmp.Or(max(o.Window, 0), DefaultWindow), cmp.Or(max(o.Concurrency, 0), DefaultConcurrency))
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *Client) tenant(id string) *tenant { return c.tenants.get(id) }

// Me reads the presence of the person the token belongs to (GET
// /me/presence). tenantID names the tenant whose limits the request counts
// against.
func (c *Client) Me(ctx context.Context, tenantID, token string) (presence.Update, error) {
	var w wirePresence
	if err := c.do(ctx, tenantID, token, http.MethodGet, "/v1.0/me/presence", nil, &w); err != nil {
		return presence.Update{}, err
	}
	u, err := w.update(tenantID)
	if err != nil {
		return presence.Update{}, fmt.Errorf("graph: me/presence: %w", err)
	}
	return u, nil
}

// ByUserIDs reads the presence of up to MaxBatch people in one request
// (POST /communications/getPresencesByUserId), which counts once against
// the tenant's budget. The token needs Presence.Read.All. A person Graph
// does not answer for is missing from the result.
func (c *Client) ByUserIDs(ctx context.Context, tenantID, token string, ids []presence.UserID) ([]presence.Update, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > MaxBatch {
		return nil, fmt.Errorf("graph: %d ids in one batch, the limit is %d", len(ids), MaxBatch)
	}
	body, err := json.Marshal(struct {
		IDs []presence.UserID `json:"ids"`
	}{ids})
	if err != nil {
		return nil, fmt.Errorf("graph: batch: %w", err)
	}
	var w struct {
		Value []wirePresence `json:"value"`
	}
	if err := c.do(ctx, tenantID, token, http.MethodPost, "/v1.0/communications/getPresencesByUserId", body, &w); err != nil {
		return nil, err
	}
	out := make([]presence.Update, 0, len(w.Value))
	for i := range w.Value {
		u, err := w.Value[i].update(tenantID)
		if err != nil {
			c.log.Warn("graph batch reply has an unusable entry", "tenant", tenantID, "err", err)
			continue
		}
		out = append(out, u)
	}
	return out, nil
}

func (c *Client) do(ctx context.Context, tenantID, token, method, path string, body []byte, into any) error {
	what := method + " " + path
	status, data, err := roundTrip(ctx, c.http, c.log, c.tenant(tenantID), tenantID, token, method, c.endpoint+path, what, body, maxBody+1)
	if err != nil {
		return err
	}
	switch {
	case status == http.StatusOK:
	case status == http.StatusForbidden:
		return ErrForbidden
	default:
		code, _ := errorDetail(data)
		return &StatusError{Status: status, Code: code}
	}
	if len(data) > maxBody {
		return fmt.Errorf("graph: %s: reply over %d bytes", what, maxBody)
	}
	if err := json.Unmarshal(data, into); err != nil {
		return fmt.Errorf("graph: %s: reply is not the expected JSON: %w", what, err)
	}
	return nil
}

// roundTrip is one request to Graph within a tenant's pacing (what names it
// in errors and logs): it reads at most limit bytes of the reply and turns
// 401 into ErrUnauthorized, and 429 and 503 into a *ThrottledError that
// also holds back the tenant's next requests until Retry-After; any other
// status is the caller's to judge.
func roundTrip(ctx context.Context, hc *http.Client, log *slog.Logger, t *tenant, tenantID, token, method, url, what string, body []byte, limit int64) (int, []byte, error) {
	release, err := t.acquire(ctx)
	if err != nil {
		return 0, nil, err
	}
	defer release()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("graph: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("graph: %s: %w", what, stripURL(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return 0, nil, fmt.Errorf("graph: %s: read reply: %w", what, err)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return 0, nil, ErrUnauthorized
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		until := time.Now().Add(RetryAfter(resp.Header.Get("Retry-After"), time.Now()))
		t.block(until)
		log.Warn("graph throttled a tenant", "tenant", tenantID, "request", what, "status", resp.StatusCode, "until", until.UTC().Format(time.RFC3339))
		return 0, nil, &ThrottledError{TenantID: tenantID, Status: resp.StatusCode, Until: until}
	}
	return resp.StatusCode, data, nil
}

// stripURL keeps a transport error from repeating the URL (harmless here,
// but a query could one day carry something).
func stripURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// RetryAfter reads a Retry-After header (seconds or an HTTP date) relative
// to now; a missing or unreadable one gives 10 s, and it is capped at 5
// minutes so a wrong header cannot silence a tenant for long.
func RetryAfter(h string, now time.Time) time.Duration {
	const ceiling = 5 * time.Minute
	h = strings.TrimSpace(h)
	var d time.Duration
	if n, err := strconv.ParseFloat(h, 64); err == nil && n >= 0 && n < 1e6 {
		d = time.Duration(n * float64(time.Second))
	} else if at, err := http.ParseTime(h); err == nil {
		d = at.Sub(now)
	} else {
		return defaultRetryAfter
	}
	return min(max(d, time.Second), ceiling)
}

// wirePresence is Graph's presence resource; encoding/json matches keys
// without regard to case.
type wirePresence struct {
	ID             string `json:"id"`
	Availability   string `json:"availability"`
	Activity       string `json:"activity"`
	SequenceNumber string `json:"sequenceNumber"`
	StatusMessage  *struct {
		Message *struct {
			Content string `json:"content"`
		} `json:"message"`
	} `json:"statusMessage"`
	OutOfOfficeSettings *struct {
		IsOutOfOffice bool `json:"isOutOfOffice"`
	} `json:"outOfOfficeSettings"`
}

// maxStatusMessage bounds the status message carried on (Teams allows 280
// characters; HTML may make it longer).
const maxStatusMessage = 1024

func (w *wirePresence) update(tenantID string) (presence.Update, error) {
	id, err := presence.ParseUserID(w.ID)
	if err != nil {
		return presence.Update{}, fmt.Errorf("id: %w", err)
	}
	u := presence.Update{UserID: id, TenantID: tenantID, Sequence: w.SequenceNumber}
	if len(u.Sequence) > 64 {
		return presence.Update{}, errors.New("sequenceNumber is over 64 characters")
	}
	var ok bool
	if u.Availability, ok = presence.ParseAvailability(w.Availability); !ok {
		u.UnknownAvailability = clip(w.Availability, 64)
	}
	if u.Activity, ok = presence.ParseActivity(w.Activity); !ok && w.Activity != "" {
		u.UnknownActivity = clip(w.Activity, 64)
	}
	if w.StatusMessage != nil && w.StatusMessage.Message != nil {
		u.StatusMessage = clip(w.StatusMessage.Message.Content, maxStatusMessage)
	}
	if w.OutOfOfficeSettings != nil {
		u.OutOfOffice = w.OutOfOfficeSettings.IsOutOfOffice
	}
	return u, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !validUTF8Tail(s) {
		s = s[:len(s)-1]
	}
	return s
}

func validUTF8Tail(s string) bool {
	// A cut inside a multi-byte rune leaves a continuation or lead byte at
	// the end; dropping bytes until the string is valid is enough.
	return strings.ToValidUTF8(s, "\uFFFD") == s
}
