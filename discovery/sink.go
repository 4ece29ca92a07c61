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
// retained message, together with that user's state and availability.
//
// Home Assistant's status topic is homeassistant/status (its default birth
// topic). After an `online` there the states are republished after a random
// 1–5 s delay, so a restarting Home Assistant is not flooded by every
// integration at once. OnHomeAssistantStatus, when set, is called with false
// on every (re)connect and on every connection loss (no `online` seen since
// the bridge connected), and with each status Home Assistant announces.
package discovery

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

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
	// OnHomeAssistantStatus, when set, learns whether Home Assistant is
	// online (see the package documentation). It must not block.
	OnHomeAssistantStatus func(online bool)
	// Status receives the sink's own health as component "mqtt".
	Status bridge.StatusReporter
	// Sources name the sources that get a connectivity binary_sensor on the
	// bridge device, driven by SetStatus; nil means {"service_bus"}.
	Sources []string
	// RepublishDelay returns how long to wait after Home Assistant's
	// `online` before republishing states; nil means a random 1–5 s.
	RepublishDelay func() time.Duration
}

// Errors.
var (
	// ErrNotConnected: the sink cannot take states now; WaitReady blocks
	// until it can.
	ErrNotConnected = errors.New("discovery: not connected to the MQTT broker")
	// ErrRefused: the broker refused the username or password.
	ErrRefused = errors.New("the MQTT broker refused the credentials")
)

// Timing.
const (
	connectTimeout = 10 * time.Second
	keepAlive      = 30 * time.Second
	writeTimeout   = 10 * time.Second
	// configWait bounds how long the current configs wait for the broker's
	// retained copies before they are published anyway.
	configWait = 500 * time.Millisecond
	// sweepWait bounds the start-up sweep.
	sweepWait     = 5 * time.Second
	goodbyeWait   = time.Second
	backoffMin    = 500 * time.Millisecond
	backoffMax    = 30 * time.Second
	componentMQTT = "mqtt"
)

// Sink is the Home Assistant sink. Create it with New, start it with Run.
type Sink struct {
	log     *slog.Logger
	opts    Options
	t       topics
	users   map[presence.UserID]config.User
	sources []string
	configs []deviceMessage // the current discovery messages
	tls     *tls.Config
	delay   func() time.Duration

	statusNudge chan struct{} // a source's status changed

	mu      sync.Mutex
	conn    *conn // the live connection, nil when none
	ready   bool  // conn is set up: states may be published
	readyCh chan struct{}
	latest  map[presence.UserID]bridge.State // newest state per user
	pubs    map[presence.UserID]publication  // last publication of each user's state
	srcOK   map[string]bool                  // each source's last status
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
	conn  *conn
	state bridge.State
	toks  []mqtt.Token
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
	s.add(s.t.bridgeConfig(), bridgeConfig(s.t, opts.Version, opts.Mode != nil, s.sources), &errs)
	for _, u := range opts.Users {
		if !objectIDRe.MatchString(string(u.ID)) {
			errs = append(errs, fmt.Errorf("discovery: user id %q: only [a-zA-Z0-9_-] can name an MQTT topic", u.ID))
			continue
		}
		s.users[u.ID] = u
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

// tlsConfig returns the TLS settings for ssl:// (tls://, mqtts://) and
// wss:// brokers: the system roots plus the optional ca_file.
func tlsConfig(c config.MQTT) (*tls.Config, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("discovery: mqtt url: %w", err)
	}
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "wss":
	case "tcp", "mqtt", "ws":
		return nil, nil
	default:
		return nil, fmt.Errorf("discovery: mqtt url: unsupported scheme %q", u.Scheme)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("discovery: read ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("discovery: ca_file %s: no PEM certificate", c.CAFile)
		}
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
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
// sensor it is published as ON/OFF. It never blocks (Health.Watch calls it).
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
// acknowledgement is awaited instead.
func (s *Sink) Apply(ctx context.Context, states []bridge.State) error {
	s.mu.Lock()
	for _, st := range states {
		if _, ok := s.users[st.UserID]; !ok {
			continue
		}
		if old, ok := s.latest[st.UserID]; ok && old.Version > st.Version {
			continue // never go back to an older state (the core's promise)
		}
		s.latest[st.UserID] = st
	}
	c := s.conn
	if c == nil || !s.ready {
		s.mu.Unlock()
		return ErrNotConnected
	}
	var toks []mqtt.Token
	for _, st := range states {
		if _, ok := s.users[st.UserID]; !ok {
			s.log.Debug("state for an unconfigured user ignored", "user_id", st.UserID)
			continue
		}
		toks = append(toks, s.publishStateLocked(c, s.latest[st.UserID], false)...)
	}
	s.mu.Unlock()
	return c.await(ctx, toks)
}

// publishStateLocked publishes st unless, without force, the same state is
// already published (or in flight) on c. s.mu must be held so that
// publications of one user leave in the order of their states.
func (s *Sink) publishStateLocked(c *conn, st bridge.State, force bool) []mqtt.Token {
	if p, ok := s.pubs[st.UserID]; ok && !force && p.conn == c && p.state == st && !failed(p.toks) {
		return p.toks
	}
	toks := []mqtt.Token{
		c.client.Publish(s.t.userState(st.UserID), 1, true, stateJSON(st)),
		c.client.Publish(s.t.userAvailability(st.UserID), 1, true, availabilityPayload(st.Online)),
	}
	s.pubs[st.UserID] = publication{conn: c, state: st, toks: toks}
	return toks
}

func failed(toks []mqtt.Token) bool {
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

// Run connects to the broker and keeps the connection up until ctx ends;
// then it publishes `offline` and disconnects. It returns an error only when
// the broker refuses the credentials on the first connection: after the
// sink has been connected once, a refusal is reported as its status and
// retried with back-off (a broker restarting its authentication may refuse
// for a moment).
func (s *Sink) Run(ctx context.Context) error {
	s.setStatus(false, "connecting")
	backoff := backoffMin
	connected := false
	refusedLogged := false
	for {
		c, err := s.connect(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			refused := errors.Is(err, ErrRefused)
			if refused && !connected {
				s.setStatus(false, ErrRefused.Error())
				return fmt.Errorf("discovery: connect %s: %w", s.brokerURL(), err)
			}
			s.setStatus(false, err.Error())
			if refused && !refusedLogged {
				refusedLogged = true
				s.log.Error("mqtt broker refused the credentials; retrying", "url", s.brokerURL(), "err", err)
			} else {
				s.log.Warn("mqtt connect failed", "url", s.brokerURL(), "retry_in", backoff, "err", err)
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		connected, refusedLogged, backoff = true, false, backoffMin
		s.log.Info("mqtt connected", "url", s.brokerURL())
		s.serve(ctx, c)
		s.disconnected(c)
		if ctx.Err() != nil {
			s.goodbye(c)
			return nil
		}
		s.log.Warn("mqtt connection lost", "url", s.brokerURL(), "err", c.lostErr())
		s.setStatus(false, "connection lost")
	}
}

func (s *Sink) setStatus(ok bool, detail string) {
	if s.opts.Status != nil {
		s.opts.Status.SetStatus(componentMQTT, ok, detail)
	}
}

func (s *Sink) haStatus(online bool) {
	if s.opts.OnHomeAssistantStatus != nil {
		s.opts.OnHomeAssistantStatus(online)
	}
}

// connect opens one connection: a fresh paho client with a clean session.
func (s *Sink) connect(ctx context.Context) (*conn, error) {
	c := &conn{
		lost:       make(chan struct{}),
		events:     make(chan event, 64),
		retained:   make(map[string][]byte),
		collecting: true, // retained configs may follow the SUBACK at once
	}
	cfg := s.opts.Config
	o := mqtt.NewClientOptions().
		AddBroker(cfg.URL).
		SetClientID(cfg.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(connectTimeout).
		SetKeepAlive(keepAlive).
		SetWriteTimeout(writeTimeout).
		SetWill(s.t.bridgeState(), payloadOffline, 1, true).
		// Messages that match no subscription any more (our own discovery
		// configs echoed after the sweep unsubscribed, while the
		// UNSUBSCRIBE was in flight) must still be acknowledged: paho
		// keeps an unacknowledged QoS 1 message in its store for the
		// whole connection (about 1.7 MB for 1,000 users' configs), and
		// the broker counts it against the connection's in-flight window.
		SetDefaultPublishHandler(func(mqtt.Client, mqtt.Message) {}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { c.setLost(err) })
	if cfg.Username != "" {
		o.SetUsername(cfg.Username)
	}
	if p := cfg.Password.Value(); p != "" {
		o.SetPassword(p)
	}
	if s.tls != nil {
		o.SetTLSConfig(s.tls.Clone())
	}
	c.client = mqtt.NewClient(o)
	tok := c.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go func() { <-tok.Done(); c.client.Disconnect(0) }()
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		if errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return nil, err
	}
	return c, nil
}

// serve sets a new connection up and handles its events until it is lost or
// ctx ends.
func (s *Sink) serve(ctx context.Context, c *conn) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.lost:
			cancel()
		case <-cctx.Done():
		}
	}()
	s.haStatus(false)
	c.client.Publish(s.t.bridgeState(), 1, true, payloadOnline)
	if err := s.subscribe(cctx, c); err != nil {
		if cctx.Err() == nil {
			s.log.Warn("mqtt subscribe failed", "err", err)
			c.client.Disconnect(0)
			c.setLost(err)
		}
		return
	}
	c.sendMarker(s.t.sync())
	timer := time.NewTimer(configWait)
	select {
	case <-c.marker:
	case <-timer.C:
		s.log.Debug("retained discovery configs still arriving; publishing ours")
	case <-cctx.Done():
		timer.Stop()
		return
	}
	timer.Stop()
	s.publishConfigs(c)

	s.mu.Lock()
	s.publishEntityStatesLocked(c)
	for _, st := range s.latest {
		s.publishStateLocked(c, st, false)
	}
	s.conn, s.ready = c, true
	close(s.readyCh)
	s.mu.Unlock()
	s.setStatus(true, "")

	sweep := time.NewTimer(sweepWait)
	defer sweep.Stop()
	sweepC := sweep.C
	markerC := c.marker
	if c.markerSeen() {
		markerC = nil
		s.sweep(c)
		sweepC = nil
	}
	var republish <-chan time.Time
	var republishTimer *time.Timer
	defer func() {
		if republishTimer != nil {
			republishTimer.Stop()
		}
	}()
	for {
		select {
		case <-cctx.Done():
			return
		case <-markerC:
			markerC, sweepC = nil, nil
			s.sweep(c)
		case <-sweepC:
			markerC, sweepC = nil, nil
			s.log.Debug("start-up sweep timed out; sweeping what arrived")
			s.sweep(c)
		case <-s.statusNudge:
			s.mu.Lock()
			s.publishEntityStatesLocked(c)
			s.mu.Unlock()
		case ev := <-c.events:
			switch ev.kind {
			case eventHAStatus:
				s.haStatus(ev.online)
				if ev.online && republish == nil {
					republishTimer = time.NewTimer(s.delay())
					republish = republishTimer.C
				}
			case eventModeSet:
				s.setMode(c, ev.payload)
			}
		case <-republish:
			republish = nil
			s.log.Debug("home assistant online: republishing states")
			s.mu.Lock()
			s.publishEntityStatesLocked(c)
			for _, st := range s.latest {
				s.publishStateLocked(c, st, true)
			}
			s.mu.Unlock()
		}
	}
}

func (s *Sink) subscribe(ctx context.Context, c *conn) error {
	filters := map[string]byte{
		haStatusTopic:      1,
		s.t.configFilter(): 1,
		s.t.sync():         1,
	}
	if s.opts.Mode != nil {
		filters[s.t.hueModeSet()] = 1
	}
	tok := c.client.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) { s.route(c, m) })
	return c.await(ctx, []mqtt.Token{tok})
}

// route handles an incoming message in paho's goroutine: quickly, without
// blocking.
func (s *Sink) route(c *conn, m mqtt.Message) {
	switch topic := m.Topic(); {
	case topic == haStatusTopic:
		switch p := strings.TrimSpace(string(m.Payload())); p {
		case payloadOnline, payloadOffline:
			c.push(s.log, event{kind: eventHAStatus, online: p == payloadOnline})
		default:
			s.log.Debug("unknown home assistant status ignored", "payload", truncate(p))
		}
	case topic == s.t.hueModeSet():
		c.push(s.log, event{kind: eventModeSet, payload: string(m.Payload())})
	case topic == s.t.sync():
		c.markerArrived(string(m.Payload()))
	case m.Retained():
		c.addRetained(topic, m.Payload())
	}
}

// publishConfigs publishes each discovery config whose retained copy on the
// broker differs; components the retained copy has and ours lacks are
// removed first, as Home Assistant requires.
func (s *Sink) publishConfigs(c *conn) {
	for _, dm := range s.configs {
		old, had := c.retainedConfig(dm.topic)
		if had && string(old) == string(dm.payload) {
			continue
		}
		if had {
			if removal := removalPayload(old, dm); removal != nil {
				c.client.Publish(dm.topic, 1, true, removal)
			}
		}
		c.client.Publish(dm.topic, 1, true, dm.payload)
		s.log.Debug("discovery config published", "topic", dm.topic)
	}
}

// removalPayload returns the current payload plus each component of old that
// the current one lacks, reduced to its platform; nil when none is gone.
func removalPayload(old []byte, dm deviceMessage) []byte {
	var prev struct {
		Components map[string]struct {
			Platform string `json:"platform"`
			P        string `json:"p"`
		} `json:"components"`
		Cmps map[string]struct {
			Platform string `json:"platform"`
			P        string `json:"p"`
		} `json:"cmps"`
	}
	if json.Unmarshal(old, &prev) != nil {
		return nil
	}
	var cur map[string]any
	if json.Unmarshal(dm.payload, &cur) != nil {
		return nil
	}
	comps, _ := cur["components"].(map[string]any)
	gone := false
	for _, m := range []map[string]struct {
		Platform string `json:"platform"`
		P        string `json:"p"`
	}{prev.Components, prev.Cmps} {
		for k, c := range m {
			if _, keep := dm.components[k]; keep {
				continue
			}
			p := c.Platform
			if p == "" {
				p = c.P
			}
			if p == "" {
				continue
			}
			comps[k] = map[string]string{"platform": p}
			gone = true
		}
	}
	if !gone {
		return nil
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return nil
	}
	return b
}

// sweep clears the retained configs of this bridge's users that are no
// longer configured, with their state and availability topics.
func (s *Sink) sweep(c *conn) {
	for topic, payload := range c.takeRetained() {
		id, ok := staleUser(s.t, topic, payload)
		if !ok {
			continue
		}
		if _, configured := s.users[id]; configured {
			continue
		}
		s.log.Info("removing a user no longer configured from home assistant", "user_id", id)
		c.client.Publish(topic, 1, true, []byte{})
		c.client.Publish(s.t.userState(id), 1, true, []byte{})
		c.client.Publish(s.t.userAvailability(id), 1, true, []byte{})
	}
	c.client.Unsubscribe(s.t.configFilter(), s.t.sync())
}

// staleUser reports whether a retained config is one of this bridge's user
// devices: published at <prefix>/device/<node>_<id>/config, with the device
// identifier <node>_<id> and via_device <node>. It returns the user id.
func staleUser(t topics, topic string, payload []byte) (presence.UserID, bool) {
	rest, ok := strings.CutPrefix(topic, t.prefix+"/device/"+t.node+"_")
	if !ok {
		return "", false
	}
	text, ok := strings.CutSuffix(rest, "/config")
	if !ok || !objectIDRe.MatchString(text) {
		return "", false
	}
	id := presence.UserID(text)
	var p struct {
		Device struct {
			Identifiers json.RawMessage `json:"identifiers"`
			ViaDevice   string          `json:"via_device"`
		} `json:"device"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Device.ViaDevice != t.node {
		return "", false
	}
	var ids []string
	if json.Unmarshal(p.Device.Identifiers, &ids) != nil {
		var one string
		if json.Unmarshal(p.Device.Identifiers, &one) != nil {
			return "", false
		}
		ids = []string{one}
	}
	for _, x := range ids {
		if x == t.userDevice(id) {
			return id, true
		}
	}
	return "", false
}

// publishEntityStatesLocked publishes the hue mode and the sources' status.
func (s *Sink) publishEntityStatesLocked(c *conn) {
	if s.opts.Mode != nil {
		c.client.Publish(s.t.hueMode(), 1, true, s.opts.Mode.Mode())
	}
	for _, src := range s.sources {
		if ok, known := s.srcOK[src]; known {
			c.client.Publish(s.t.source(src), 1, true, onOff(ok))
		}
	}
}

func (s *Sink) setMode(c *conn, payload string) {
	mode := strings.ToLower(strings.TrimSpace(payload))
	if err := s.opts.Mode.SetMode(mode); err != nil {
		s.log.Warn("hue mode from home assistant refused", "mode", truncate(mode), "err", err)
	} else {
		s.log.Info("hue mode changed from home assistant", "mode", mode)
	}
	// The state reflects the mode in force, so a refused command reverts
	// the select in Home Assistant.
	c.client.Publish(s.t.hueMode(), 1, true, s.opts.Mode.Mode())
}

// disconnected marks the sink not ready after c is gone.
func (s *Sink) disconnected(c *conn) {
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	if s.ready {
		s.ready = false
		s.readyCh = make(chan struct{})
	}
	s.mu.Unlock()
	s.haStatus(false)
}

// goodbye publishes `offline` and disconnects, within about a second.
func (s *Sink) goodbye(c *conn) {
	select {
	case <-c.lost:
		return
	default:
	}
	tok := c.client.Publish(s.t.bridgeState(), 1, true, payloadOffline)
	t := time.NewTimer(goodbyeWait)
	select {
	case <-tok.Done():
	case <-c.lost:
	case <-t.C:
		s.log.Warn("mqtt offline message not acknowledged in time")
	}
	t.Stop()
	c.client.Disconnect(250)
	s.log.Info("mqtt disconnected")
}

// conn is one MQTT connection.
type conn struct {
	client mqtt.Client
	events chan event

	lostOnce sync.Once
	lost     chan struct{}

	mu         sync.Mutex
	err        error
	nonce      string
	marker     chan struct{}
	markerDone bool
	retained   map[string][]byte // retained discovery configs seen
	collecting bool
}

type eventKind uint8

const (
	eventHAStatus eventKind = iota + 1
	eventModeSet
)

type event struct {
	kind    eventKind
	online  bool
	payload string
}

func (c *conn) setLost(err error) {
	c.lostOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.lost)
	})
}

func (c *conn) lostErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *conn) push(log *slog.Logger, ev event) {
	select {
	case c.events <- ev:
	default:
		log.Warn("mqtt command dropped: too many at once")
	}
}

// sendMarker publishes a marker the broker delivers after the retained
// configs it sends for the subscription made just before.
func (c *conn) sendMarker(topic string) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	c.mu.Lock()
	c.nonce = hex.EncodeToString(b)
	c.marker = make(chan struct{})
	nonce := c.nonce
	c.mu.Unlock()
	c.client.Publish(topic, 1, false, nonce)
}

func (c *conn) markerArrived(payload string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.marker != nil && payload == c.nonce && !c.markerDone {
		c.markerDone = true
		close(c.marker)
	}
}

func (c *conn) markerSeen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.markerDone
}

func (c *conn) addRetained(topic string, payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.collecting {
		c.retained[topic] = payload
	}
}

func (c *conn) retainedConfig(topic string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.retained[topic]
	return p, ok
}

// takeRetained stops collecting and returns what was collected.
func (c *conn) takeRetained() map[string][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.collecting = false
	r := c.retained
	c.retained = nil
	return r
}

// await waits for every token: nil once all succeeded.
func (c *conn) await(ctx context.Context, toks []mqtt.Token) error {
	for _, t := range toks {
		select {
		case <-t.Done():
			if err := t.Error(); err != nil {
				return fmt.Errorf("mqtt: %w", err)
			}
		case <-c.lost:
			select {
			case <-t.Done(): // settled just before the loss
				if err := t.Error(); err != nil {
					return fmt.Errorf("mqtt: %w", err)
				}
			default:
				return fmt.Errorf("mqtt: %w", ErrNotConnected)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
