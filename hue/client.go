package hue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout bounds every call to a Hue bridge that has no shorter
// deadline in its context.
const DefaultTimeout = 5 * time.Second

// maxReplySize bounds how much of a reply is read: a real bridge's group list
// is a few tens of KiB.
const maxReplySize = 1 << 20

// Hue API error types (local API v1).
const (
	ErrorTypeUnauthorized     = 1
	ErrorTypeInvalidJSON      = 2
	ErrorTypeNotAvailable     = 3
	ErrorTypeMissingParameter = 5
	ErrorTypeNoSuchParameter  = 6
	ErrorTypeInvalidValue     = 7
	ErrorTypeLinkButton       = 101
)

// Sentinel errors, matched with errors.Is against *APIError and *StatusError.
var (
	// ErrUnauthorized: the bridge does not know the API key (error type 1).
	ErrUnauthorized = errors.New("unauthorized user")
	// ErrNotAvailable: the resource (a group) does not exist (error type 3).
	ErrNotAvailable = errors.New("resource not available")
	// ErrLinkButton: pairing needs the link button pressed (error type 101).
	ErrLinkButton = errors.New("link button not pressed")
	// ErrRateLimited: the bridge answered HTTP 429.
	ErrRateLimited = errors.New("rate limited")
	// ErrBadReply: the reply is not what the v1 API sends.
	ErrBadReply = errors.New("malformed reply")
	// ErrUnknownGroup: a configured group name or id is not on the bridge.
	ErrUnknownGroup = errors.New("unknown group")
)

// APIError is one error object of a Hue reply array.
type APIError struct {
	Type        int
	Address     string
	Description string
}

func (e *APIError) Error() string {
	if e.Address == "" {
		return fmt.Sprintf("hue error %d: %s", e.Type, e.Description)
	}
	return fmt.Sprintf("hue error %d at %s: %s", e.Type, e.Address, e.Description)
}

// Is maps the error types the sink acts on to the sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Type == ErrorTypeUnauthorized
	case ErrNotAvailable:
		return e.Type == ErrorTypeNotAvailable
	case ErrLinkButton:
		return e.Type == ErrorTypeLinkButton
	}
	return false
}

// StatusError is a reply with an HTTP status other than 200.
type StatusError struct {
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("http status %d %s", e.Code, http.StatusText(e.Code))
}

// Is matches ErrRateLimited for HTTP 429.
func (e *StatusError) Is(target error) bool {
	return target == ErrRateLimited && e.Code == http.StatusTooManyRequests
}

// Client speaks the Hue local API v1 to one bridge. It is safe for concurrent
// use and never changes its configuration after construction.
type Client struct {
	base     *url.URL // http://host[:port]
	username string
	http     *http.Client
	timeout  time.Duration
}

// ClientOptions configure a Client.
type ClientOptions struct {
	// Host is host[:port], or http://host[:port].
	Host string
	// Username is the API key (empty for pairing).
	Username string
	// HTTPClient defaults to a client of its own (never http.DefaultClient).
	HTTPClient *http.Client
	// Timeout bounds each call; DefaultTimeout when zero.
	Timeout time.Duration
}

// NewClient checks the host and returns a client.
func NewClient(opts ClientOptions) (*Client, error) {
	base, err := ParseHost(opts.Host)
	if err != nil {
		return nil, err
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport}
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Client{base: base, username: opts.Username, http: hc, timeout: timeout}, nil
}

// ParseHost turns host[:port] or http://host[:port] into the bridge's base
// URL. Other schemes, paths and user info are refused.
func ParseHost(host string) (*url.URL, error) {
	h := strings.TrimSpace(host)
	if h == "" {
		return nil, errors.New("hue: empty host")
	}
	if !strings.Contains(h, "://") {
		h = "http://" + h
	}
	u, err := url.Parse(h)
	if err != nil {
		return nil, fmt.Errorf("hue: host %q: %w", host, err)
	}
	switch {
	case !strings.EqualFold(u.Scheme, "http"):
		return nil, fmt.Errorf("hue: host %q: the local API is plain http", host)
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("hue: host %q: want host[:port]", host)
	}
	return &url.URL{Scheme: "http", Host: u.Host}, nil
}

// Host returns the bridge's host[:port].
func (c *Client) Host() string { return c.base.Host }

// endpoint builds /api[/<username>]/<parts...>; redacted replaces the
// username so the URL can appear in errors and logs.
func (c *Client) endpoint(withUser, redacted bool, parts ...string) string {
	p := "/api"
	if withUser {
		user := c.username
		if redacted {
			user = "<redacted>"
		}
		p += "/" + url.PathEscape(user)
	}
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return c.base.String() + p
}

// do sends one request and returns the body of a 200 reply. The URL in any
// error has the API key redacted.
func (c *Client) do(ctx context.Context, method string, withUser bool, body []byte, parts ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint(withUser, false, parts...), rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", redactURLError(err, c.endpoint(withUser, true, parts...)))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, redactURLError(err, c.endpoint(withUser, true, parts...))
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxReplySize+1))
	if err != nil {
		return nil, fmt.Errorf("read reply: %w", redactURLError(err, c.endpoint(withUser, true, parts...)))
	}
	if res.StatusCode != http.StatusOK {
		return nil, &StatusError{Code: res.StatusCode}
	}
	if len(data) > maxReplySize {
		return nil, fmt.Errorf("%w: reply larger than %d bytes", ErrBadReply, maxReplySize)
	}
	return data, nil
}

// redactURLError replaces the URL of a *url.Error (which net/http puts in
// every transport error) with one that does not carry the API key.
func redactURLError(err error, redacted string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: redacted, Err: ue.Err}
	}
	return err
}

// Action is the body of a group action. Nil fields are not sent, so a zero
// value (hue 0, sat 0, transitiontime 0) can be sent and "on" is only sent
// when meant.
type Action struct {
	On             *bool       `json:"on,omitempty"`
	Bri            *uint8      `json:"bri,omitempty"`
	XY             *[2]float64 `json:"xy,omitempty"`
	Hue            *uint16     `json:"hue,omitempty"`
	Sat            *uint8      `json:"sat,omitempty"`
	Effect         string      `json:"effect,omitempty"`
	TransitionTime *uint16     `json:"transitiontime,omitempty"`
}

// Empty reports whether the action would change nothing.
func (a Action) Empty() bool {
	return a.On == nil && a.Bri == nil && a.XY == nil && a.Hue == nil && a.Sat == nil && a.Effect == "" && a.TransitionTime == nil
}

// String is a compact form for logs: on=true bri=254 xy=[0.70,0.30].
func (a Action) String() string {
	var parts []string
	if a.On != nil {
		parts = append(parts, "on="+strconv.FormatBool(*a.On))
	}
	if a.Bri != nil {
		parts = append(parts, "bri="+strconv.Itoa(int(*a.Bri)))
	}
	if a.XY != nil {
		parts = append(parts, fmt.Sprintf("xy=[%.4f,%.4f]", a.XY[0], a.XY[1]))
	}
	if a.Hue != nil {
		parts = append(parts, "hue="+strconv.Itoa(int(*a.Hue)))
	}
	if a.Sat != nil {
		parts = append(parts, "sat="+strconv.Itoa(int(*a.Sat)))
	}
	if a.Effect != "" {
		parts = append(parts, "effect="+a.Effect)
	}
	if a.TransitionTime != nil {
		parts = append(parts, "transitiontime="+strconv.Itoa(int(*a.TransitionTime)))
	}
	return strings.Join(parts, " ")
}

// SetGroupAction sends a group action (PUT /api/<key>/groups/<id>/action).
func (c *Client) SetGroupAction(ctx context.Context, id string, a Action) error {
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("hue: set group %s: %w", id, err)
	}
	data, err := c.do(ctx, http.MethodPut, true, body, "groups", id, "action")
	if err != nil {
		return fmt.Errorf("hue: set group %s: %w", id, err)
	}
	if err := ParseActionReply(data); err != nil {
		return fmt.Errorf("hue: set group %s: %w", id, err)
	}
	return nil
}

// Group is one group (room, zone, ...) of a bridge.
type Group struct {
	ID     string
	Name   string
	Type   string
	Lights []string
	// AllOn is the group's state.all_on.
	AllOn bool
}

// Groups lists the bridge's groups, sorted by numeric id.
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	data, err := c.do(ctx, http.MethodGet, true, nil, "groups")
	if err != nil {
		return nil, fmt.Errorf("hue: list groups: %w", err)
	}
	groups, err := ParseGroups(data)
	if err != nil {
		return nil, fmt.Errorf("hue: list groups: %w", err)
	}
	return groups, nil
}

// LightGamuts returns each light's colour gamut type ("A", "B", "C", or
// "other") from GET /api/<key>/lights.
func (c *Client) LightGamuts(ctx context.Context) (map[string]string, error) {
	data, err := c.do(ctx, http.MethodGet, true, nil, "lights")
	if err != nil {
		return nil, fmt.Errorf("hue: list lights: %w", err)
	}
	gamuts, err := ParseLightGamuts(data)
	if err != nil {
		return nil, fmt.Errorf("hue: list lights: %w", err)
	}
	return gamuts, nil
}

// CreateUser asks for a new API key (POST /api); it fails with ErrLinkButton
// until the link button is pressed.
func (c *Client) CreateUser(ctx context.Context, deviceType string) (string, error) {
	body, err := json.Marshal(struct {
		DeviceType string `json:"devicetype"`
	}{deviceType})
	if err != nil {
		return "", fmt.Errorf("hue: create user: %w", err)
	}
	data, err := c.do(ctx, http.MethodPost, false, body)
	if err != nil {
		return "", fmt.Errorf("hue: create user: %w", err)
	}
	user, err := ParseCreateUserReply(data)
	if err != nil {
		return "", fmt.Errorf("hue: create user: %w", err)
	}
	return user, nil
}

// replyItem is one element of a reply array.
type replyItem struct {
	Success json.RawMessage `json:"success"`
	Error   json.RawMessage `json:"error"`
}

// parseReplyArray decodes a v1 reply array; the first error object becomes
// the returned error.
func parseReplyArray(data []byte) ([]json.RawMessage, error) {
	var items []replyItem
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: empty reply array", ErrBadReply)
	}
	var successes []json.RawMessage
	for i, it := range items {
		hasErr := len(it.Error) > 0 && string(it.Error) != "null"
		hasOK := len(it.Success) > 0 && string(it.Success) != "null"
		switch {
		case hasErr:
			return nil, parseAPIError(it.Error)
		case hasOK:
			successes = append(successes, it.Success)
		default:
			return nil, fmt.Errorf("%w: item %d has neither success nor error", ErrBadReply, i)
		}
	}
	return successes, nil
}

// parseAPIError decodes an error object; missing fields are tolerated (a
// missing address made huego panic), a non-numeric type is not.
func parseAPIError(raw json.RawMessage) error {
	var e struct {
		Type        json.RawMessage `json:"type"`
		Address     any             `json:"address"`
		Description any             `json:"description"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return fmt.Errorf("%w: error object: %v", ErrBadReply, err)
	}
	if len(e.Type) == 0 || string(e.Type) == "null" {
		return fmt.Errorf("%w: error object without type", ErrBadReply)
	}
	t, err := strconv.Atoi(string(e.Type))
	if err != nil {
		return fmt.Errorf("%w: error type %s", ErrBadReply, clip(string(e.Type)))
	}
	addr, _ := e.Address.(string)
	desc, _ := e.Description.(string)
	return &APIError{Type: t, Address: clip(addr), Description: clip(desc)}
}

// clip keeps outside text short enough for logs and health details.
func clip(s string) string {
	const max = 200
	if len(s) > max {
		return strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}

// ParseActionReply checks a group action reply: every item a success.
func ParseActionReply(data []byte) error {
	_, err := parseReplyArray(data)
	return err
}

// ParseCreateUserReply returns the username of a pairing reply.
func ParseCreateUserReply(data []byte) (string, error) {
	successes, err := parseReplyArray(data)
	if err != nil {
		return "", err
	}
	for _, s := range successes {
		var v struct {
			Username string `json:"username"`
		}
		if json.Unmarshal(s, &v) == nil && v.Username != "" {
			if !validKey(v.Username) {
				return "", fmt.Errorf("%w: username is not a printable key", ErrBadReply)
			}
			return v.Username, nil
		}
	}
	return "", fmt.Errorf("%w: no username in reply", ErrBadReply)
}

// validKey accepts what bridges hand out (40 alphanumerics today, shorter
// on old firmware) and refuses anything that cannot go in a path or a
// configuration file unchanged.
func validKey(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
		if !ok {
			return false
		}
	}
	return true
}

// ParseGroups decodes GET /groups: an object of id → group, or an error
// array.
func ParseGroups(data []byte) ([]Group, error) {
	if t := firstToken(data); t == '[' {
		if _, err := parseReplyArray(data); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: array where the group list was expected", ErrBadReply)
	}
	var m map[string]struct {
		Name   *string  `json:"name"`
		Type   string   `json:"type"`
		Lights []string `json:"lights"`
		State  struct {
			AllOn bool `json:"all_on"`
		} `json:"state"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: null group list", ErrBadReply)
	}
	groups := make([]Group, 0, len(m))
	for id, g := range m {
		if !numericID(id) {
			return nil, fmt.Errorf("%w: group id %q is not a number", ErrBadReply, clip(id))
		}
		if g.Name == nil {
			return nil, fmt.Errorf("%w: group %s has no name", ErrBadReply, id)
		}
		groups = append(groups, Group{ID: id, Name: *g.Name, Type: g.Type, Lights: g.Lights, AllOn: g.State.AllOn})
	}
	sort.Slice(groups, func(i, j int) bool {
		a, _ := strconv.Atoi(groups[i].ID)
		b, _ := strconv.Atoi(groups[j].ID)
		return a < b
	})
	return groups, nil
}

// ParseLightGamuts decodes GET /lights into light id → gamut type.
func ParseLightGamuts(data []byte) (map[string]string, error) {
	if t := firstToken(data); t == '[' {
		if _, err := parseReplyArray(data); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: array where the light list was expected", ErrBadReply)
	}
	var m map[string]struct {
		Capabilities struct {
			Control struct {
				GamutType string `json:"colorgamuttype"`
			} `json:"control"`
		} `json:"capabilities"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	out := make(map[string]string, len(m))
	for id, l := range m {
		if !numericID(id) {
			return nil, fmt.Errorf("%w: light id %q is not a number", ErrBadReply, clip(id))
		}
		out[id] = l.Capabilities.Control.GamutType
	}
	return out, nil
}

func numericID(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func firstToken(data []byte) byte {
	for _, b := range data {
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return b
	}
	return 0
}
