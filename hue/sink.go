package hue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	ref    string            // configured name or id
	users  []presence.UserID // in configured order
	id     string            // resolved id; "" until resolved
	area   Area              // the colours every lamp of the group can show
	lights []string          // the group's lamps, from the last look-up

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
	// lastSent is when the group was last commanded (zero: never): the
	// group commanded least recently goes first, so groups that change
	// all the time share the bridge's budget in turn.
	lastSent time.Time
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
		// SPEC §5: with MQTT configured, Home Assistant counts as present
		// until homeassistant/status says offline (its birth message is
		// not retained, so a bridge started while it runs hears nothing).
		haOnline: opts.HomeAssistant,
		states:   make(map[presence.UserID]bridge.State),
		problems: make(map[string]string),
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
			g := &groupState{ref: gc.Group, area: GamutC.Area()}
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
// true for "online", false for "offline".
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
	look := s.palette.styleFor(sts[busiest(sts)]).look(g.area)
	if g.hasDesired && g.desired == look {
		return false
	}
	g.desired, g.hasDesired = look, true
	g.failedLook = nil
	return true
}

// actionFor is the action that takes the lamps from what the bridge knows
// to the desired look, empty when they show it already: colour fields only
// when changed, and "on" with every look that is on. A lamp in two groups
// (a Room and a Zone) is switched off by the other group's "off", and a
// lamp may be switched off by hand: a colour sent without "on" would leave
// it dark, while the one-command-per-second limit bounds the traffic.
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
	if !a.Empty() {
		a.On = ptr(true)
	}
	return a
}

// switchedOff records that a command switched group off's lamps off: a
// group that shares a lamp with it and should be on no longer knows that
// lamp's state, and is sent its whole look again.
func (b *bridgeLoop) switchedOff(off *groupState) {
	for _, g := range b.groups {
		if g == off || !g.hasDesired || !g.desired.On || !sharesLamp(g.lights, off.lights) {
			continue
		}
		g.onKnown, g.colorKnown = false, false
	}
}

func sharesLamp(a, b []string) bool {
	for _, l := range a {
		if slices.Contains(b, l) {
			return true
		}
	}
	return false
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
	g.lastSent = time.Now()
}

// job is one command the loop decided to send.
type job struct {
	group  *groupState
	id     string
	look   Look
	action Action
}

// next picks, when the sink is active, the group to command: of those whose
// lamps do not show their look, the one commanded least recently. (Picking
// the one that waited longest starved a group: a look that flips back to
// what the lamps show for a moment restarted its wait.) It returns ok false
// when there is nothing to send.
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
			continue
		}
		if pick == nil || g.lastSent.Before(pick.lastSent) {
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
	g.lastSent = time.Now() // its turn is used: the others go first
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
		g.lights = found.Lights
		if area := groupArea(found.Lights, gamuts); !slices.Equal(area, g.area) {
			g.area = area
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
