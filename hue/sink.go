package hue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

// Component is the name the sink reports its health under.
const Component = "hue"

// Back-off bounds. Unauthorized is retried rarely: only pairing again fixes it.
const (
	backoffMax             = time.Minute
	unauthorizedBackoffMax = 10 * time.Minute
	defaultMinInterval     = time.Second
)

var _ bridge.Sink = (*Sink)(nil)

// Command is one group action the sink had accepted by a bridge.
type Command struct {
	// Bridge is the bridge's host[:port]; Group the configured group name or
	// id, GroupID the id it resolved to.
	Bridge, Group, GroupID string
	// Look is the group's new look; Action what was sent to reach it.
	Look   Look
	Action Action
}

// Options configure a Sink.
type Options struct {
	Config config.Hue
	Users  []config.User
	// HomeAssistant is true when MQTT is configured: mode auto then drives
	// the lamps only while Home Assistant is absent.
	HomeAssistant bool
	Logger        *slog.Logger
	Status        bridge.StatusReporter
	// HTTPClient is used for every bridge call (optional).
	HTTPClient *http.Client
	// RequestTimeout bounds each call; DefaultTimeout when zero.
	RequestTimeout time.Duration
	// OnCommand, when set, is called after a bridge accepted a command (the
	// demo prints it). It runs in the bridge's goroutine and must not block.
	OnCommand func(Command)
}

// Sink drives Hue groups from users' presence. Apply only records the new
// desired looks; one goroutine per bridge (started by Run) sends them,
// at most one command per min_interval per bridge, coalesced, with back-off.
type Sink struct {
	log       *slog.Logger
	status    bridge.StatusReporter
	palette   *Palette
	haEnabled bool
	onCommand func(Command)
	interval  time.Duration
	bridges   []*bridgeLoop

	mu           sync.Mutex
	mode         string
	haOnline     bool
	states       map[presence.UserID]bridge.State
	problems     map[string]string // by bridge host; "" = fine
	reported     string            // last detail reported
	reportOK     bool
	reportedOnce bool
}

// groupState is one configured group of one bridge; guarded by Sink.mu.
type groupState struct {
	ref   string            // configured name or id
	users []presence.UserID // in configured order
	id    string            // resolved id; "" until resolved
	gamut Gamut

	desired    Look
	hasDesired bool
	// What the lamps show as far as this bridge knows: onKnown/on from the
	// last group listing or our own commands, colour from our commands.
	onKnown, on bool
	colorKnown  bool
	known       Look
	// failedLook is a look the bridge refused for good (bad value): it is not
	// retried until the desired look changes.
	failedLook *Look
	dirtySince time.Time
}

// bridgeLoop is the state of one Hue bridge.
type bridgeLoop struct {
	host   string
	client *Client
	wake   chan struct{}
	groups []*groupState // guarded by Sink.mu
}

// New checks the options and builds a sink; Run starts it.
func New(opts Options) (*Sink, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	palette, err := NewPalette(opts.Config.Colors)
	if err != nil {
		return nil, err
	}
	mode := opts.Config.Mode
	if mode == "" {
		mode = config.HueModeAuto
	}
	if !validMode(mode) {
		return nil, fmt.Errorf("hue: mode %q: want auto, always or off", mode)
	}
	interval := opts.Config.MinInterval.Std()
	if interval <= 0 {
		interval = defaultMinInterval
	}
	// A group names its users by name or by id (ids in any case).
	ids := make(map[string]presence.UserID, 2*len(opts.Users))
	for _, u := range opts.Users {
		ids[string(u.ID)] = u.ID
		ids[u.Name] = u.ID
	}
	s := &Sink{
		log:       log.With("component", Component),
		status:    opts.Status,
		palette:   palette,
		haEnabled: opts.HomeAssistant,
		onCommand: opts.OnCommand,
		interval:  interval,
		mode:      mode,
		states:    make(map[presence.UserID]bridge.State),
		problems:  make(map[string]string),
	}
	var errs []error
	for bi, bc := range opts.Config.Bridges {
		client, err := NewClient(ClientOptions{Host: bc.Host, Username: bc.Username.Value(), HTTPClient: opts.HTTPClient, Timeout: opts.RequestTimeout})
		if err != nil {
			errs = append(errs, fmt.Errorf("hue.bridges[%d].host: %w", bi, err))
			continue
		}
		b := &bridgeLoop{host: client.Host(), client: client, wake: make(chan struct{}, 1)}
		for gi, gc := range bc.Groups {
			g := &groupState{ref: gc.Group, gamut: GamutC}
			for ui, name := range gc.Users {
				id, ok := ids[name]
				if !ok {
					id, ok = ids[string(presence.CanonicalUserID(name))]
				}
				if !ok {
					errs = append(errs, fmt.Errorf("hue.bridges[%d].groups[%d].users[%d]: unknown user %q", bi, gi, ui, name))
					continue
				}
				g.users = append(g.users, id)
			}
			b.groups = append(b.groups, g)
		}
		s.bridges = append(s.bridges, b)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func validMode(m string) bool {
	return m == config.HueModeAuto || m == config.HueModeAlways || m == config.HueModeOff
}

// Mode returns the current mode (auto, always or off).
func (s *Sink) Mode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// SetMode changes the mode at run time (Home Assistant's hue_mode select).
func (s *Sink) SetMode(mode string) error {
	if !validMode(mode) {
		return fmt.Errorf("hue: mode %q: want auto, always or off", mode)
	}
	s.mu.Lock()
	was := s.activeLocked()
	s.mode = mode
	s.transitionLocked(was)
	s.mu.Unlock()
	s.log.Info("hue mode changed", "mode", mode)
	return nil
}

// SetHomeAssistantOnline records Home Assistant's homeassistant/status:
// true for "online", false for "offline" and on every MQTT (re)connect.
func (s *Sink) SetHomeAssistantOnline(online bool) {
	s.mu.Lock()
	was := s.activeLocked()
	s.haOnline = online
	s.transitionLocked(was)
	s.mu.Unlock()
}

// Active reports whether the sink drives the lamps now.
func (s *Sink) Active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.activeLocked()
}

func (s *Sink) activeLocked() bool {
	switch s.mode {
	case config.HueModeAlways:
		return true
	case config.HueModeAuto:
		return !s.haEnabled || !s.haOnline
	}
	return false
}

// transitionLocked acts on a change of control: taking control forgets
// what the lamps show (Home Assistant may have changed them) so the current
// looks are sent once; handing back needs nothing, the loops stop sending.
func (s *Sink) transitionLocked(wasActive bool) {
	now := s.activeLocked()
	if now == wasActive {
		return
	}
	if now {
		for _, b := range s.bridges {
			for _, g := range b.groups {
				g.onKnown, g.colorKnown, g.failedLook = false, false, nil
			}
		}
		s.log.Info("hue takes control of the lamps")
	} else {
		s.log.Info("hue hands the lamps to home assistant")
	}
	s.wakeAll()
}

func (s *Sink) wakeAll() {
	for _, b := range s.bridges {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// Apply records the users' new states and returns at once: the bridges'
// goroutines send the resulting looks.
func (s *Sink) Apply(_ context.Context, states []bridge.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range states {
		if old, ok := s.states[st.UserID]; ok && old.Version > st.Version && st.Version != 0 {
			continue
		}
		s.states[st.UserID] = st
	}
	for _, b := range s.bridges {
		changed := false
		for _, g := range b.groups {
			if s.updateDesiredLocked(g) {
				changed = true
			}
		}
		if changed {
			select {
			case b.wake <- struct{}{}:
			default:
			}
		}
	}
	return nil
}

// updateDesiredLocked recomputes a group's look from its users' states and
// reports whether it changed. A group none of whose users has a state yet
// is left alone.
func (s *Sink) updateDesiredLocked(g *groupState) bool {
	var sts []bridge.State
	for _, id := range g.users {
		if st, ok := s.states[id]; ok {
			sts = append(sts, st)
		}
	}
	if len(sts) == 0 {
		return false
	}
	look := s.palette.styleFor(sts[busiest(sts)]).look(g.gamut)
	if g.hasDesired && g.desired == look {
		return false
	}
	g.desired, g.hasDesired = look, true
	g.failedLook = nil
	if g.dirtySince.IsZero() {
		// Waiting starts with the first change not sent; later changes keep
		// the group's place in the queue.
		g.dirtySince = time.Now()
	}
	return true
}

// actionFor is the smallest action that takes the lamps from what the
// bridge knows to the desired look: "on" only when not known to be on,
// colour fields only when changed.
func actionFor(g *groupState) Action {
	var a Action
	d := g.desired
	if !d.On {
		if !g.onKnown || g.on {
			a.On = ptr(false)
		}
		return a
	}
	if !g.onKnown || !g.on {
		a.On = ptr(true)
	}
	if !g.colorKnown || g.known.Bri != d.Bri {
		a.Bri = ptr(d.Bri)
	}
	if !g.colorKnown || g.known.Effect != d.Effect {
		a.Effect = d.Effect
	}
	if d.Effect != EffectColorloop && (!g.colorKnown || g.known.XY != d.XY || g.known.Effect == EffectColorloop) {
		xy := d.XY
		a.XY = &xy
	}
	return a
}

func ptr[T any](v T) *T { return &v }

// applied records that the bridge took a.
func (g *groupState) applied(a Action, look Look) {
	if a.On != nil {
		g.onKnown, g.on = true, *a.On
	}
	if look.On {
		g.colorKnown = true
		g.known = look
	}
	// Still dirty (the look changed meanwhile): to the back of the queue.
	g.dirtySince = time.Time{}
	if g.hasDesired && !actionFor(g).Empty() {
		g.dirtySince = time.Now()
	}
}

// job is one command the loop decided to send.
type job struct {
	group  *groupState
	id     string
	look   Look
	action Action
}

// next picks the group that has waited longest for a command, when the
// sink is active. It returns ok false when there is nothing to send.
func (s *Sink) next(b *bridgeLoop) (job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.activeLocked() {
		return job{}, false
	}
	var pick *groupState
	var pickAction Action
	for _, g := range b.groups {
		if g.id == "" || !g.hasDesired {
			continue
		}
		if g.failedLook != nil && *g.failedLook == g.desired {
			continue
		}
		a := actionFor(g)
		if a.Empty() {
			g.dirtySince = time.Time{}
			continue
		}
		if g.dirtySince.IsZero() {
			g.dirtySince = time.Now()
		}
		if pick == nil || g.dirtySince.Before(pick.dirtySince) {
			pick, pickAction = g, a
		}
	}
	if pick == nil {
		return job{}, false
	}
	return job{group: pick, id: pick.id, look: pick.desired, action: pickAction}, true
}

// Run resolves the groups and drives every bridge until ctx ends. Bridge
// problems (unreachable, key rejected, unknown group) are logged, reported
// as the "hue" component's status and retried; they never end Run.
func (s *Sink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, b := range s.bridges {
		wg.Go(func() { s.runBridge(ctx, b) })
	}
	wg.Wait()
	<-ctx.Done() // also with no bridge configured
	return nil
}

// backoff is a capped exponential back-off with jitter.
type backoff struct {
	base     time.Duration
	failures int
}

func (bo *backoff) next(limit time.Duration) time.Duration {
	d := bo.base << min(bo.failures, 16)
	if d > limit || d <= 0 {
		d = limit
	}
	bo.failures++
	// Equal jitter: half fixed, half random, so retries of several bridges
	// spread out but never come back sooner than half the step.
	return d/2 + rand.N(d/2+1)
}

func (bo *backoff) reset() { bo.failures = 0 }

func (s *Sink) runBridge(ctx context.Context, b *bridgeLoop) {
	log := s.log.With("bridge", b.host)
	bo := backoff{base: max(s.interval, time.Second)}
	resolveBo := backoff{base: time.Second}
	var (
		notBefore    time.Time // min_interval after the last command
		retryAt      time.Time // back-off after a failure of the bridge
		resolveAt    time.Time // next look-up of groups not found
		unauthorized bool
		failing      bool   // an outage was logged
		groupProblem string // groups not found, while the bridge works
	)
	wait := func(until time.Time, wake bool) bool {
		d := time.Until(until)
		if d <= 0 {
			return ctx.Err() == nil
		}
		t := time.NewTimer(d)
		defer t.Stop()
		var wakeCh <-chan struct{}
		if wake {
			wakeCh = b.wake
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-wakeCh:
			return true
		}
	}
	fail := func(err error) {
		limit := backoffMax
		switch {
		case errors.Is(err, ErrUnauthorized):
			limit = unauthorizedBackoffMax
			if !unauthorized {
				unauthorized = true
				log.Error("hue bridge rejected the api key; press the link button and run `presence-bridge hue pair`", "err", err)
				s.setProblem(b.host, fmt.Sprintf("hue bridge %s rejected the API key: press its link button, run `presence-bridge hue pair -host %s` and set the new username", b.host, b.host))
			}
		case errors.Is(err, ErrRateLimited):
			// Busy, not broken: the health status stays as it is.
			if !failing {
				log.Warn("hue bridge is rate limiting; backing off", "err", err)
			}
			failing = true
		default:
			// Once per outage; the retries log at debug level.
			if !failing {
				log.Warn("hue bridge call failed; retrying with back-off", "err", err)
			} else {
				log.Debug("hue bridge call failed again", "err", err)
			}
			failing = true
			s.setProblem(b.host, fmt.Sprintf("hue bridge %s: %v", b.host, err))
		}
		retryAt = time.Now().Add(bo.next(limit))
	}
	succeed := func() {
		if unauthorized {
			log.Info("hue bridge accepts the api key again")
		} else if failing {
			log.Info("hue bridge answers again")
		}
		unauthorized, failing = false, false
		bo.reset()
		retryAt = time.Time{}
		s.setProblem(b.host, groupProblem)
	}

	for ctx.Err() == nil {
		if !retryAt.IsZero() && time.Now().Before(retryAt) {
			if !wait(retryAt, false) {
				return
			}
			continue
		}
		if s.unresolved(b) && !time.Now().Before(resolveAt) {
			err := s.resolve(ctx, b)
			switch {
			case ctx.Err() != nil:
				return
			case err == nil:
				if groupProblem != "" {
					log.Info("hue groups found")
				}
				groupProblem, resolveAt = "", time.Time{}
				resolveBo.reset()
				succeed()
			case errors.Is(err, ErrUnknownGroup):
				// The bridge works: drive the groups found, look for the
				// others again later.
				if err.Error() != groupProblem {
					log.Error("hue group not found", "err", err)
				}
				groupProblem = err.Error()
				resolveAt = time.Now().Add(resolveBo.next(backoffMax))
				succeed()
			default:
				fail(err)
				continue
			}
		}
		j, ok := s.next(b)
		if !ok {
			until := time.Now().Add(24 * time.Hour)
			if !resolveAt.IsZero() && s.unresolved(b) {
				until = resolveAt
			}
			if !wait(until, true) {
				return
			}
			continue
		}
		if time.Now().Before(notBefore) {
			if !wait(notBefore, false) {
				return
			}
			continue // the look may have changed meanwhile: pick again
		}
		err := b.client.SetGroupAction(ctx, j.id, j.action)
		// The next command waits min_interval from this one's end, so two
		// commands never reach the bridge closer than that.
		notBefore = time.Now().Add(s.interval)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.commandFailed(log, j, err)
			if errors.Is(err, ErrNotAvailable) {
				resolveAt = time.Time{} // look the group up again now
			} else if !permanent(err) {
				fail(err)
			}
			continue
		}
		succeed()
		s.mu.Lock()
		j.group.applied(j.action, j.look)
		s.mu.Unlock()
		log.Debug("hue group set", "group", j.group.ref, "group_id", j.id, "look", j.look.String(), "action", j.action.String())
		if s.onCommand != nil {
			s.onCommand(Command{Bridge: b.host, Group: j.group.ref, GroupID: j.id, Look: j.look, Action: j.action})
		}
	}
}

// permanent reports errors that retrying the same command cannot fix: the
// bridge refused a value or parameter.
func permanent(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Type {
	case ErrorTypeInvalidJSON, ErrorTypeMissingParameter, ErrorTypeNoSuchParameter, ErrorTypeInvalidValue:
		return true
	}
	return false
}

// commandFailed updates the group after a failed command: the lamps' state
// is unknown now; a vanished group is looked up again by name; a refused
// look is not retried until it changes.
func (s *Sink) commandFailed(log *slog.Logger, j job, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := j.group
	g.onKnown, g.colorKnown = false, false
	switch {
	case errors.Is(err, ErrNotAvailable):
		g.id = ""
		log.Warn("hue group is gone; looking it up again", "group", g.ref, "group_id", j.id)
	case permanent(err):
		look := j.look
		g.failedLook = &look
		log.Error("hue bridge refused a command", "group", g.ref, "action", j.action.String(), "err", err)
	}
}

func (s *Sink) unresolved(b *bridgeLoop) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range b.groups {
		if g.id == "" {
			return true
		}
	}
	return false
}

// resolve maps the bridge's group names to ids (again: groups get renamed)
// and learns each group's colour gamut.
func (s *Sink) resolve(ctx context.Context, b *bridgeLoop) error {
	groups, err := b.client.Groups(ctx)
	if err != nil {
		return err
	}
	gamuts, err := b.client.LightGamuts(ctx)
	if err != nil {
		if errors.Is(err, ErrUnauthorized) || ctx.Err() != nil {
			return err
		}
		// The gamut only refines colours: go on with gamut C.
		s.log.Debug("hue lights not listed; assuming gamut C", "bridge", b.host, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var missing []string
	for _, g := range b.groups {
		found, ok := findGroup(groups, g.ref)
		if !ok {
			g.id = ""
			missing = append(missing, g.ref)
			continue
		}
		if g.id != found.ID {
			g.onKnown, g.on, g.colorKnown = true, found.AllOn, false
		}
		g.id = found.ID
		gamut := groupGamut(found.Lights, gamuts)
		if gamut != g.gamut {
			g.gamut = gamut
			s.updateGamutLocked(g)
		}
	}
	if len(missing) > 0 {
		return unknownGroupError(b.host, missing, groups)
	}
	return nil
}

// updateGamutLocked recomputes the desired look in a new gamut.
func (s *Sink) updateGamutLocked(g *groupState) {
	if g.hasDesired {
		g.hasDesired = false
		s.updateDesiredLocked(g)
	}
}

// findGroup matches a configured reference: a numeric id, else the exact
// name, else the name ignoring case.
func findGroup(groups []Group, ref string) (Group, bool) {
	if numericID(ref) {
		for _, g := range groups {
			if g.ID == ref {
				return g, true
			}
		}
	}
	for _, g := range groups {
		if g.Name == ref {
			return g, true
		}
	}
	for _, g := range groups {
		if strings.EqualFold(g.Name, ref) {
			return g, true
		}
	}
	return Group{}, false
}

func unknownGroupError(host string, missing []string, groups []Group) error {
	var have []string
	for _, g := range groups {
		have = append(have, fmt.Sprintf("%q (id %s, %s)", g.Name, g.ID, g.Type))
	}
	list := "none"
	if len(have) > 0 {
		list = strings.Join(have, ", ")
	}
	quoted := make([]string, len(missing))
	for i, m := range missing {
		quoted[i] = fmt.Sprintf("%q", m)
	}
	return fmt.Errorf("%w: hue bridge %s has no group %s; its groups are: %s",
		ErrUnknownGroup, host, strings.Join(quoted, ", "), list)
}

// setProblem records a bridge's problem ("" when fine) and reports the
// "hue" component's status when it changed.
func (s *Sink) setProblem(host, problem string) {
	if s.status == nil {
		return
	}
	s.mu.Lock()
	s.problems[host] = problem
	var details []string
	hosts := make([]string, 0, len(s.problems))
	for h := range s.problems {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	for _, h := range hosts {
		if p := s.problems[h]; p != "" {
			details = append(details, p)
		}
	}
	ok := len(details) == 0
	detail := strings.Join(details, "; ")
	if s.reportedOnce && ok == s.reportOK && detail == s.reported {
		s.mu.Unlock()
		return
	}
	s.reportedOnce, s.reportOK, s.reported = true, ok, detail
	s.mu.Unlock()
	s.status.SetStatus(Component, ok, detail)
}
