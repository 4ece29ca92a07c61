package sbtest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
)

// ManagementOptions configure a Management fake.
type ManagementOptions struct {
	// Broker, when set, gets every topic, subscription and SAS rule created
	// through the fake, so that the AMQP side agrees with the management
	// side.
	Broker *Broker
	// ManageKeys are the SAS keys (name → key) whose tokens are accepted;
	// empty accepts any SharedAccessSignature. A token signed with another
	// key, or none, is answered 401 like a key without Manage rights.
	ManageKeys map[string]string
}

// Management is a fake of Service Bus's management API (ATOM XML over
// HTTPS, what azservicebus/admin speaks), for the operations the poller
// uses: topics (get, create, full update, delete, list with $skip/$top),
// subscriptions (get, create, delete) and their rules (get, create). It
// answers like the real service: a missing entity is 200 with an empty feed,
// creating an existing one is 409, a rule carries <Action
// i:type="EmptyRuleAction"/>, a token without Manage rights is 401, and an
// entity takes at most 12 authorization rules.
type Management struct {
	srv  *httptest.Server
	opts ManagementOptions

	mu     sync.Mutex
	topics map[string]*atomTopic // by lower-case name
	order  []string              // creation order of topic keys
	calls  map[string]int        // "METHOD kind"
}

type atomTopic struct {
	name    string
	desc    topicDesc
	subs    map[string]string // lower-case name → name
	created time.Time
}

// topicDesc holds the parts of a TopicDescription the fake keeps.
type topicDesc struct {
	DefaultMessageTimeToLive            string     `xml:"DefaultMessageTimeToLive"`
	RequiresDuplicateDetection          string     `xml:"RequiresDuplicateDetection"`
	DuplicateDetectionHistoryTimeWindow string     `xml:"DuplicateDetectionHistoryTimeWindow"`
	Rules                               []atomRule `xml:"AuthorizationRules>AuthorizationRule"`
}

type atomRule struct {
	KeyName      string   `xml:"KeyName"`
	Rights       []string `xml:"Rights>AccessRights"`
	PrimaryKey   string   `xml:"PrimaryKey"`
	SecondaryKey string   `xml:"SecondaryKey"`
	CreatedTime  string   `xml:"CreatedTime"`
}

// NewManagement starts the fake on a loopback port with a self-signed
// certificate; Client trusts it. It stops when the test ends.
func NewManagement(tb interface {
	Helper()
	Cleanup(func())
}, o ManagementOptions) *Management {
	tb.Helper()
	m := &Management{opts: o, topics: make(map[string]*atomTopic), calls: make(map[string]int)}
	m.srv = httptest.NewTLSServer(http.HandlerFunc(m.serve))
	tb.Cleanup(m.srv.Close)
	return m
}

// Close stops the fake early (an outage); the test's end stops it anyway.
func (m *Management) Close() { m.srv.Close() }

// URL is the admin endpoint to configure (service_bus.namespaces[].admin_endpoint).
func (m *Management) URL() string { return m.srv.URL }

// Client trusts the fake's certificate.
func (m *Management) Client() *http.Client { return m.srv.Client() }

// Topics lists the topics created, in creation order.
func (m *Management) Topics() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, k := range m.order {
		out = append(out, m.topics[k].name)
	}
	return out
}

// TopicInfo is what the fake holds of a topic.
type TopicInfo struct {
	DefaultMessageTimeToLive   string
	RequiresDuplicateDetection bool
	Subscriptions              []string
	Rules                      []Rule
}

// Topic returns what the fake holds of a topic; false when it does not exist.
func (m *Management) Topic(name string) (TopicInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.topics[strings.ToLower(name)]
	if t == nil {
		return TopicInfo{}, false
	}
	info := TopicInfo{DefaultMessageTimeToLive: t.desc.DefaultMessageTimeToLive, RequiresDuplicateDetection: t.desc.RequiresDuplicateDetection == "true"}
	for _, s := range t.subs {
		info.Subscriptions = append(info.Subscriptions, s)
	}
	slices.Sort(info.Subscriptions)
	for _, r := range t.desc.Rules {
		info.Rules = append(info.Rules, Rule{Name: r.KeyName, Key: r.PrimaryKey, Rights: r.Rights})
	}
	return info, true
}

// Calls counts requests by "METHOD kind" (kind: topic, subscription, rule,
// list), for tests.
func (m *Management) Calls(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[key]
}

const (
	atomNS = "http://www.w3.org/2005/Atom"
	sbNS   = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
	xsiNS  = "http://www.w3.org/2001/XMLSchema-instance"
)

func (m *Management) serve(w http.ResponseWriter, r *http.Request) {
	if !m.authorized(r) {
		writeXML(w, http.StatusUnauthorized, `<Error><Code>401</Code><Detail>Manage,EntityRead claims required for this operation. TrackingId:00000000-0000-0000-0000-000000000000</Detail></Error>`)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 2 && parts[0] == "$Resources" && strings.EqualFold(parts[1], "Topics") && r.Method == http.MethodGet:
		m.count("GET list")
		m.listTopics(w, r)
	case len(parts) == 1 && parts[0] != "":
		m.count(r.Method + " topic")
		m.topic(w, r, parts[0])
	case len(parts) == 3 && strings.EqualFold(parts[1], "Subscriptions"):
		m.count(r.Method + " subscription")
		m.subscription(w, r, parts[0], parts[2])
	case len(parts) == 5 && strings.EqualFold(parts[1], "Subscriptions") && strings.EqualFold(parts[3], "Rules"):
		m.count(r.Method + " rule")
		m.rule(w, r, parts[0], parts[2], parts[4])
	default:
		writeXML(w, http.StatusBadRequest, `<Error><Code>400</Code><Detail>The request is not supported by the fake.</Detail></Error>`)
	}
}

func (m *Management) count(key string) {
	m.mu.Lock()
	m.calls[key]++
	m.mu.Unlock()
}

// authorized checks the SharedAccessSignature the SDK sends.
func (m *Management) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "SharedAccessSignature ")
	if !ok {
		return false
	}
	if len(m.opts.ManageKeys) == 0 {
		return true
	}
	f := map[string]string{} // raw values: the signature covers sr as sent
	for part := range strings.SplitSeq(tok, "&") {
		if k, v, ok := strings.Cut(part, "="); ok {
			f[k] = v
		}
	}
	key, ok := m.opts.ManageKeys[f["skn"]]
	if !ok {
		return false
	}
	sig, err := url.QueryUnescape(f["sig"])
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(f["sr"] + "\n" + f["se"]))
	return hmac.Equal([]byte(base64.StdEncoding.EncodeToString(mac.Sum(nil))), []byte(sig))
}

func (m *Management) topic(w http.ResponseWriter, r *http.Request, name string) {
	key := strings.ToLower(name)
	switch r.Method {
	case http.MethodGet:
		m.mu.Lock()
		t := m.topics[key]
		var body string
		if t != nil {
			body = m.topicEntry(r, t)
		}
		m.mu.Unlock()
		if t == nil {
			writeXML(w, http.StatusOK, emptyFeed(r))
			return
		}
		writeXML(w, http.StatusOK, body)
	case http.MethodPut:
		var env struct {
			Desc topicDesc `xml:"content>TopicDescription"`
		}
		data, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err := xml.Unmarshal(data, &env); err != nil {
			writeXML(w, http.StatusBadRequest, `<Error><Code>400</Code><Detail>The request body is not a TopicDescription entry.</Detail></Error>`)
			return
		}
		if len(env.Desc.Rules) > 12 {
			writeXML(w, http.StatusBadRequest, `<Error><Code>400</Code><Detail>The number of authorization rules exceeds the maximum of 12.</Detail></Error>`)
			return
		}
		update := r.Header.Get("If-Match") != ""
		m.mu.Lock()
		t := m.topics[key]
		switch {
		case t != nil && !update:
			m.mu.Unlock()
			writeXML(w, http.StatusConflict, fmt.Sprintf(`<Error><Code>409</Code><Detail>The messaging entity '%s' already exists.</Detail></Error>`, html.EscapeString(name)))
			return
		case t == nil && update:
			m.mu.Unlock()
			writeXML(w, http.StatusNotFound, `<Error><Code>404</Code><Detail>Entity not found.</Detail></Error>`)
			return
		case t == nil:
			t = &atomTopic{name: name, subs: map[string]string{}, created: time.Now().UTC()}
			m.topics[key] = t
			m.order = append(m.order, key)
			if env.Desc.DefaultMessageTimeToLive == "" {
				env.Desc.DefaultMessageTimeToLive = "P10675199DT2H48M5.4775807S"
			}
			if env.Desc.RequiresDuplicateDetection == "" {
				env.Desc.RequiresDuplicateDetection = "false"
			}
		}
		now := time.Now().UTC().Format(time.RFC3339Nano)
		for i := range env.Desc.Rules {
			if env.Desc.Rules[i].CreatedTime == "" {
				env.Desc.Rules[i].CreatedTime = now
			}
		}
		t.desc = env.Desc
		body := m.topicEntry(r, t)
		m.mu.Unlock()
		if err := m.mirrorTopic(r.Context(), t.name, env.Desc); err != nil {
			writeXML(w, http.StatusInternalServerError, fmt.Sprintf(`<Error><Code>500</Code><Detail>%s</Detail></Error>`, html.EscapeString(err.Error())))
			return
		}
		status := http.StatusCreated
		if update {
			status = http.StatusOK
		}
		writeXML(w, status, body)
	case http.MethodDelete:
		m.mu.Lock()
		t := m.topics[key]
		delete(m.topics, key)
		m.order = slices.DeleteFunc(m.order, func(k string) bool { return k == key })
		m.mu.Unlock()
		if t == nil {
			writeXML(w, http.StatusNotFound, `<Error><Code>404</Code><Detail>Entity not found.</Detail></Error>`)
			return
		}
		if m.opts.Broker != nil {
			_ = m.opts.Broker.DropTopic(r.Context(), t.name)
		}
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (m *Management) mirrorTopic(ctx context.Context, name string, d topicDesc) error {
	b := m.opts.Broker
	if b == nil {
		return nil
	}
	var dedupe time.Duration
	if d.RequiresDuplicateDetection == "true" {
		dedupe = 10 * time.Minute
		if w, ok := parseISODuration(d.DuplicateDetectionHistoryTimeWindow); ok {
			dedupe = w
		}
	}
	if err := b.CreateTopic(ctx, name, dedupe); err != nil {
		return err
	}
	rules := make([]Rule, 0, len(d.Rules))
	for _, r := range d.Rules {
		rules = append(rules, Rule{Name: r.KeyName, Key: r.PrimaryKey, Rights: r.Rights})
		if r.SecondaryKey != "" {
			rules = append(rules, Rule{Name: r.KeyName, Key: r.SecondaryKey, Rights: r.Rights})
		}
	}
	return b.SetRules(ctx, name, rules)
}

func (m *Management) subscription(w http.ResponseWriter, r *http.Request, topic, name string) {
	key := strings.ToLower(topic)
	m.mu.Lock()
	t := m.topics[key]
	var exists bool
	if t != nil {
		_, exists = t.subs[strings.ToLower(name)]
	}
	m.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		if !exists {
			writeXML(w, http.StatusOK, emptyFeed(r))
			return
		}
		writeXML(w, http.StatusOK, subscriptionEntry(r, name))
	case http.MethodPut:
		switch {
		case t == nil:
			writeXML(w, http.StatusNotFound, `<Error><Code>404</Code><Detail>The topic does not exist.</Detail></Error>`)
			return
		case exists && r.Header.Get("If-Match") == "":
			writeXML(w, http.StatusConflict, fmt.Sprintf(`<Error><Code>409</Code><Detail>The messaging entity '%s/Subscriptions/%s' already exists.</Detail></Error>`, html.EscapeString(topic), html.EscapeString(name)))
			return
		}
		if m.opts.Broker != nil {
			if err := m.opts.Broker.CreateSubscription(r.Context(), t.name, name); err != nil {
				writeXML(w, http.StatusInternalServerError, fmt.Sprintf(`<Error><Code>500</Code><Detail>%s</Detail></Error>`, html.EscapeString(err.Error())))
				return
			}
		}
		m.mu.Lock()
		t.subs[strings.ToLower(name)] = name
		m.mu.Unlock()
		writeXML(w, http.StatusCreated, subscriptionEntry(r, name))
	case http.MethodDelete:
		m.mu.Lock()
		if t != nil {
			delete(t.subs, strings.ToLower(name))
		}
		m.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (m *Management) rule(w http.ResponseWriter, r *http.Request, topic, sub, name string) {
	m.mu.Lock()
	t := m.topics[strings.ToLower(topic)]
	exists := t != nil && t.subs[strings.ToLower(sub)] != ""
	m.mu.Unlock()
	switch {
	case !exists:
		writeXML(w, http.StatusOK, emptyFeed(r))
	case r.Method == http.MethodGet || r.Method == http.MethodPut:
		status := http.StatusOK
		if r.Method == http.MethodPut {
			status = http.StatusCreated
		}
		writeXML(w, status, entry(r, name, fmt.Sprintf(`<RuleDescription xmlns="%s" xmlns:i="%s"><Filter i:type="TrueFilter"><SqlExpression>1=1</SqlExpression><CompatibilityLevel>20</CompatibilityLevel></Filter><Action i:type="EmptyRuleAction"/><CreatedAt>%s</CreatedAt><Name>%s</Name></RuleDescription>`,
			sbNS, xsiNS, time.Now().UTC().Format(time.RFC3339Nano), html.EscapeString(name))))
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (m *Management) listTopics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	skip, _ := strconv.Atoi(q.Get("$skip"))
	top, _ := strconv.Atoi(q.Get("$top"))
	if top <= 0 {
		top = 100
	}
	m.mu.Lock()
	var b strings.Builder
	fmt.Fprintf(&b, `<feed xmlns="%s"><title type="text">Topics</title><id>%s</id><updated>%s</updated>`, atomNS, html.EscapeString(self(r)), time.Now().UTC().Format(time.RFC3339))
	for i := skip; i < len(m.order) && i < skip+top; i++ {
		b.WriteString(m.topicEntry(r, m.topics[m.order[i]]))
	}
	m.mu.Unlock()
	b.WriteString(`</feed>`)
	writeXML(w, http.StatusOK, b.String())
}

// topicEntry renders a topic; m.mu is held.
func (m *Management) topicEntry(r *http.Request, t *atomTopic) string {
	var rules strings.Builder
	for _, ru := range t.desc.Rules {
		rules.WriteString(`<AuthorizationRule i:type="SharedAccessAuthorizationRule"><ClaimType>SharedAccessKey</ClaimType><ClaimValue>None</ClaimValue><Rights>`)
		for _, right := range ru.Rights {
			fmt.Fprintf(&rules, `<AccessRights>%s</AccessRights>`, html.EscapeString(right))
		}
		fmt.Fprintf(&rules, `</Rights><CreatedTime>%s</CreatedTime><ModifiedTime>%s</ModifiedTime><KeyName>%s</KeyName><PrimaryKey>%s</PrimaryKey><SecondaryKey>%s</SecondaryKey></AuthorizationRule>`,
			ru.CreatedTime, time.Now().UTC().Format(time.RFC3339Nano), html.EscapeString(ru.KeyName), html.EscapeString(ru.PrimaryKey), html.EscapeString(ru.SecondaryKey))
	}
	window := t.desc.DuplicateDetectionHistoryTimeWindow
	if window == "" {
		window = "PT10M"
	}
	desc := fmt.Sprintf(`<TopicDescription xmlns="%s" xmlns:i="%s"><DefaultMessageTimeToLive>%s</DefaultMessageTimeToLive><MaxSizeInMegabytes>1024</MaxSizeInMegabytes><RequiresDuplicateDetection>%s</RequiresDuplicateDetection><DuplicateDetectionHistoryTimeWindow>%s</DuplicateDetectionHistoryTimeWindow><EnableBatchedOperations>true</EnableBatchedOperations><SizeInBytes>0</SizeInBytes><FilteringMessagesBeforePublishing>false</FilteringMessagesBeforePublishing><IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules>%s</AuthorizationRules><Status>Active</Status><CreatedAt>%s</CreatedAt><UpdatedAt>%s</UpdatedAt><SupportOrdering>true</SupportOrdering><AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle><EnablePartitioning>false</EnablePartitioning><EnableSubscriptionPartitioning>false</EnableSubscriptionPartitioning><EnableExpress>false</EnableExpress><SubscriptionCount>%d</SubscriptionCount></TopicDescription>`,
		sbNS, xsiNS, html.EscapeString(t.desc.DefaultMessageTimeToLive), html.EscapeString(t.desc.RequiresDuplicateDetection), html.EscapeString(window),
		rules.String(), t.created.Format(time.RFC3339Nano), time.Now().UTC().Format(time.RFC3339Nano), len(t.subs))
	return entry(r, t.name, desc)
}

func subscriptionEntry(r *http.Request, name string) string {
	return entry(r, name, fmt.Sprintf(`<SubscriptionDescription xmlns="%s" xmlns:i="%s"><LockDuration>PT1M</LockDuration><RequiresSession>false</RequiresSession><DefaultMessageTimeToLive>P10675199DT2H48M5.4775807S</DefaultMessageTimeToLive><DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration><DeadLetteringOnFilterEvaluationExceptions>true</DeadLetteringOnFilterEvaluationExceptions><MaxDeliveryCount>10</MaxDeliveryCount><EnableBatchedOperations>true</EnableBatchedOperations><Status>Active</Status></SubscriptionDescription>`, sbNS, xsiNS))
}

func entry(r *http.Request, title, content string) string {
	now := time.Now().UTC().Format(time.RFC3339)
	return fmt.Sprintf(`<entry xmlns="%s"><id>%s</id><title type="text">%s</title><published>%s</published><updated>%s</updated><author><name>sbtest</name></author><link rel="self" href="%s"/><content type="application/xml">%s</content></entry>`,
		atomNS, html.EscapeString(self(r)), html.EscapeString(title), now, now, html.EscapeString(self(r)), content)
}

func emptyFeed(r *http.Request) string {
	return fmt.Sprintf(`<feed xmlns="%s"><title type="text">Publicly Listed Services</title><subtitle type="text">This is the list of publicly-listed services currently available.</subtitle><id>uuid:00000000-0000-0000-0000-000000000000;id=1</id><updated>%s</updated><generator>Service Bus 1.1</generator></feed>`,
		atomNS, time.Now().UTC().Format(time.RFC3339))
}

func self(r *http.Request) string { return "https://" + r.Host + r.URL.RequestURI() }

func writeXML(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/atom+xml;type=entry;charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// parseISODuration reads the PT…H…M…S durations Service Bus uses.
func parseISODuration(s string) (time.Duration, bool) {
	rest, ok := strings.CutPrefix(s, "PT")
	if !ok {
		return 0, false
	}
	var d time.Duration
	for rest != "" {
		i := strings.IndexAny(rest, "HMS")
		if i <= 0 {
			return 0, false
		}
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, false
		}
		unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second}[rest[i]]
		d += time.Duration(n * float64(unit))
		rest = rest[i+1:]
	}
	return d, true
}

// AdminClient is an azservicebus/admin client for the namespace of
// connection string cs that talks to the fake m.
func AdminClient(tb interface {
	Helper()
	Fatalf(string, ...any)
}, cs string, m *Management) *admin.Client {
	tb.Helper()
	var opts admin.ClientOptions
	opts.Transport = m.Client()
	opts.PerCallPolicies = []policy.Policy{hostPolicy(m.srv.Listener.Addr().String())}
	c, err := admin.NewClientFromConnectionString(cs, &opts)
	if err != nil {
		tb.Fatalf("sbtest: admin client: %v", err)
	}
	return c
}

type hostPolicy string

func (h hostPolicy) Do(req *policy.Request) (*http.Response, error) {
	req.Raw().URL.Host, req.Raw().Host = string(h), string(h)
	return req.Next()
}
