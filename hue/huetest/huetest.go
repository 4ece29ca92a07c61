// Package huetest is a fake Philips Hue bridge speaking the local API v1 as
// a real bridge does: a group list with names, types and lights, group
// actions answered with success/error arrays (HTTP 200), link-button
// pairing, error types 1 (unauthorized user), 2 (invalid JSON), 3 (resource
// not available), 6/7 (unknown parameter, invalid value) and 101 (link button
// not pressed), and HTTP 429 when group commands come faster than the
// bridge's limit (one per second by default). Every group command received
// is recorded.
//
// It needs no *testing.T: the demo serves it in-process (Start, or Handler
// on a server of its own). Client returns an in-memory HTTP client for
// tests under testing/synctest, where real sockets cannot be used.
package huetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Group is a group of the fake bridge.
type Group struct {
	ID     string
	Name   string
	Type   string // Room, Zone, LightGroup, ...
	Lights []string
}

// Options configure a fake bridge.
type Options struct {
	// Username is the API key the bridge accepts ("" → "test-key").
	Username string
	// Groups are the bridge's groups (nil → Office (1) and Kitchen (2)).
	Groups []Group
	// Gamuts maps light ids to colorgamuttype ("A", "B", "C"); lights of the
	// groups that are not listed get "C".
	Gamuts map[string]string
	// MinInterval is the least time between two accepted group commands;
	// faster ones get HTTP 429. Zero means one second; negative disables.
	MinInterval time.Duration
	// LinkButtonPressed makes pairing succeed at once.
	LinkButtonPressed bool
	// PressAfter presses the link button after that many pairing attempts
	// (0: never by itself).
	PressAfter int
}

// Command is one group action the bridge received.
type Command struct {
	At    time.Time
	Group string // the id in the path
	// Body is the decoded JSON body (nil when it did not decode); Raw the
	// bytes received.
	Body map[string]any
	Raw  string
	// Status is the HTTP status answered; ErrorType the Hue error type of
	// the reply (0 when every item was a success).
	Status    int
	ErrorType int
	// RateLimited: answered 429 because it came too soon after the last
	// command. Injected: answered with a status set by FailCommands.
	RateLimited, Injected bool
}

// Accepted reports whether the bridge carried the command out.
func (c Command) Accepted() bool { return c.Status == http.StatusOK && c.ErrorType == 0 }

// groupState is what a group shows.
type groupState struct {
	Group
	action map[string]any
}

// Bridge is the fake. Its methods are safe for concurrent use.
type Bridge struct {
	handler http.Handler

	mu          sync.Mutex
	users       map[string]bool
	groups      map[string]*groupState
	gamuts      map[string]string
	minInterval time.Duration
	pressed     bool
	pressAfter  int
	pairings    int
	lastCommand time.Time
	commands    []Command
	requests    int
	failNext    []int // HTTP statuses for the next group commands
	delay       time.Duration
	intercept   func(w http.ResponseWriter, r *http.Request) bool
	changed     chan struct{}

	srv *http.Server
	ln  net.Listener
}

// New returns a fake bridge; serve it with Handler, Start or Client.
func New(opts Options) *Bridge {
	user := opts.Username
	if user == "" {
		user = "test-key"
	}
	groups := opts.Groups
	if groups == nil {
		groups = []Group{
			{ID: "1", Name: "Office", Type: "Room", Lights: []string{"1", "2"}},
			{ID: "2", Name: "Kitchen", Type: "Room", Lights: []string{"3"}},
		}
	}
	mi := opts.MinInterval
	if mi == 0 {
		mi = time.Second
	}
	b := &Bridge{
		users:       map[string]bool{user: true},
		groups:      make(map[string]*groupState),
		gamuts:      make(map[string]string),
		minInterval: mi,
		pressed:     opts.LinkButtonPressed,
		pressAfter:  opts.PressAfter,
		changed:     make(chan struct{}),
	}
	for _, g := range groups {
		b.addGroupLocked(g)
	}
	for id, t := range opts.Gamuts {
		b.gamuts[id] = t
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api", b.pair)
	mux.HandleFunc("POST /api/{$}", b.pair)
	mux.HandleFunc("GET /api/{user}/groups", b.listGroups)
	mux.HandleFunc("GET /api/{user}/groups/{id}", b.getGroup)
	mux.HandleFunc("PUT /api/{user}/groups/{id}/action", b.groupAction)
	mux.HandleFunc("GET /api/{user}/lights", b.listLights)
	mux.HandleFunc("/", b.notFound)
	b.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.requests++
		delay, intercept := b.delay, b.intercept
		b.mu.Unlock()
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-r.Context().Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if intercept != nil && intercept(w, r) {
			return
		}
		mux.ServeHTTP(w, r)
	})
	return b
}

func (b *Bridge) addGroupLocked(g Group) {
	b.groups[g.ID] = &groupState{Group: g, action: map[string]any{
		"on": false, "bri": 254.0, "xy": []any{0.3227, 0.329}, "effect": "none", "alert": "none", "colormode": "xy",
	}}
}

// Handler serves the v1 API.
func (b *Bridge) Handler() http.Handler { return b.handler }

// Start serves the bridge on a free loopback port and returns its
// host:port.
func (b *Bridge) Start() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("huetest: listen: %w", err)
	}
	srv := &http.Server{Handler: b.handler, ReadHeaderTimeout: 5 * time.Second}
	b.mu.Lock()
	b.srv, b.ln = srv, ln
	b.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}

// Host returns the host:port Start listens on ("" before Start).
func (b *Bridge) Host() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln == nil {
		return ""
	}
	return b.ln.Addr().String()
}

// Close stops the server Start started.
func (b *Bridge) Close() error {
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// TB is the part of testing.TB that Start needs.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// Start serves a new fake bridge on loopback for the length of a test.
func Start(t TB, opts Options) *Bridge {
	t.Helper()
	b := New(opts)
	if _, err := b.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Client returns an HTTP client that calls the bridge in memory, without a
// socket: tests under testing/synctest use it.
func (b *Bridge) Client() *http.Client {
	return &http.Client{Transport: memTransport{h: b.handler}}
}

type memTransport struct{ h http.Handler }

func (t memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := req.Context().Err(); err != nil {
		return nil, err // as net/http: a request whose context ended is not sent
	}
	in := req.Clone(req.Context())
	if in.Body == nil {
		in.Body = http.NoBody
	}
	in.RequestURI = in.URL.RequestURI()
	rec := &recorder{header: http.Header{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.h.ServeHTTP(rec, in)
	}()
	select {
	case <-done:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	body := rec.body.Bytes()
	return &http.Response{
		Status:        strconv.Itoa(rec.code) + " " + http.StatusText(rec.code),
		StatusCode:    rec.code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rec.header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(p)
}

// PressLinkButton makes the next pairing attempt succeed.
func (b *Bridge) PressLinkButton() {
	b.mu.Lock()
	b.pressed = true
	b.mu.Unlock()
}

// RenameGroup renames a group (as the Hue app does).
func (b *Bridge) RenameGroup(id, name string) {
	b.mu.Lock()
	if g, ok := b.groups[id]; ok {
		g.Name = name
	}
	b.mu.Unlock()
}

// DeleteGroup removes a group.
func (b *Bridge) DeleteGroup(id string) {
	b.mu.Lock()
	delete(b.groups, id)
	b.mu.Unlock()
}

// AddGroup adds (or replaces) a group.
func (b *Bridge) AddGroup(g Group) {
	b.mu.Lock()
	b.addGroupLocked(g)
	b.mu.Unlock()
}

// RevokeUser removes an API key, as deleting it in the Hue app does.
func (b *Bridge) RevokeUser(user string) {
	b.mu.Lock()
	delete(b.users, user)
	b.mu.Unlock()
}

// AddUser accepts another API key.
func (b *Bridge) AddUser(user string) {
	b.mu.Lock()
	b.users[user] = true
	b.mu.Unlock()
}

// FailCommands answers the next group commands with these HTTP statuses,
// one each (e.g. 503, 503, 429).
func (b *Bridge) FailCommands(statuses ...int) {
	b.mu.Lock()
	b.failNext = append(b.failNext, statuses...)
	b.mu.Unlock()
}

// SetDelay holds every request for d before answering (a slow or hung
// bridge); a client that gives up first gets no answer.
func (b *Bridge) SetDelay(d time.Duration) {
	b.mu.Lock()
	b.delay = d
	b.mu.Unlock()
}

// SetIntercept lets a test answer requests itself: when fn returns true the
// request has been answered. nil removes it.
func (b *Bridge) SetIntercept(fn func(w http.ResponseWriter, r *http.Request) bool) {
	b.mu.Lock()
	b.intercept = fn
	b.mu.Unlock()
}

// Commands returns every group command received, in order.
func (b *Bridge) Commands() []Command {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.commands)
}

// RateLimited counts the group commands answered with 429 because they came
// too fast.
func (b *Bridge) RateLimited() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.commands {
		if c.RateLimited {
			n++
		}
	}
	return n
}

// Requests counts every request received.
func (b *Bridge) Requests() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.requests
}

// PairingAttempts counts POST /api requests.
func (b *Bridge) PairingAttempts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pairings
}

// Users returns the accepted API keys.
func (b *Bridge) Users() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for u := range b.users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// GroupAction returns a copy of a group's current action (on, bri, xy, ...).
func (b *Bridge) GroupAction(id string) (map[string]any, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	g, ok := b.groups[id]
	if !ok {
		return nil, false
	}
	out := make(map[string]any, len(g.action))
	for k, v := range g.action {
		out[k] = v
	}
	return out, true
}

// WaitCommands waits until cond holds for the commands received, or ctx
// ends.
func (b *Bridge) WaitCommands(ctx context.Context, cond func([]Command) bool) error {
	for {
		b.mu.Lock()
		ok := cond(b.commands)
		ch := b.changed
		b.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("huetest: wait for commands: %w", ctx.Err())
		case <-ch:
		}
	}
}

func (b *Bridge) signalLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// apiError is the v1 error object.
type apiError struct {
	Type        int    `json:"type"`
	Address     string `json:"address"`
	Description string `json:"description"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErrors(w http.ResponseWriter, errs ...apiError) {
	out := make([]map[string]apiError, len(errs))
	for i, e := range errs {
		out[i] = map[string]apiError{"error": e}
	}
	writeJSON(w, http.StatusOK, out)
}

func (b *Bridge) notFound(w http.ResponseWriter, r *http.Request) {
	addr := strings.TrimPrefix(r.URL.Path, "/api")
	if parts := strings.SplitN(strings.TrimPrefix(addr, "/"), "/", 2); len(parts) == 2 {
		addr = "/" + parts[1]
		b.mu.Lock()
		known := b.users[parts[0]]
		b.mu.Unlock()
		if !known {
			writeErrors(w, apiError{Type: 1, Address: addr, Description: "unauthorized user"})
			return
		}
	}
	writeErrors(w, apiError{Type: 4, Address: addr, Description: "method, " + r.Method + ", not available for resource, " + addr})
}

func (b *Bridge) pair(w http.ResponseWriter, r *http.Request) {
	var body struct {
		DeviceType *string `json:"devicetype"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil {
		writeErrors(w, apiError{Type: 2, Address: "", Description: "body contains invalid json"})
		return
	}
	if body.DeviceType == nil {
		writeErrors(w, apiError{Type: 5, Address: "/", Description: "invalid/missing parameters in body"})
		return
	}
	// A real bridge takes <application name>#<device name>, at most 20
	// and 19 characters.
	app, dev, _ := strings.Cut(*body.DeviceType, "#")
	if len(app) > 20 || len(dev) > 19 {
		writeErrors(w, apiError{Type: 7, Address: "/devicetype", Description: "invalid value, " + *body.DeviceType + ", for parameter, devicetype"})
		return
	}
	b.mu.Lock()
	b.pairings++
	if b.pressAfter > 0 && b.pairings > b.pressAfter {
		b.pressed = true
	}
	pressed := b.pressed
	var user string
	if pressed {
		user = newKey()
		b.users[user] = true
	}
	b.mu.Unlock()
	if !pressed {
		writeErrors(w, apiError{Type: 101, Address: "", Description: "link button not pressed"})
		return
	}
	writeJSON(w, http.StatusOK, []map[string]any{{"success": map[string]string{"username": user}}})
}

func newKey() string {
	var p [20]byte
	_, _ = rand.Read(p[:])
	return hex.EncodeToString(p[:])
}

func (b *Bridge) authorized(w http.ResponseWriter, r *http.Request, addr string) bool {
	b.mu.Lock()
	ok := b.users[r.PathValue("user")]
	b.mu.Unlock()
	if !ok {
		writeErrors(w, apiError{Type: 1, Address: addr, Description: "unauthorized user"})
	}
	return ok
}

func (b *Bridge) groupJSONLocked(g *groupState) map[string]any {
	on, _ := g.action["on"].(bool)
	return map[string]any{
		"name":    g.Name,
		"lights":  nonNil(g.Lights),
		"type":    g.Type,
		"state":   map[string]bool{"all_on": on, "any_on": on},
		"recycle": false,
		"class":   "Office",
		"action":  maps.Clone(g.action),
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (b *Bridge) listGroups(w http.ResponseWriter, r *http.Request) {
	if !b.authorized(w, r, "/groups") {
		return
	}
	b.mu.Lock()
	out := make(map[string]any, len(b.groups))
	for id, g := range b.groups {
		out[id] = b.groupJSONLocked(g)
	}
	b.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (b *Bridge) getGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !b.authorized(w, r, "/groups/"+id) {
		return
	}
	b.mu.Lock()
	g, ok := b.groups[id]
	var out map[string]any
	if ok {
		out = b.groupJSONLocked(g)
	}
	b.mu.Unlock()
	if !ok {
		writeErrors(w, apiError{Type: 3, Address: "/groups/" + id, Description: "resource, /groups/" + id + ", not available"})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (b *Bridge) listLights(w http.ResponseWriter, r *http.Request) {
	if !b.authorized(w, r, "/lights") {
		return
	}
	b.mu.Lock()
	out := map[string]any{}
	for _, g := range b.groups {
		for _, l := range g.Lights {
			gamut := b.gamuts[l]
			if gamut == "" {
				gamut = "C"
			}
			out[l] = map[string]any{
				"name": "Light " + l,
				"type": "Extended color light",
				"capabilities": map[string]any{
					"control": map[string]any{"colorgamuttype": gamut},
				},
			}
		}
	}
	b.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// groupAction carries out PUT /groups/<id>/action and records it.
func (b *Bridge) groupAction(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	id := r.PathValue("id")
	addr := "/groups/" + id + "/action"
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	cmd := Command{At: now, Group: id, Raw: string(raw), Status: http.StatusOK}
	var body map[string]any
	if json.Unmarshal(raw, &body) == nil {
		cmd.Body = body
	}
	defer func() {
		b.commands = append(b.commands, cmd)
		b.signalLocked()
	}()

	if len(b.failNext) > 0 {
		cmd.Status = b.failNext[0]
		b.failNext = b.failNext[1:]
		cmd.Injected = true
		b.lastCommand = now
		w.WriteHeader(cmd.Status)
		_, _ = io.WriteString(w, http.StatusText(cmd.Status))
		return
	}
	if b.minInterval > 0 && !b.lastCommand.IsZero() && now.Sub(b.lastCommand) < b.minInterval {
		cmd.Status = http.StatusTooManyRequests
		cmd.RateLimited = true
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, "Too Many Requests")
		return
	}
	// Every command that is not refused for rate counts for the next one.
	b.lastCommand = now
	if !b.users[r.PathValue("user")] {
		cmd.ErrorType = 1
		writeErrors(w, apiError{Type: 1, Address: addr, Description: "unauthorized user"})
		return
	}
	g, ok := b.groups[id]
	if !ok {
		cmd.ErrorType = 3
		writeErrors(w, apiError{Type: 3, Address: "/groups/" + id, Description: "resource, /groups/" + id + ", not available"})
		return
	}
	if body == nil {
		cmd.ErrorType = 2
		writeErrors(w, apiError{Type: 2, Address: addr, Description: "body contains invalid json"})
		return
	}
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var items []map[string]any
	var errs []apiError
	for _, k := range keys {
		v := body[k]
		if err := checkParam(k, v); err != nil {
			var ae apiError
			if errors.As(err, &ae) {
				ae.Address = addr + "/" + k
				errs = append(errs, ae)
			}
			continue
		}
		g.action[k] = v
		if k == "xy" {
			g.action["colormode"] = "xy"
		}
		items = append(items, map[string]any{"success": map[string]any{addr + "/" + k: v}})
	}
	for _, e := range errs {
		items = append(items, map[string]any{"error": e})
	}
	if len(errs) > 0 {
		cmd.ErrorType = errs[0].Type
	}
	if len(items) == 0 {
		cmd.ErrorType = 5
		writeErrors(w, apiError{Type: 5, Address: addr, Description: "invalid/missing parameters in body"})
		return
	}
	writeJSON(w, http.StatusOK, items)
}

func (e apiError) Error() string { return e.Description }

// checkParam validates one action parameter as a bridge does.
func checkParam(k string, v any) error {
	invalid := apiError{Type: 7, Description: fmt.Sprintf("invalid value, %v, for parameter, %s", v, k)}
	num := func(lo, hi float64) error {
		f, ok := v.(float64)
		if !ok || f < lo || f > hi || f != float64(int64(f)) {
			return invalid
		}
		return nil
	}
	switch k {
	case "on":
		if _, ok := v.(bool); !ok {
			return invalid
		}
	case "bri":
		return num(1, 254)
	case "hue":
		return num(0, 65535)
	case "sat":
		return num(0, 254)
	case "ct":
		return num(153, 500)
	case "transitiontime":
		return num(0, 65535)
	case "xy":
		a, ok := v.([]any)
		if !ok || len(a) != 2 {
			return invalid
		}
		for _, c := range a {
			f, ok := c.(float64)
			if !ok || f < 0 || f > 1 {
				return invalid
			}
		}
	case "effect":
		if v != "none" && v != "colorloop" {
			return invalid
		}
	case "alert":
		if v != "none" && v != "select" && v != "lselect" {
			return invalid
		}
	case "scene":
		if _, ok := v.(string); !ok {
			return invalid
		}
	default:
		return apiError{Type: 6, Description: "parameter, " + k + ", not available"}
	}
	return nil
}
