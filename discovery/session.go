package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/backoff"
)

// Timing of the connection lifecycle.
const (
	// configWait bounds how long the current configs wait for the broker's
	// retained copies before they are published anyway.
	configWait = 500 * time.Millisecond
	// sweepWait bounds the start-up sweep.
	sweepWait   = 5 * time.Second
	goodbyeWait = time.Second
	// backoffMin and backoffMax bound the wait before connecting again,
	// after a failed connect or a lost connection.
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
	// stableAfter is how long a connection must have lasted for the
	// back-off to start from backoffMin again when it is lost.
	stableAfter = time.Minute
)

// Run connects to the broker and keeps the connection up until ctx ends;
// then it publishes `offline` and disconnects. It returns an error only when
// the broker refuses the credentials on the first connection: after the
// sink has been connected once, a refusal is reported as its status and
// retried with back-off (a broker restarting its authentication may refuse
// for a moment).
func (s *Sink) Run(ctx context.Context) error {
	s.setStatus(false, "connecting")
	bo := backoff.Backoff{Min: backoffMin, Max: backoffMax, Jitter: true}
	connected := false
	refusedLogged := false
	for {
		sess, err := s.connect(ctx)
		if ctx.Err() != nil {
			if sess != nil {
				s.goodbye(sess)
			}
			return nil
		}
		if err != nil {
			refused := errors.Is(err, ErrRefused)
			if refused && !connected {
				s.setStatus(false, ErrRefused.Error())
				return fmt.Errorf("discovery: connect %s: %w", s.brokerURL(), err)
			}
			s.setStatus(false, err.Error())
			wait := bo.Next()
			if refused && !refusedLogged {
				refusedLogged = true
				s.log.Error("mqtt broker refused the credentials; retrying", "url", s.brokerURL(), "err", err)
			} else {
				s.log.Warn("mqtt connect failed", "url", s.brokerURL(), "retry_in", wait, "err", err)
			}
			if !backoff.Sleep(ctx, wait) {
				return nil
			}
			continue
		}
		connected, refusedLogged = true, false
		s.log.Info("mqtt connected", "url", s.brokerURL(), "client_id", s.opts.Config.ClientID)
		began := time.Now()
		s.serve(ctx, sess)
		s.disconnected(sess)
		if ctx.Err() != nil {
			s.goodbye(sess)
			return nil
		}
		// A connection that dies young (another client with our id, a
		// broker that drops us at once) must not turn into a reconnect
		// storm: the wait grows until a connection lasts.
		if time.Since(began) >= stableAfter {
			bo.Reset()
		}
		wait := bo.Next()
		s.log.Warn("mqtt connection lost", "url", s.brokerURL(), "retry_in", wait, "err", sess.conn.Err())
		s.setStatus(false, "connection lost")
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
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

// connect opens one connection with the last will `offline`.
func (s *Sink) connect(ctx context.Context) (*session, error) {
	cfg := s.opts.Config
	conn, err := s.dial(ctx, DialOptions{
		URL: cfg.URL, ClientID: cfg.ClientID,
		Username: cfg.Username, Password: cfg.Password.Value(),
		TLS:       s.tls,
		WillTopic: s.t.bridgeState(), WillPayload: []byte(payloadOffline),
	})
	if err != nil {
		return nil, err
	}
	return &session{
		conn:       conn,
		events:     make(chan event, 64),
		retained:   make(map[string][]byte),
		collecting: true, // retained configs may follow the SUBACK at once
	}, nil
}

// serve sets a new connection up and handles its events until it is lost or
// ctx ends.
func (s *Sink) serve(ctx context.Context, sess *session) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.conn.Lost():
			cancel()
		case <-cctx.Done():
		}
	}()
	sess.conn.Publish(s.t.bridgeState(), true, []byte(payloadOnline))
	if err := s.subscribe(cctx, sess); err != nil {
		if cctx.Err() == nil {
			s.log.Warn("mqtt subscribe failed", "err", err)
			sess.conn.Close(0)
		}
		return
	}
	sess.sendMarker(s.t.sync())
	timer := time.NewTimer(configWait)
	select {
	case <-sess.marker:
	case <-timer.C:
		s.log.Debug("retained discovery configs still arriving; publishing ours")
	case <-cctx.Done():
		timer.Stop()
		return
	}
	timer.Stop()
	s.restoreMode(sess)
	s.publishConfigs(sess)
	s.publishEntityStates(sess)
	s.publishStates(sess, s.order, false)
	s.mu.Lock()
	s.sess, s.ready = sess, true
	close(s.readyCh)
	s.mu.Unlock()
	s.setStatus(true, "")

	sweep := time.NewTimer(sweepWait)
	defer sweep.Stop()
	sweepC := sweep.C
	markerC := sess.marker
	if sess.markerSeen() {
		markerC = nil
		s.sweep(sess)
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
			s.sweep(sess)
		case <-sweepC:
			markerC, sweepC = nil, nil
			s.log.Debug("start-up sweep timed out; sweeping what arrived")
			s.sweep(sess)
		case <-s.statusNudge:
			s.publishEntityStates(sess)
		case ev := <-sess.events:
			switch ev.kind {
			case eventHAStatus:
				s.haStatus(ev.online)
				if ev.online && republish == nil {
					republishTimer = time.NewTimer(s.delay())
					republish = republishTimer.C
				}
			case eventModeSet:
				s.setMode(sess, ev.payload)
			case eventSignIn:
				s.log.Info("sign-in requested from home assistant")
				s.opts.SignIn()
			case eventBridgeOffline:
				// Another instance of this home stopped (or its will
				// fired): this one is still here.
				s.log.Info("another instance marked the bridge offline; marking it online again")
				sess.conn.Publish(s.t.bridgeState(), true, []byte(payloadOnline))
			}
		case <-republish:
			republish = nil
			s.log.Debug("home assistant online: republishing states")
			s.publishEntityStates(sess)
			s.publishStates(sess, s.order, true)
		}
	}
}

func (s *Sink) subscribe(ctx context.Context, sess *session) error {
	filters := []string{haStatusTopic, s.t.configFilter(), s.t.sync(), s.t.bridgeState()}
	if s.opts.Mode != nil {
		filters = append(filters, s.t.hueModeSet(), s.t.hueMode())
	}
	if s.opts.SignIn != nil {
		filters = append(filters, s.t.signInPress())
	}
	tok := sess.conn.Subscribe(filters, func(m Message) { s.route(sess, m) })
	return sess.await(ctx, []Token{tok})
}

// route handles an incoming message in the connection's goroutine: quickly,
// without blocking.
func (s *Sink) route(sess *session, m Message) {
	switch topic := m.Topic; {
	case topic == haStatusTopic:
		switch p := strings.TrimSpace(string(m.Payload)); p {
		case payloadOnline, payloadOffline:
			sess.push(s.log, event{kind: eventHAStatus, online: p == payloadOnline})
		default:
			s.log.Debug("unknown home assistant status ignored", "payload", truncate(p))
		}
	case topic == s.t.bridgeState():
		if string(m.Payload) == payloadOffline {
			sess.push(s.log, event{kind: eventBridgeOffline})
		}
	case topic == s.t.hueModeSet():
		sess.push(s.log, event{kind: eventModeSet, payload: string(m.Payload)})
	case topic == s.t.hueMode():
		if m.Retained {
			sess.setRetainedMode(string(m.Payload))
		}
	case topic == s.t.signInPress():
		// A press is never retained by Home Assistant; a retained one left
		// on the broker must not start a sign-in on every connection.
		if !m.Retained && strings.TrimSpace(string(m.Payload)) == payloadPress {
			sess.push(s.log, event{kind: eventSignIn})
		}
	case topic == s.t.sync():
		sess.markerArrived(string(m.Payload))
	case m.Retained:
		sess.addRetained(topic, m.Payload)
	}
}

// restoreMode, on the first connection after a start, sets the Hue mode
// selected in Home Assistant before the restart, kept in the retained state
// of the hue_mode select (SPEC §5).
func (s *Sink) restoreMode(sess *session) {
	s.mu.Lock()
	first := !s.restored
	s.restored = true
	s.mu.Unlock()
	mode := strings.ToLower(strings.TrimSpace(sess.retainedMode()))
	if !first || s.opts.Mode == nil || mode == "" || mode == s.opts.Mode.Mode() {
		return
	}
	if err := s.opts.Mode.SetMode(mode); err != nil {
		s.log.Warn("retained hue mode not restored", "mode", truncate(mode), "err", err)
		return
	}
	s.log.Info("hue mode restored from home assistant's last selection", "mode", mode)
}

func (s *Sink) setMode(sess *session, payload string) {
	mode := strings.ToLower(strings.TrimSpace(payload))
	if err := s.opts.Mode.SetMode(mode); err != nil {
		s.log.Warn("hue mode from home assistant refused", "mode", truncate(mode), "err", err)
	} else {
		s.log.Info("hue mode changed from home assistant", "mode", mode)
	}
	// The state reflects the mode in force, so a refused command reverts
	// the select in Home Assistant.
	s.publishEntityStates(sess)
}

// disconnected marks the sink not ready after sess is gone.
func (s *Sink) disconnected(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == sess {
		s.sess = nil
	}
	if s.ready {
		s.ready = false
		s.readyCh = make(chan struct{})
	}
}

// goodbye publishes `offline` and disconnects, within about a second.
func (s *Sink) goodbye(sess *session) {
	select {
	case <-sess.conn.Lost():
		return
	default:
	}
	tok := sess.conn.Publish(s.t.bridgeState(), true, []byte(payloadOffline))
	t := time.NewTimer(goodbyeWait)
	select {
	case <-tok.Done():
	case <-sess.conn.Lost():
	case <-t.C:
		s.log.Warn("mqtt offline message not acknowledged in time")
	}
	t.Stop()
	sess.conn.Close(250 * time.Millisecond)
	s.log.Info("mqtt disconnected")
}

// session is one MQTT connection and what the sink learns on it.
type session struct {
	conn   Conn
	events chan event

	mu         sync.Mutex
	nonce      string
	marker     chan struct{}
	markerDone bool
	retained   map[string][]byte // retained discovery configs seen
	collecting bool
	mode       string // the retained hue_mode state, when seen
}

type eventKind uint8

const (
	eventHAStatus eventKind = iota + 1
	eventModeSet
	eventBridgeOffline
	eventSignIn
)

type event struct {
	kind    eventKind
	online  bool
	payload string
}

func (c *session) push(log *slog.Logger, ev event) {
	select {
	case c.events <- ev:
	default:
		log.Warn("mqtt command dropped: too many at once")
	}
}

// sendMarker publishes a marker the broker delivers after the retained
// messages it sends for the subscriptions made just before.
func (c *session) sendMarker(topic string) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	c.mu.Lock()
	c.nonce = hex.EncodeToString(b)
	c.marker = make(chan struct{})
	nonce := c.nonce
	c.mu.Unlock()
	c.conn.Publish(topic, false, []byte(nonce))
}

func (c *session) markerArrived(payload string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.marker != nil && payload == c.nonce && !c.markerDone {
		c.markerDone = true
		close(c.marker)
	}
}

func (c *session) markerSeen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.markerDone
}

func (c *session) addRetained(topic string, payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.collecting {
		c.retained[topic] = payload
	}
}

func (c *session) setRetainedMode(mode string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mode = mode
}

func (c *session) retainedMode() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mode
}

func (c *session) retainedConfig(topic string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.retained[topic]
	return p, ok
}

// takeRetained stops collecting and returns what was collected.
func (c *session) takeRetained() map[string][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.collecting = false
	r := c.retained
	c.retained = nil
	return r
}

// await waits for every token: nil once all succeeded.
func (c *session) await(ctx context.Context, toks []Token) error {
	for _, t := range toks {
		select {
		case <-t.Done():
			if err := t.Error(); err != nil {
				return fmt.Errorf("mqtt: %w", err)
			}
		case <-c.conn.Lost():
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
