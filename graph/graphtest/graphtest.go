// Package graphtest is a fake Microsoft Graph presence API over TLS, for
// tests and the demo: presence set per person at run time (each change gets
// a higher sequenceNumber), an answer latency, scripted 429/503 replies with
// Retry-After, and request counts per tenant.
//
// It keeps Graph's documented limits: a batch read carries 1 to 650 ids
// (else 400), and a tenant making more than 1,500 presence requests in any
// 30 s (Options.RateLimit, RateWindow) gets 429 with Retry-After until its
// window has room again. Those 429s are counted apart from the scripted
// ones (RateLimited): a poller that keeps the limits causes none.
//
// Who a bearer token belongs to is the caller's business: Options.Authorize
// maps a token to a person and tenant (internal/entratest's
// Server.AccessTokenOwner does that for the tokens it issued).
//
// It also serves change-notification subscriptions on presence, as Graph
// does (see subscriptions.go): it validates a webhook before it creates a
// subscription, expires subscriptions, sends rich notifications encrypted
// to the subscription's certificate after a delay, holds and releases them
// in another order or twice on request, and sends reauthorizationRequired.
package graphtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// Presence is what the fake answers for one person.
type Presence struct {
	Availability  string // as Graph spells it ("Busy"); any text, to test odd values
	Activity      string
	StatusMessage string
	OutOfOffice   bool
}

// Options configure a Server.
type Options struct {
	// Authorize maps a bearer token to its person and tenant; false answers
	// 401. An app token (client credentials) has no person: "" and its
	// tenant. Nil accepts a token of the form "<objectId>.<tenantId>", and
	// "app.<tenantId>" as an app token.
	Authorize func(token string) (user presence.UserID, tenant string, ok bool)
	// Latency delays every answer.
	Latency time.Duration
	// NotificationDelay is how long after a presence change its change
	// notification is sent: 0 means 500 ms (Graph's typical delay), a
	// negative value sends it at once.
	NotificationDelay time.Duration
	// ValidationTimeout is how long a webhook has to answer a validation
	// request; default 10 s, as Graph.
	ValidationTimeout time.Duration
	// ValidationToken, when set, mints the validationTokens of rich
	// notifications for a tenant (entratest's ChangeNotificationToken).
	ValidationToken func(tenant string) string
	// WriteLimit is how many subscription writes a tenant may make per 20 s
	// before the fake answers 429; default 1,000, as Graph.
	WriteLimit int
	// WebhookClient makes the calls to notification URLs; default a client
	// with a 10 s timeout.
	WebhookClient *http.Client
	// Scopes, when set, tells the permissions a token was granted
	// (internal/entratest's Server.AccessTokenScopes): then /me/presence
	// needs Presence.Read or Presence.Read.All, and another person's
	// presence (one user or the batch) Presence.Read.All, else 403.
	Scopes func(token string) ([]string, bool)
	// RateLimit requests per RateWindow per tenant; defaults 1,500 and
	// 30 s (Graph's presence limit). Negative: no limit.
	RateLimit  int
	RateWindow time.Duration
}

type throttle struct {
	n          int
	status     int
	retryAfter time.Duration
}

type person struct {
	p   Presence
	seq string
	// rendered is the person's JSON as Graph answers it, made once per
	// change: a batch of 650 is then a concatenation, so that the fake's
	// own encoding does not weigh on a load run.
	rendered []byte
}

// Server is a running fake.
type Server struct {
	srv       *httptest.Server
	authorize func(string) (presence.UserID, string, bool)
	scopes    func(string) ([]string, bool)

	mu        sync.Mutex
	latency   time.Duration
	people    map[presence.UserID]*person
	seq       int64
	throttles map[string]*throttle // by tenant
	requests  map[string]int       // by tenant
	total     int

	notify   notifier
	reject   map[presence.UserID]int // 401s still to answer, by token owner
	limit    int
	window   time.Duration
	recent   map[string][]time.Time // by tenant: request times inside the window
	limited  map[string]int         // by tenant: 429s for going over the limit
	batches  map[string]int         // by tenant: batch reads answered
	batchIDs int
}

// New starts a fake on a loopback port with a self-signed certificate;
// Client trusts it. Close stops it.
func New(o Options) *Server {
	s := &Server{
		authorize: o.Authorize,
		scopes:    o.Scopes,
		latency:   o.Latency,
		people:    make(map[presence.UserID]*person),
		seq:       638680000000000000,
		throttles: make(map[string]*throttle),
		requests:  make(map[string]int),
		reject:    make(map[presence.UserID]int),
		limit:     o.RateLimit,
		window:    o.RateWindow,
		recent:    make(map[string][]time.Time),
		limited:   make(map[string]int),
		batches:   make(map[string]int),
	}
	if s.limit == 0 {
		s.limit = 1500
	}
	if s.window <= 0 {
		s.window = 30 * time.Second
	}
	if s.authorize == nil {
		s.authorize = func(tok string) (presence.UserID, string, bool) {
			oid, tid, ok := strings.Cut(tok, ".")
			if oid == "app" {
				return "", tid, ok && tid != ""
			}
			id, err := presence.ParseUserID(oid)
			return id, tid, ok && err == nil
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1.0/me/presence", s.me)
	mux.HandleFunc("GET /v1.0/users/{id}/presence", s.user)
	mux.HandleFunc("POST /v1.0/communications/getPresencesByUserId", s.batch)
	s.notify.init(o)
	mux.HandleFunc("POST /v1.0/subscriptions", s.createSubscription)
	mux.HandleFunc("PATCH /v1.0/subscriptions/{id}", s.renewSubscription)
	mux.HandleFunc("POST /v1.0/subscriptions/{id}/reauthorize", s.reauthorizeSubscription)
	mux.HandleFunc("DELETE /v1.0/subscriptions/{id}", s.deleteSubscription)
	s.srv = httptest.NewTLSServer(mux)
	return s
}

// URL is the endpoint to configure (graph.endpoint).
func (s *Server) URL() string { return s.srv.URL }

// Client is an HTTP client that trusts the fake's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Close stops the fake (and its notifications still to be sent).
func (s *Server) Close() {
	s.notify.close()
	s.srv.Close()
}

// SetPresence changes a person's presence; it gets the next sequenceNumber.
func (s *Server) SetPresence(id presence.UserID, p Presence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	id = presence.CanonicalUserID(string(id))
	pp := &person{p: p, seq: strconv.FormatInt(s.seq, 10)}
	pp.rendered, _ = json.Marshal(renderPerson(id, pp))
	s.people[id] = pp
	s.changed(id)
}

// SetLatency changes the answer latency.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// Throttle makes the next n requests of tenant answer status (429 or 503)
// with Retry-After in whole seconds (none when retryAfter is 0).
func (s *Server) Throttle(tenant string, n, status int, retryAfter time.Duration) {
	s.mu.Lock()
	s.throttles[strings.ToLower(tenant)] = &throttle{n: n, status: status, retryAfter: retryAfter}
	s.mu.Unlock()
}

// Requests counts the requests made for tenant (throttled ones included).
func (s *Server) Requests(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[strings.ToLower(tenant)]
}

// RejectTokens makes the next n requests made with any token of the person
// answer 401, though the token is valid (Graph revoking a session, a
// continuous access evaluation event).
func (s *Server) RejectTokens(id presence.UserID, n int) {
	s.mu.Lock()
	s.reject[presence.CanonicalUserID(string(id))] = n
	s.mu.Unlock()
}

// RateLimited counts the 429s the tenant got for going over the rate
// limit (not the scripted ones); "" counts every tenant's.
func (s *Server) RateLimited(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tenant != "" {
		return s.limited[strings.ToLower(tenant)]
	}
	n := 0
	for _, v := range s.limited {
		n += v
	}
	return n
}

// Batches counts the batch reads answered for tenant ("" for every
// tenant), and BatchIDs the ids they carried in all.
func (s *Server) Batches(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tenant != "" {
		return s.batches[strings.ToLower(tenant)]
	}
	n := 0
	for _, v := range s.batches {
		n += v
	}
	return n
}

// BatchIDs counts the ids of every batch read answered.
func (s *Server) BatchIDs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.batchIDs
}

// Total counts every request, unauthorised ones included.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// begin authenticates a request and applies latency and throttling; it
// returns false when it has answered already.
func (s *Server) begin(w http.ResponseWriter, r *http.Request) (presence.UserID, string, bool) {
	s.mu.Lock()
	s.total++
	latency := s.latency
	s.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return "", "", false
		}
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	user, tenant, valid := s.authorize(tok)
	if !ok || !valid {
		writeError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token validation failure.")
		return "", "", false
	}
	key := strings.ToLower(tenant)
	s.mu.Lock()
	if s.reject[user] > 0 {
		s.reject[user]--
		s.mu.Unlock()
		writeError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
		return "", "", false
	}
	s.requests[key]++
	if wait := s.overLimitLocked(key, time.Now()); wait > 0 {
		s.limited[key]++
		s.mu.Unlock()
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeError(w, http.StatusTooManyRequests, "TooManyRequests", "Too many requests: the tenant is over its presence request limit.")
		return "", "", false
	}
	th := s.throttles[key]
	if th != nil && th.n > 0 {
		th.n--
		s.mu.Unlock()
		if th.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((th.retryAfter+time.Second-1)/time.Second)))
		}
		writeError(w, th.status, "TooManyRequests", "Too many requests.")
		return "", "", false
	}
	s.mu.Unlock()
	return user, tenant, true
}

// permitted answers 403 unless the token has one of the scopes (when the
// fake knows scopes at all).
func (s *Server) permitted(w http.ResponseWriter, r *http.Request, scopes ...string) bool {
	if s.scopes == nil {
		return true
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	granted, _ := s.scopes(tok)
	for _, g := range granted {
		if i := strings.LastIndexByte(g, '/'); i >= 0 {
			g = g[i+1:]
		}
		for _, want := range scopes {
			if strings.EqualFold(g, want) {
				return true
			}
		}
	}
	writeError(w, http.StatusForbidden, "Forbidden", "Insufficient privileges to complete the operation.")
	return false
}

// overLimitLocked records a request of the tenant at now, or says how long
// until the window has room for it.
func (s *Server) overLimitLocked(key string, now time.Time) time.Duration {
	if s.limit < 0 {
		return 0
	}
	times := s.recent[key]
	drop := 0
	for drop < len(times) && now.Sub(times[drop]) >= s.window {
		drop++
	}
	times = times[drop:]
	if len(times) >= s.limit {
		s.recent[key] = times
		return times[0].Add(s.window).Sub(now)
	}
	s.recent[key] = append(times, now)
	return 0
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	user, _, ok := s.begin(w, r)
	if !ok || !s.permitted(w, r, "Presence.Read", "Presence.Read.All") {
		return
	}
	if user == "" {
		writeError(w, http.StatusBadRequest, "BadRequest", "/me request is only valid with delegated authentication flow.")
		return
	}
	writeJSON(w, s.render(user))
}

func (s *Server) user(w http.ResponseWriter, r *http.Request) {
	owner, _, ok := s.begin(w, r)
	if !ok {
		return
	}
	id, err := presence.ParseUserID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", "Invalid user id.")
		return
	}
	if id == owner && !s.permitted(w, r, "Presence.Read", "Presence.Read.All") || id != owner && !s.permitted(w, r, "Presence.Read.All") {
		return
	}
	writeJSON(w, s.render(id))
}

func (s *Server) batch(w http.ResponseWriter, r *http.Request) {
	_, tenant, ok := s.begin(w, r)
	if !ok || !s.permitted(w, r, "Presence.Read.All") {
		return
	}
	var req struct {
		IDs []string `json:"ids"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || len(req.IDs) == 0 || len(req.IDs) > 650 {
		writeError(w, http.StatusBadRequest, "BadRequest", "Expected 1 to 650 ids.")
		return
	}
	s.mu.Lock()
	s.batches[strings.ToLower(tenant)]++
	s.batchIDs += len(req.IDs)
	s.mu.Unlock()
	var b bytes.Buffer
	b.WriteString(`{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.presence)","value":[`)
	n := 0
	for _, raw := range req.IDs {
		id, err := presence.ParseUserID(raw)
		if err != nil {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		s.mu.Lock()
		p := s.people[id]
		s.mu.Unlock()
		if p != nil {
			b.Write(p.rendered)
		} else {
			enc, _ := json.Marshal(renderPerson(id, nil))
			b.Write(enc)
		}
	}
	b.WriteString("]}\n")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b.Bytes())
}

func (s *Server) render(id presence.UserID) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renderLocked(id)
}

// renderLocked is render with s.mu held.
func (s *Server) renderLocked(id presence.UserID) map[string]any {
	p := s.people[id]
	return renderPerson(id, p)
}

func renderPerson(id presence.UserID, p *person) map[string]any {
	if p == nil {
		return map[string]any{"id": string(id), "availability": "PresenceUnknown", "activity": "PresenceUnknown"}
	}
	return map[string]any{
		"@odata.context":      "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.presence",
		"id":                  string(id),
		"availability":        p.p.Availability,
		"activity":            p.p.Activity,
		"sequenceNumber":      p.seq,
		"statusMessage":       map[string]any{"message": map[string]any{"content": p.p.StatusMessage, "contentType": "text"}},
		"outOfOfficeSettings": map[string]any{"isOutOfOffice": p.p.OutOfOffice, "message": nil},
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
}
