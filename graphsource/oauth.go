package graphsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The OAuth side of MSAL, seen from its HTTP client.
//
// MSAL Go's device-code loop polls the token endpoint at 50 ms, 150 ms,
// 450 ms, 1.35 s, then every 5 s, whatever interval Entra asked for; it
// keeps polling on slow_down without slowing down, and a single network
// error (or an HTTP 5xx) ends the sign-in. oauthHTTP, the HTTP client MSAL
// is given, fixes that below MSAL: it holds each poll until the interval of
// the device authorization has passed since the previous answer, adds
// SlowDownStep (5 s, RFC 8628 §3.5) to the interval on each slow_down, and
// answers a poll that met a network error or a 5xx with
// authorization_pending (after the interval), so a sign-in survives a
// flaky connection until its code expires.
//
// It also remembers Entra's OAuth error (code and AADSTS description, never
// a token) of the last refused token request, which is how a refusal is
// classified: MSAL's own error text repeats URLs and whole bodies.

// DefaultSlowDownStep is what each slow_down adds to the polling interval.
const DefaultSlowDownStep = 5 * time.Second

// deviceCodeGrant is the grant type of the device-code polls.
const deviceCodeGrant = "urn:ietf:params:oauth:grant-type:device_code"

// defaultDeviceInterval is the interval when Entra names none (RFC 8628).
const defaultDeviceInterval = 5 * time.Second

// maxOAuthBody bounds what is read of an OAuth error or device-code reply.
const maxOAuthBody = 64 << 10

// oauthError is Entra's refusal of a token request.
type oauthError struct {
	Code        string // invalid_grant, authorization_pending, ...
	Description string // the first line of error_description (AADSTS...)
	Status      int
}

// parseOAuthError reads an OAuth error body; ok is false when it is not
// one.
func parseOAuthError(body []byte) (oauthError, bool) {
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		return oauthError{}, false
	}
	desc, _, _ := strings.Cut(e.Description, "\r")
	desc, _, _ = strings.Cut(desc, "\n")
	return oauthError{Code: clip(printable(e.Error), 64), Description: clip(printable(desc), 300)}, true
}

// printable drops control characters, so an error text cannot forge log
// lines.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// parseDeviceInterval reads the polling interval of a device authorization
// reply: Entra's whole seconds, 5 when missing or unusable, between a
// second and a minute so a wrong value cannot make a sign-in unusable.
func parseDeviceInterval(body []byte) time.Duration {
	var r struct {
		Interval json.Number `json:"interval"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&r) != nil || r.Interval == "" {
		return defaultDeviceInterval
	}
	n, err := r.Interval.Float64()
	switch {
	case err != nil || n <= 0 || n != n:
		return defaultDeviceInterval
	case n >= 60:
		return time.Minute
	case n < 1:
		return time.Second
	}
	return time.Duration(n * float64(time.Second))
}

type requestKind uint8

const (
	kindOther requestKind = iota
	kindDeviceAuthorization
	kindDevicePoll
	kindToken
)

func classifyRequest(req *http.Request) requestKind {
	if req.Method != http.MethodPost {
		return kindOther
	}
	switch {
	case strings.HasSuffix(req.URL.Path, "/devicecode"):
		return kindDeviceAuthorization
	case strings.HasSuffix(req.URL.Path, "/token"):
		if req.GetBody == nil {
			return kindToken
		}
		body, err := req.GetBody()
		if err != nil {
			return kindToken
		}
		defer body.Close()
		form, err := io.ReadAll(io.LimitReader(body, maxOAuthBody))
		if err != nil {
			return kindToken
		}
		if q, err := url.ParseQuery(string(form)); err == nil {
			// MSAL sends the short form; RFC 8628 names the URN.
			if g := q.Get("grant_type"); g == deviceCodeGrant || g == "device_code" {
				return kindDevicePoll
			}
		}
		return kindToken
	}
	return kindOther
}

// oauthHTTP is the HTTP client of one MSAL client (one account, or one
// sign-in). MSAL serialises nothing itself; the account's mutex does.
type oauthHTTP struct {
	base *http.Client
	// slowDown is added to the interval on each slow_down.
	slowDown time.Duration
	// onPollTrouble, when set, learns each poll that met a network error or
	// a server error (it is turned into authorization_pending).
	onPollTrouble func(error)

	mu       sync.Mutex
	interval time.Duration
	next     time.Time // no poll before
	last     oauthError
}

func newOAuthHTTP(base *http.Client) *oauthHTTP {
	if base == nil {
		base = &http.Client{Timeout: 30 * time.Second}
	}
	return &oauthHTTP{base: base, slowDown: DefaultSlowDownStep, interval: defaultDeviceInterval}
}

// CloseIdleConnections is part of MSAL's HTTP client interface.
func (h *oauthHTTP) CloseIdleConnections() { h.base.CloseIdleConnections() }

// lastError returns the last refusal seen and forgets it.
func (h *oauthHTTP) lastError() oauthError {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.last
	h.last = oauthError{}
	return e
}

func (h *oauthHTTP) reset() {
	h.mu.Lock()
	h.last = oauthError{}
	h.mu.Unlock()
}

// Do sends a request for MSAL.
func (h *oauthHTTP) Do(req *http.Request) (*http.Response, error) {
	kind := classifyRequest(req)
	if kind == kindDevicePoll {
		if err := h.waitForPoll(req.Context()); err != nil {
			return nil, err
		}
	}
	resp, err := h.base.Do(req)
	if err != nil {
		if kind == kindDevicePoll && req.Context().Err() == nil {
			return h.pending(req, err), nil
		}
		return nil, err
	}
	switch kind {
	case kindDeviceAuthorization:
		if resp.StatusCode == http.StatusOK {
			body, err := peek(resp)
			if err != nil {
				return nil, err
			}
			h.mu.Lock()
			h.interval = parseDeviceInterval(body)
			h.next = time.Now().Add(h.interval)
			h.mu.Unlock()
		} else if err := h.record(resp); err != nil {
			return nil, err
		}
	case kindToken:
		if resp.StatusCode >= 400 {
			if err := h.record(resp); err != nil {
				return nil, err
			}
		}
	case kindDevicePoll:
		h.mu.Lock()
		h.next = time.Now().Add(h.interval)
		h.mu.Unlock()
		switch {
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			resp.Body.Close()
			return h.pending(req, fmt.Errorf("HTTP %d", resp.StatusCode)), nil
		case resp.StatusCode >= 400:
			if err := h.record(resp); err != nil {
				return nil, err
			}
			h.mu.Lock()
			if h.last.Code == "slow_down" {
				h.interval = min(h.interval+h.slowDown, time.Minute)
				h.next = time.Now().Add(h.interval)
			}
			h.mu.Unlock()
		}
	}
	return resp, nil
}

// waitForPoll holds a poll until the interval has passed.
func (h *oauthHTTP) waitForPoll(ctx context.Context) error {
	h.mu.Lock()
	wait := time.Until(h.next)
	h.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pending answers a poll that could not get Entra's answer as Entra would
// have answered while the person has not finished: keep polling.
func (h *oauthHTTP) pending(req *http.Request, cause error) *http.Response {
	h.mu.Lock()
	h.next = time.Now().Add(h.interval)
	h.mu.Unlock()
	if h.onPollTrouble != nil {
		h.onPollTrouble(cause)
	}
	body := `{"error":"authorization_pending","error_description":"presence-bridge: Microsoft could not be reached; polling again"}`
	return &http.Response{
		Status: "400 Bad Request", StatusCode: http.StatusBadRequest,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// record remembers the OAuth error of a refused request.
func (h *oauthHTTP) record(resp *http.Response) error {
	body, err := peek(resp)
	if err != nil {
		return err
	}
	e, ok := parseOAuthError(body)
	if !ok {
		e = oauthError{Code: "", Description: fmt.Sprintf("HTTP %d", resp.StatusCode)}
	}
	e.Status = resp.StatusCode
	h.mu.Lock()
	h.last = e
	h.mu.Unlock()
	return nil
}

// peek reads the body (bounded) and puts it back for MSAL.
func peek(resp *http.Response) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOAuthBody))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

// signInCodes are Entra's refusals only a new sign-in (or a fixed app
// registration) can cure.
var signInCodes = map[string]bool{
	"invalid_grant": true, "interaction_required": true, "login_required": true,
	"consent_required": true, "invalid_client": true, "unauthorized_client": true,
}

// SignInRequiredError: Entra refused the account's refresh token; it needs a
// new sign-in. Its text is safe to log and show.
type SignInRequiredError struct {
	Code        string
	Description string
}

func (e *SignInRequiredError) Error() string {
	if e.Description == "" {
		return "sign-in required (" + e.Code + ")"
	}
	return "sign-in required (" + e.Code + "): " + e.Description
}

// TransientError is a token request that failed for a reason that may pass
// (Entra unreachable, a server error).
type TransientError struct{ Detail string }

func (e *TransientError) Error() string { return "microsoft sign-in service: " + e.Detail }

// classify turns an MSAL failure into a *SignInRequiredError or a
// *TransientError, using what the transport saw rather than MSAL's text.
func classify(ctx context.Context, err error, last oauthError) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if signInCodes[last.Code] {
		return &SignInRequiredError{Code: last.Code, Description: last.Description}
	}
	if last.Code != "" {
		return &TransientError{Detail: fmt.Sprintf("refused (HTTP %d %s): %s", last.Status, last.Code, last.Description)}
	}
	if last.Status != 0 {
		return &TransientError{Detail: last.Description}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return &TransientError{Detail: "unreachable: " + ue.Err.Error()}
	}
	if err != nil && err.Error() == "no token found" {
		// MSAL's answer when the cache holds no refresh token for the
		// account: nothing but a sign-in can make one.
		return &SignInRequiredError{Code: "no_refresh_token", Description: "the stored sign-in holds no refresh token"}
	}
	return &TransientError{Detail: "failed"}
}
