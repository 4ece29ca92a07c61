package graphtest

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// What the fake assumes where Graph's documentation is silent:
//
//   - A person may hold one presence subscription per app ("a single user
//     can create one presence subscription per unique application"): a
//     second create while the first lives is answered 403.
//   - Validation: the notification URL (and the lifecycle URL, once if it
//     is the same) gets POST ?validationToken=<text with spaces and
//     colons>; the answer must be 200, text/plain, the token exactly,
//     within ValidationTimeout. Otherwise the create is answered 400.
//   - After reauthorizationRequired, change notifications of that
//     subscription are dropped until it is renewed or reauthorized (Graph
//     "pauses" them; changes meanwhile are lost).
//   - A delivery answered non-2xx (or not at all) is retried twice, 1 s
//     apart (Graph retries for up to 4 hours).

// EncryptedContent is a rich notification's encryptedContent.
type EncryptedContent struct {
	Data                            string `json:"data"`
	DataSignature                   string `json:"dataSignature"`
	DataKey                         string `json:"dataKey"`
	EncryptionCertificateID         string `json:"encryptionCertificateId"`
	EncryptionCertificateThumbprint string `json:"encryptionCertificateThumbprint"`
}

// Encrypt does what Graph does to the resource data of a rich notification
// for a subscription whose encryptionCertificate is certificate (DER): a
// fresh 32-byte key encrypts plain with AES-256-CBC, PKCS #7 padding and
// the key's first 16 bytes as IV; HMAC-SHA256 under the key signs the
// ciphertext; RSA-OAEP (SHA-1) encrypts the key to the certificate.
func Encrypt(certificate []byte, certificateID string, plain []byte) (EncryptedContent, error) {
	cert, err := x509.ParseCertificate(certificate)
	if err != nil {
		return EncryptedContent{}, fmt.Errorf("graphtest: certificate: %w", err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return EncryptedContent{}, fmt.Errorf("graphtest: the certificate's key is not RSA")
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	block, _ := aes.NewCipher(key)
	n := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(slices.Clone(plain), bytes.Repeat([]byte{byte(n)}, n)...)
	data := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, key[:aes.BlockSize]).CryptBlocks(data, padded)
	mac := hmac.New(sha256.New, key)
	mac.Write(data)
	wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, key, nil)
	if err != nil {
		return EncryptedContent{}, fmt.Errorf("graphtest: encrypt the key: %w", err)
	}
	thumb := sha1.Sum(certificate)
	return EncryptedContent{
		Data:                            base64.StdEncoding.EncodeToString(data),
		DataSignature:                   base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		DataKey:                         base64.StdEncoding.EncodeToString(wrapped),
		EncryptionCertificateID:         certificateID,
		EncryptionCertificateThumbprint: strings.ToUpper(hex.EncodeToString(thumb[:])),
	}, nil
}

// Subscription is what the fake knows of one subscription.
type Subscription struct {
	ID              string
	Resource        string
	User            presence.UserID // whose presence
	Creator         presence.UserID // whose token created it
	Tenant          string
	NotificationURL string
	LifecycleURL    string
	ClientState     string
	ExpiresAt       time.Time
	IncludeData     bool
	CertificateID   string
	// Paused is set by RequireReauthorization until a renew or reauthorize.
	Paused bool

	cert []byte
}

// Delivery is one POST of notifications the fake made.
type Delivery struct {
	URL    string
	Items  int
	Status int // 0: no answer
	Took   time.Duration
	Err    string
}

// Item is one notification the fake built (Hold keeps them).
type Item struct {
	url    string
	tenant string
	body   map[string]any
}

// Release says how held notifications are sent.
type Release struct {
	// Reverse sends them newest first.
	Reverse bool
	// Duplicate sends each twice.
	Duplicate bool
	// OneBatch sends them in one request; otherwise one request each, in
	// order.
	OneBatch bool
}

// notifier is the fake's subscription side.
type notifier struct {
	delay      time.Duration
	validation time.Duration
	token      func(string) string
	writeLimit int
	client     *http.Client

	mu       sync.Mutex
	subs     map[string]*Subscription
	writes   map[string]int // by kind
	writeLog map[string][]time.Time
	hold     bool
	held     []Item
	dropped  int
	log      []Delivery
	closed   bool
	wg       sync.WaitGroup
	done     chan struct{} // closed by close
}

func (n *notifier) init(o Options) {
	n.delay = o.NotificationDelay
	if n.delay == 0 {
		n.delay = 500 * time.Millisecond
	}
	n.validation = o.ValidationTimeout
	if n.validation <= 0 {
		n.validation = 10 * time.Second
	}
	n.token = o.ValidationToken
	n.writeLimit = o.WriteLimit
	if n.writeLimit <= 0 {
		n.writeLimit = 1000
	}
	n.client = o.WebhookClient
	if n.client == nil {
		n.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	}
	n.subs = map[string]*Subscription{}
	n.writes = map[string]int{}
	n.writeLog = map[string][]time.Time{}
	n.done = make(chan struct{})
}

// context is canceled when the fake closes.
func (n *notifier) context() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (n *notifier) close() {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.done)
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// live returns the subscription if it exists and has not expired (an
// expired one is forgotten).
func (n *notifier) live(id string) *Subscription {
	sub := n.subs[id]
	if sub != nil && !time.Now().Before(sub.ExpiresAt) {
		delete(n.subs, id)
		return nil
	}
	return sub
}

// holds tells whether the person created a presence subscription that
// lives (n.mu held).
func (n *notifier) holds(creator presence.UserID) bool {
	for id := range n.subs {
		if other := n.live(id); other != nil && other.Creator == creator {
			return true
		}
	}
	return false
}

// Subscriptions lists the live subscriptions.
func (s *Server) Subscriptions() []Subscription {
	n := &s.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Subscription
	for id := range n.subs {
		if sub := n.live(id); sub != nil {
			out = append(out, *sub)
		}
	}
	slices.SortFunc(out, func(a, b Subscription) int { return strings.Compare(string(a.User), string(b.User)) })
	return out
}

// SubscriptionOf returns the live subscription on a person's presence.
func (s *Server) SubscriptionOf(id presence.UserID) (Subscription, bool) {
	for _, sub := range s.Subscriptions() {
		if sub.User == presence.CanonicalUserID(string(id)) {
			return sub, true
		}
	}
	return Subscription{}, false
}

// Writes counts subscription writes by kind: "create", "renew",
// "reauthorize", "delete" (refused ones included).
func (s *Server) Writes(kind string) int {
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	return s.notify.writes[kind]
}

// Deliveries lists the notification requests made so far.
func (s *Server) Deliveries() []Delivery {
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	return slices.Clone(s.notify.log)
}

// Dropped counts change notifications not sent because their subscription
// waited for reauthorization.
func (s *Server) Dropped() int {
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	return s.notify.dropped
}

// Expire makes a subscription lapse now, as if its expiry had passed.
func (s *Server) Expire(id string) {
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	delete(s.notify.subs, id)
}

// Hold keeps the change notifications made from now on instead of sending
// them, until ReleaseHeld.
func (s *Server) Hold() {
	s.notify.mu.Lock()
	s.notify.hold = true
	s.notify.mu.Unlock()
}

// ReleaseHeld stops holding and sends what was held as r says, returning
// once every request was answered.
func (s *Server) ReleaseHeld(ctx context.Context, r Release) {
	n := &s.notify
	n.mu.Lock()
	items := n.held
	n.held, n.hold = nil, false
	n.mu.Unlock()
	if r.Reverse {
		slices.Reverse(items)
	}
	if r.Duplicate {
		var twice []Item
		for _, it := range items {
			twice = append(twice, it, it)
		}
		items = twice
	}
	if r.OneBatch {
		byURL := map[string][]Item{}
		var urls []string
		for _, it := range items {
			if _, ok := byURL[it.url]; !ok {
				urls = append(urls, it.url)
			}
			byURL[it.url] = append(byURL[it.url], it)
		}
		for _, u := range urls {
			n.post(ctx, u, byURL[u])
		}
		return
	}
	for _, it := range items {
		n.post(ctx, it.url, []Item{it})
	}
}

// RequireReauthorization sends the subscription's lifecycle URL a
// reauthorizationRequired notification and pauses its change
// notifications until it is renewed or reauthorized. It returns once the
// notification was answered.
func (s *Server) RequireReauthorization(ctx context.Context, id string) error {
	n := &s.notify
	n.mu.Lock()
	sub := n.live(id)
	if sub == nil {
		n.mu.Unlock()
		return fmt.Errorf("graphtest: no subscription %s", id)
	}
	sub.Paused = true
	it := Item{url: sub.LifecycleURL, tenant: sub.Tenant, body: map[string]any{
		"subscriptionId": sub.ID, "subscriptionExpirationDateTime": sub.ExpiresAt.UTC().Format(time.RFC3339Nano),
		"tenantId": sub.Tenant, "clientState": sub.ClientState, "lifecycleEvent": "reauthorizationRequired",
	}}
	n.mu.Unlock()
	if d := n.post(ctx, it.url, []Item{it}); d.Status/100 != 2 {
		return fmt.Errorf("graphtest: lifecycle notification answered %d %s", d.Status, d.Err)
	}
	return nil
}

// changed is called by SetPresence (s.mu held): every live subscription on
// the person gets a notification after the delay.
func (s *Server) changed(id presence.UserID) {
	n := &s.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	for sid := range n.subs {
		sub := n.live(sid)
		if sub == nil || sub.User != id {
			continue
		}
		if sub.Paused {
			n.dropped++
			continue
		}
		it, err := s.item(sub)
		if err != nil {
			continue
		}
		if n.hold {
			n.held = append(n.held, it)
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := n.context()
			defer cancel()
			if n.delay > 0 {
				t := time.NewTimer(n.delay)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
			n.post(ctx, it.url, []Item{it})
		}()
	}
}

// item builds a change notification of sub (s.mu held).
func (s *Server) item(sub *Subscription) (Item, error) {
	ref := "communications/presences('" + string(sub.User) + "')"
	body := map[string]any{
		"id": newID(), "subscriptionId": sub.ID, "subscriptionExpirationDateTime": sub.ExpiresAt.UTC().Format(time.RFC3339Nano),
		"changeType": "updated", "clientState": sub.ClientState, "resource": ref, "tenantId": sub.Tenant,
		"resourceData": map[string]any{"@odata.type": "#Microsoft.Graph.presence", "@odata.id": ref, "id": string(sub.User)},
	}
	if sub.IncludeData {
		plain, err := json.Marshal(s.renderLocked(sub.User))
		if err != nil {
			return Item{}, err
		}
		enc, err := Encrypt(sub.cert, sub.CertificateID, plain)
		if err != nil {
			return Item{}, err
		}
		body["encryptedContent"] = enc
	}
	return Item{url: sub.NotificationURL, tenant: sub.Tenant, body: body}, nil
}

// post sends items in one request, retrying twice on failure.
func (n *notifier) post(ctx context.Context, u string, items []Item) Delivery {
	coll := map[string]any{}
	var value []map[string]any
	tenants := map[string]bool{}
	var tokens []string
	for _, it := range items {
		value = append(value, it.body)
		if _, rich := it.body["encryptedContent"]; rich && n.token != nil && !tenants[it.tenant] {
			tenants[it.tenant] = true
			tokens = append(tokens, n.token(it.tenant))
		}
	}
	coll["value"] = value
	if tokens != nil {
		coll["validationTokens"] = tokens
	}
	payload, _ := json.Marshal(coll)
	var d Delivery
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return d
			}
		}
		d = Delivery{URL: u, Items: len(items)}
		began := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(payload))
		if err != nil {
			d.Err = err.Error()
			return d
		}
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := n.client.Do(req)
		d.Took = time.Since(began)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			d.Status = resp.StatusCode
		} else {
			d.Err = err.Error()
		}
		n.mu.Lock()
		n.log = append(n.log, d)
		n.mu.Unlock()
		if d.Status/100 == 2 || ctx.Err() != nil {
			return d
		}
	}
	return d
}

// validate does Graph's handshake with a webhook URL.
func (n *notifier) validate(ctx context.Context, target string) error {
	token := "Validation: Testing client application reachability for subscription Request-Id: " + newID()
	ctx, cancel := context.WithTimeout(ctx, n.validation)
	defer cancel()
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+sep+"validationToken="+url.QueryEscape(token), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := n.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("the validation request timed out after %s", n.validation)
		}
		return fmt.Errorf("the validation request failed: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case err != nil:
		return fmt.Errorf("the validation answer could not be read: %v", err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("the notification endpoint answered %d, it must respond with 200 OK to the validation request", resp.StatusCode)
	case !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"):
		return fmt.Errorf("the validation answer is %q, it must be text/plain", resp.Header.Get("Content-Type"))
	case string(body) != token:
		return fmt.Errorf("the validation answer is not the validation token")
	}
	return nil
}

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

func (sub *Subscription) wire() wireSubscription {
	return wireSubscription{
		ID: sub.ID, Resource: sub.Resource, ChangeType: "updated", NotificationURL: sub.NotificationURL,
		LifecycleNotificationURL: sub.LifecycleURL, ExpirationDateTime: sub.ExpiresAt.UTC().Format(time.RFC3339Nano),
		ClientState: sub.ClientState, IncludeResourceData: sub.IncludeData, EncryptionCertificateID: sub.CertificateID,
	}
}

// write authenticates a subscription write, counts it and applies the
// tenant's write limit; false when it has answered already.
func (s *Server) write(w http.ResponseWriter, r *http.Request, kind string) (presence.UserID, string, bool) {
	user, tenant, ok := s.begin(w, r)
	if !ok {
		return "", "", false
	}
	n := &s.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	n.writes[kind]++
	key := strings.ToLower(tenant)
	now := time.Now()
	log := n.writeLog[key]
	for len(log) > 0 && now.Sub(log[0]) >= 20*time.Second {
		log = log[1:]
	}
	if len(log) >= n.writeLimit {
		n.writeLog[key] = log
		w.Header().Set("Retry-After", "20")
		writeError(w, http.StatusTooManyRequests, "TooManyRequests", "Too many subscription writes.")
		return "", "", false
	}
	n.writeLog[key] = append(log, now)
	return user, tenant, true
}

func (s *Server) createSubscription(w http.ResponseWriter, r *http.Request) {
	creator, tenant, ok := s.write(w, r, "create")
	if !ok {
		return
	}
	var in wireSubscription
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", "The body is not a subscription.")
		return
	}
	sub, msg := s.checkNew(in)
	if msg != "" {
		writeError(w, http.StatusBadRequest, "InvalidRequest", msg)
		return
	}
	sub.Creator, sub.Tenant = creator, tenant
	n := &s.notify
	n.mu.Lock()
	taken := n.holds(creator)
	n.mu.Unlock()
	if taken {
		writeError(w, http.StatusForbidden, "ExtensionError", "A user can create one presence subscription per application.")
		return
	}
	urls := []string{sub.NotificationURL}
	if sub.LifecycleURL != "" && sub.LifecycleURL != sub.NotificationURL {
		urls = append(urls, sub.LifecycleURL)
	}
	for _, u := range urls {
		if err := n.validate(r.Context(), u); err != nil {
			writeError(w, http.StatusBadRequest, "InvalidRequest", "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request: "+err.Error())
			return
		}
	}
	n.mu.Lock()
	if n.holds(creator) {
		n.mu.Unlock()
		writeError(w, http.StatusForbidden, "ExtensionError", "A user can create one presence subscription per application.")
		return
	}
	sub.ID = newID()
	n.subs[sub.ID] = sub
	n.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(sub.wire())
}

// checkNew validates a create's body as Graph does for presence.
func (s *Server) checkNew(in wireSubscription) (*Subscription, string) {
	res := strings.TrimPrefix(in.Resource, "/")
	raw, ok := strings.CutPrefix(res, "communications/presences/")
	if !ok {
		return nil, "Only communications/presences/{id} is supported by this fake."
	}
	user, err := presence.ParseUserID(raw)
	if err != nil {
		return nil, "Invalid presence id."
	}
	if in.ChangeType != "updated" {
		return nil, "changeType must be updated for presence."
	}
	exp, err := time.Parse(time.RFC3339Nano, in.ExpirationDateTime)
	if err != nil {
		return nil, "Invalid expirationDateTime."
	}
	if msg := checkExpiry(exp); msg != "" {
		return nil, msg
	}
	if msg := checkURL(in.NotificationURL); msg != "" {
		return nil, msg
	}
	if in.LifecycleNotificationURL != "" {
		if msg := checkURL(in.LifecycleNotificationURL); msg != "" {
			return nil, msg
		}
	}
	if len(in.ClientState) > 128 {
		return nil, "clientState is over 128 characters."
	}
	sub := &Subscription{Resource: res, User: user, NotificationURL: in.NotificationURL, LifecycleURL: in.LifecycleNotificationURL,
		ClientState: in.ClientState, ExpiresAt: exp, IncludeData: in.IncludeResourceData}
	if in.IncludeResourceData {
		cert, msg := checkCertificate(in.EncryptionCertificate, in.EncryptionCertificateID)
		if msg != "" {
			return nil, msg
		}
		sub.cert, sub.CertificateID = cert, in.EncryptionCertificateID
	}
	return sub, ""
}

func checkExpiry(exp time.Time) string {
	now := time.Now()
	switch {
	case !exp.After(now):
		return "expirationDateTime must be in the future."
	case exp.After(now.Add(time.Hour + time.Minute)):
		return "expirationDateTime exceeds the maximum lifetime of a presence subscription (60 minutes)."
	}
	return ""
}

func checkURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "Invalid notification URL."
	}
	if p.Scheme == "https" {
		return ""
	}
	if ip := net.ParseIP(p.Hostname()); p.Scheme == "http" && (p.Hostname() == "localhost" || ip != nil && ip.IsLoopback()) {
		return "" // the fake's one leniency: plain http to loopback (tests)
	}
	return "The notification URL must be https."
}

func checkCertificate(b64, id string) ([]byte, string) {
	if id == "" || len(id) > 128 {
		return nil, "encryptionCertificateId is required (at most 128 characters) with includeResourceData."
	}
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || b64 == "" {
		return nil, "encryptionCertificate must be the base64 of the certificate."
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "encryptionCertificate is not an X.509 certificate."
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() < 2048 || pub.N.BitLen() > 4096 {
		return nil, "The encryption certificate's key must be RSA of 2048 to 4096 bits."
	}
	return der, ""
}

func (s *Server) renewSubscription(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.write(w, r, "renew"); !ok {
		return
	}
	var in wireSubscription
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", "The body is not a subscription.")
		return
	}
	n := &s.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	sub := n.live(r.PathValue("id"))
	if sub == nil {
		writeError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		return
	}
	if in.ExpirationDateTime != "" {
		exp, err := time.Parse(time.RFC3339Nano, in.ExpirationDateTime)
		if err != nil {
			writeError(w, http.StatusBadRequest, "InvalidRequest", "Invalid expirationDateTime.")
			return
		}
		if msg := checkExpiry(exp); msg != "" {
			writeError(w, http.StatusBadRequest, "InvalidRequest", msg)
			return
		}
		sub.ExpiresAt = exp
	}
	if in.EncryptionCertificate != "" || in.EncryptionCertificateID != "" {
		cert, msg := checkCertificate(in.EncryptionCertificate, in.EncryptionCertificateID)
		if msg != "" {
			writeError(w, http.StatusBadRequest, "InvalidRequest", msg)
			return
		}
		sub.cert, sub.CertificateID = cert, in.EncryptionCertificateID
	}
	sub.Paused = false
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(sub.wire())
}

func (s *Server) reauthorizeSubscription(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.write(w, r, "reauthorize"); !ok {
		return
	}
	n := &s.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	sub := n.live(r.PathValue("id"))
	if sub == nil {
		writeError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		return
	}
	sub.Paused = false
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteSubscription(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.write(w, r, "delete"); !ok {
		return
	}
	n := &s.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.live(r.PathValue("id")) == nil {
		writeError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		return
	}
	delete(n.subs, r.PathValue("id"))
	w.WriteHeader(http.StatusNoContent)
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
