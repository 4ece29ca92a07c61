// Package discovery is the Home Assistant sink: it announces the bridge and
// every configured user to Home Assistant with MQTT device-based discovery
// and publishes their states (SPEC §4).
//
// It is the durable sink of the core: Apply returns only once the broker has
// acknowledged (QoS 1 PUBACK) every state, and WaitReady blocks while the
// broker is unreachable, so the Service Bus source holds its messages.
//
// On every connection the sink publishes, in order: `online` on the bridge
// state topic (the last will says `offline`), the discovery configs that
// differ from the broker's retained copies, the bridge entities' states and
// the newest state of every user. To know which configs changed (and which
// retained configs of ours belong to users no longer configured), it
// subscribes to the discovery prefix and publishes a marker to itself: the
// broker sends the retained configs before the marker. Configs are published
// when the marker arrives or after half a second, whichever comes first, so
// a slow sweep never delays them. A stale config is cleared with an empty
// retained message, together with that user's state and availability. The
// same marker brings the retained hue_mode state: on the first connection
// after a start, the mode selected in Home Assistant is restored from it.
//
// Several instances of one home (a hot standby on the same subscription)
// share the bridge state topic: an instance that sees `offline` there while
// it is connected publishes `online` again, so one that stops (or dies and
// fires its will) does not leave the other's entities unavailable.
//
// After a lost connection the sink waits before reconnecting, with back-off
// and jitter that grow while connections keep dying young: two bridges with
// one client id knock each other off the broker, and without the wait they
// did so hundreds of times a second, each time firing the last will.
//
// Home Assistant's status topic is homeassistant/status (its default birth
// topic). After an `online` there the states are republished after a random
// 1–5 s delay, so a restarting Home Assistant is not flooded by every
// integration at once. OnHomeAssistantStatus, when set, is called with each
// status Home Assistant announces (and only then: its birth message is not
// retained, so a bridge started while Home Assistant runs hears nothing).
package discovery

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

// ModeControl is the Hue sink's run-time mode, driven by the hue_mode select.
type ModeControl interface {
	// Mode returns the mode in force: auto, always or off.
	Mode() string
	// SetMode changes the mode; an unknown mode is an error.
	SetMode(mode string) error
}

// Options configure a Sink.
type Options struct {
	Config  config.MQTT
	Users   []config.User
	Logger  *slog.Logger
	Version string // the origin's and the bridge device's sw_version
	// Mode, when set, adds the hue_mode select to the bridge device.
	Mode ModeControl
	// OnHomeAssistantStatus, when set, learns each status Home Assistant
	// announces (true for online). It must not block.
	OnHomeAssistantStatus func(online bool)
	// Status receives the sink's own health as component "mqtt".
	Status bridge.StatusReporter
	// Sources name the sources that get a connectivity binary_sensor on the
	// bridge device, driven by SetStatus; nil means {"service_bus"}.
	Sources []string
	// RepublishDelay returns how long to wait after Home Assistant's
	// `online` before republishing states; nil means a random 1–5 s.
	RepublishDelay func() time.Duration
	// Dial opens a connection; nil means DialPaho.
	Dial Dialer
	// SignIn, when set (the graph source is configured), adds the
	// graph_sign_in button and graph_sign_in_code sensor to the bridge
	// device; it is called when the button is pressed, from the
	// connection's goroutine, and must not block. SetSignIn feeds the
	// sensor.
	SignIn func()
}

// Errors.
var (
	// ErrNotConnected: the sink cannot take states now; WaitReady blocks
	// until it can.
	ErrNotConnected = errors.New("discovery: not connected to the MQTT broker")
	// ErrRefused: the broker refused the username or password.
	ErrRefused = errors.New("the MQTT broker refused the credentials")
)

const componentMQTT = "mqtt"

// Sink is the Home Assistant sink. Create it with New, start it with Run.
//
// Two locks: mu guards the sink's state and is never held across a call
// that can block, so SetStatus and WaitReady never wait on the broker;
// pubMu orders publications (a user's states leave in version order) and is
// held while publishing.
type Sink struct {
	log     *slog.Logger
	opts    Options
	dial    Dialer
	t       topics
	users   map[presence.UserID]config.User
	order   []presence.UserID // users in configuration order
	sources []string
	configs []deviceMessage // the current discovery messages
	tls     *tls.Config
	delay   func() time.Duration

	statusNudge chan struct{} // a source's status changed

	mu       sync.Mutex
	sess     *session // the live connection, nil when none
	ready    bool     // sess is set up: states may be published
	readyCh  chan struct{}
	latest   map[presence.UserID]bridge.State // newest state per user
	srcOK    map[string]bool                  // each source's last status
	restored bool                             // the hue mode was restored (first connection)
	signIn   SignInState                      // what the sign-in code sensor shows

	pubMu sync.Mutex
	pubs  map[presence.UserID]publication // last publication of each user's state
}

// deviceMessage is one discovery config: its topic, its payload and, for
// removing components, the platform of each component.
type deviceMessage struct {
	topic      string
	payload    []byte
	components map[string]string // key → platform
}

// publication is a state published on one connection, with its tokens.
type publication struct {
	sess  *session
	state bridge.State
	toks  []Token
}

var (
	_ bridge.Sink        = (*Sink)(nil)
	_ bridge.DurableSink = (*Sink)(nil)
)

// New checks the options and builds the discovery payloads.
func New(opts Options) (*Sink, error) {
	c := opts.Config
	if c.URL == "" {
		return nil, errors.New("discovery: no MQTT url")
	}
	if c.ClientID == "" {
		c.ClientID = "presence-bridge"
	}
	if c.DiscoveryPrefix == "" {
		c.DiscoveryPrefix = "homeassistant"
	}
	if c.BaseTopic == "" {
		c.BaseTopic = "presence-bridge"
	}
	opts.Config = c
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Sink{
		log:         opts.Logger,
		opts:        opts,
		dial:        opts.Dial,
		t:           newTopics(c.DiscoveryPrefix, c.BaseTopic),
		users:       make(map[presence.UserID]config.User, len(opts.Users)),
		sources:     opts.Sources,
		delay:       opts.RepublishDelay,
		statusNudge: make(chan struct{}, 1),
		readyCh:     make(chan struct{}),
		latest:      make(map[presence.UserID]bridge.State),
		pubs:        make(map[presence.UserID]publication),
		srcOK:       make(map[string]bool),
	}
	if s.dial == nil {
		s.dial = DialPaho
	}
	if s.sources == nil {
		s.sources = []string{"service_bus"}
	}
	if s.delay == nil {
		s.delay = func() time.Duration { return time.Second + mrand.N(4*time.Second) }
	}
	var errs []error
	for _, tp := range []string{c.DiscoveryPrefix, c.BaseTopic} {
		if strings.ContainsAny(tp, "+#\x00") || strings.HasPrefix(tp, "/") || strings.HasSuffix(tp, "/") {
			errs = append(errs, fmt.Errorf("discovery: %q is not a valid topic prefix", tp))
		}
	}
	for _, src := range s.sources {
		if !objectIDRe.MatchString(src) {
			errs = append(errs, fmt.Errorf("discovery: source name %q: only [a-zA-Z0-9_-]", src))
		}
	}
	bc := bridgeConfig(s.t, opts.Version, opts.Mode != nil, s.sources)
	if opts.SignIn != nil {
		addSignIn(&bc, s.t)
	}
	s.add(s.t.bridgeConfig(), bc, &errs)
	for _, u := range opts.Users {
		if !objectIDRe.MatchString(string(u.ID)) {
			errs = append(errs, fmt.Errorf("discovery: user id %q: only [a-zA-Z0-9_-] can name an MQTT topic", u.ID))
			continue
		}
		s.users[u.ID] = u
		s.order = append(s.order, u.ID)
		s.add(s.t.userConfig(u.ID), userConfig(s.t, opts.Version, u), &errs)
	}
	tc, err := tlsConfig(c)
	if err != nil {
		errs = append(errs, err)
	}
	s.tls = tc
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sink) add(topic string, dc DeviceConfig, errs *[]error) {
	b, err := json.Marshal(dc)
	if err == nil {
		err = Validate(topic, b, published())
	}
	if err != nil {
		*errs = append(*errs, fmt.Errorf("discovery: %s: %w", topic, err))
		return
	}
	comps := make(map[string]string, len(dc.Components))
	for k, c := range dc.Components {
		comps[k] = c.Platform
	}
	s.configs = append(s.configs, deviceMessage{topic: topic, payload: b, components: comps})
}

// brokerURL is the configured url without any password, for logs.
func (s *Sink) brokerURL() string {
	u, err := url.Parse(s.opts.Config.URL)
	if err != nil {
		return "<unparsable url>"
	}
	return u.Redacted()
}

// SetStatus records a component's health; for a source with a connectivity
// sensor it is published as ON/OFF by the connection's goroutine. It never
// blocks (Health.Watch calls it from the reporter's goroutine).
func (s *Sink) SetStatus(component string, ok bool, _ string) {
	known := false
	for _, src := range s.sources {
		known = known || src == component
	}
	if !known {
		return
	}
	s.mu.Lock()
	s.srcOK[component] = ok
	s.mu.Unlock()
	select {
	case s.statusNudge <- struct{}{}:
	default:
	}
}

// SetSignIn changes what the graph_sign_in_code sensor shows; the state is
// published (retained) by the connection's goroutine. It never blocks.
func (s *Sink) SetSignIn(st SignInState) {
	if s.opts.SignIn == nil {
		return
	}
	s.mu.Lock()
	s.signIn = st
	s.mu.Unlock()
	select {
	case s.statusNudge <- struct{}{}:
	default:
	}
}

// WaitReady blocks until the sink is connected and set up, or ctx ends.
func (s *Sink) WaitReady(ctx context.Context) error {
	for {
		s.mu.Lock()
		ready, ch := s.ready, s.readyCh
		s.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Apply publishes each state (retained, QoS 1) with its availability and
// returns once the broker acknowledged all of them. A state already
// published on the current connection is not sent again: its
// acknowledgement is awaited instead. A state older than one the sink has
// already been given is never published.
func (s *Sink) Apply(ctx context.Context, states []bridge.State) error {
	ids := make([]presence.UserID, 0, len(states))
	s.mu.Lock()
	for _, st := range states {
		if _, ok := s.users[st.UserID]; !ok {
			s.log.Debug("state for an unconfigured user ignored", "user_id", st.UserID)
			continue
		}
		ids = append(ids, st.UserID)
		if old, ok := s.latest[st.UserID]; ok && old.Version > st.Version {
			continue // never go back to an older state (the core's promise)
		}
		s.latest[st.UserID] = st
	}
	sess, ready := s.sess, s.ready
	s.mu.Unlock()
	if sess == nil || !ready {
		return ErrNotConnected
	}
	return sess.await(ctx, s.publishStates(sess, ids, false))
}

// publishStates publishes the newest state of each user on sess (with
// force, even when that state was published on sess already) and returns
// the tokens to await. The states are read under pubMu, so whichever
// publication of a user leaves last carries the newest state.
func (s *Sink) publishStates(sess *session, ids []presence.UserID, force bool) []Token {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	var toks []Token
	for _, id := range ids {
		s.mu.Lock()
		st, ok := s.latest[id]
		s.mu.Unlock()
		if !ok {
			continue
		}
		if p, ok := s.pubs[id]; ok && !force && p.sess == sess && p.state == st && !failed(p.toks) {
			toks = append(toks, p.toks...)
			continue
		}
		pt := []Token{
			sess.conn.Publish(s.t.userState(id), true, stateJSON(st)),
			sess.conn.Publish(s.t.userAvailability(id), true, []byte(availabilityPayload(st.Online))),
		}
		s.pubs[id] = publication{sess: sess, state: st, toks: pt}
		toks = append(toks, pt...)
	}
	return toks
}

// publishEntityStates publishes the hue mode and the sources' status.
func (s *Sink) publishEntityStates(sess *session) {
	s.mu.Lock()
	type src struct {
		name string
		ok   bool
	}
	var srcs []src
	for _, name := range s.sources {
		if ok, known := s.srcOK[name]; known {
			srcs = append(srcs, src{name, ok})
		}
	}
	signIn := s.signIn
	s.mu.Unlock()
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.opts.Mode != nil {
		sess.conn.Publish(s.t.hueMode(), true, []byte(s.opts.Mode.Mode()))
	}
	if s.opts.SignIn != nil {
		sess.conn.Publish(s.t.signInCode(), true, signInJSON(signIn))
	}
	for _, x := range srcs {
		sess.conn.Publish(s.t.source(x.name), true, []byte(onOff(x.ok)))
	}
}

func failed(toks []Token) bool {
	for _, t := range toks {
		select {
		case <-t.Done():
			if t.Error() != nil {
				return true
			}
		default:
		}
	}
	return false
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
