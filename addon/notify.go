package addon

import (
	"context"
	"github.com/presence-bridge/presence-bridge/internal/backoff"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
)

// NotifierOptions configures a Notifier. Zero fields take the defaults.
type NotifierOptions struct {
	// SupervisorURL is the Supervisor API (DefaultSupervisorURL).
	SupervisorURL string
	// Token is the Supervisor API token (the SUPERVISOR_TOKEN variable).
	Token string
	// HTTPClient makes the calls (a client without proxy).
	HTTPClient *http.Client
	// Logger receives delivery failures (discarded if nil).
	Logger *slog.Logger
	// UserFixable tells whether a failing component's detail is a problem
	// only the user can fix (a rejected Hue key, refused Service Bus
	// credentials). Only those raise a notification; other failures (an
	// outage) leave notifications as they are. Nil: every failure reported
	// to the Notifier is one.
	UserFixable func(component, detail string) bool
	// RetryMin and RetryMax bound the back-off between failed deliveries
	// (5s and 5m).
	RetryMin, RetryMax time.Duration
}

// Notifier raises a Home Assistant persistent notification when a component
// reports a problem only the user can fix, and dismisses it when the
// component reports healthy again. It is a bridge.StatusReporter: hook it to
// bridge.Health.Watch. SetStatus never blocks; Run delivers.
//
// One notification per component (notification_id "presence_bridge_<component>"),
// created once per problem and dismissed once when fixed, whatever the number
// of reports in between. A component's first healthy report also dismisses,
// so that a notification left by a previous run disappears once fixed.
type Notifier struct {
	sup      *supervisor
	logger   *slog.Logger
	fixable  func(component, detail string) bool
	retryMin time.Duration
	retryMax time.Duration
	wake     chan struct{}
	mu       sync.Mutex
	want     map[string]notice // what Home Assistant should show
	have     map[string]notice // what it shows, as far as known
}

// notice is one notification's state: a component's (worded by
// componentWording from its detail), or one a caller words itself (Show).
type notice struct {
	raised bool
	detail string
	// own notices: the caller's title and message; a changed message is
	// delivered again (the same notification_id replaces the old one).
	own            bool
	title, message string
}

var _ bridge.StatusReporter = (*Notifier)(nil)

// NewNotifier returns a Notifier; call Run to deliver.
func NewNotifier(o NotifierOptions) *Notifier {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 5 * time.Second
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Minute, o.RetryMin)
	}
	return &Notifier{
		sup:      newSupervisor(o.SupervisorURL, o.Token, o.HTTPClient),
		logger:   o.Logger.With("component", "notifications"),
		fixable:  o.UserFixable,
		retryMin: o.RetryMin,
		retryMax: o.RetryMax,
		wake:     make(chan struct{}, 1),
		want:     make(map[string]notice),
		have:     make(map[string]notice),
	}
}

// SetStatus records a component's status; Run raises or dismisses its
// notification accordingly.
func (n *Notifier) SetStatus(component string, ok bool, detail string) {
	n.mu.Lock()
	old, seen := n.want[component]
	switch {
	case ok:
		n.want[component] = notice{}
		if !seen {
			// Unknown what a previous run left: dismiss once.
			n.have[component] = notice{raised: true}
		}
	case n.fixable == nil || n.fixable(component, detail):
		if !old.raised {
			n.want[component] = notice{raised: true, detail: detail}
		}
	default:
		// A failure the user cannot fix: leave the notification as it is.
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Show raises (or updates) the notification key with the caller's title
// and Markdown message, or dismisses it when message is empty. The graph
// source's sign-in uses it: the code to enter while a sign-in waits,
// dismissed once it completes. The first call dismisses what a previous
// run may have left. It never blocks; Run delivers.
func (n *Notifier) Show(key, title, message string) {
	n.mu.Lock()
	_, seen := n.want[key]
	if message == "" {
		n.want[key] = notice{own: true}
		if !seen {
			n.have[key] = notice{raised: true, own: true}
		}
	} else {
		n.want[key] = notice{raised: true, own: true, title: title, message: message}
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Run delivers notification changes until ctx ends, retrying failed
// deliveries with back-off. It returns nil when ctx ends.
func (n *Notifier) Run(ctx context.Context) error {
	bo := backoff.Backoff{Min: n.retryMin, Max: n.retryMax}
	var timer *time.Timer
	var timerC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-n.wake:
		case <-timerC:
			timerC = nil
		}
		if n.deliver(ctx) {
			bo.Reset()
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		retry := bo.Next()
		if timer == nil {
			timer = time.NewTimer(retry)
		} else {
			timer.Reset(retry)
		}
		timerC = timer.C
	}
}

// deliver brings Home Assistant to the wanted state, component by component
// in name order, and reports whether every call succeeded.
func (n *Notifier) deliver(ctx context.Context) bool {
	allOK := true
	for {
		component, want, found := n.nextChange()
		if !found {
			return allOK
		}
		var err error
		if want.raised {
			err = n.create(ctx, component, want)
		} else {
			err = n.dismiss(ctx, component)
		}
		if err != nil {
			n.logger.Warn("home assistant notification not delivered", "notification_id", notificationID(component), "raise", want.raised, "err", err)
			return false
		}
		n.mu.Lock()
		// Record what was delivered; a newer wish is picked up next loop.
		n.have[component] = want
		n.mu.Unlock()
	}
}

// nextChange returns the first component whose wanted state differs from
// the delivered one.
func (n *Notifier) nextChange() (string, notice, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	names := make([]string, 0, len(n.want))
	for c, w := range n.want {
		if h, ok := n.have[c]; !ok && !w.raised || ok && h.raised == w.raised && h.message == w.message {
			continue
		}
		names = append(names, c)
	}
	if len(names) == 0 {
		return "", notice{}, false
	}
	slices.Sort(names)
	return names[0], n.want[names[0]], true
}

// notificationID names a component's notification.
func notificationID(component string) string { return "presence_bridge_" + component }

// componentWording titles a component's notification and says what the
// user can do.
func componentWording(component string) (title, hint string) {
	switch component {
	case "hue":
		return "Philips Hue", "The Hue bridge refused the add-on's API key. Create a new key with " +
			"`presence-bridge hue pair -host <bridge>` (press the bridge's link button first), " +
			"put it in the add-on's hue.bridges username option and restart the add-on."
	case "service_bus":
		return "Azure Service Bus", "Azure Service Bus refused the connection string. Check the add-on's " +
			"service_bus.connection_string (or the user's own one): it needs Listen rights on " +
			"the users' topics, and a regenerated key invalidates the old string."
	case "mqtt":
		return "MQTT broker", "The MQTT broker refused the add-on. Check the mqtt username and password " +
			"options, or leave mqtt.url empty to use the broker Home Assistant provides."
	}
	return component, "See the add-on's log for details."
}

func (n *Notifier) create(ctx context.Context, component string, want notice) error {
	title, msg := componentWording(component)
	if want.own {
		title, msg = want.title, want.message
	} else if want.detail != "" {
		msg = "**" + want.detail + "**\n\n" + msg
	}
	_, err := n.sup.do(ctx, http.MethodPost, "/core/api/services/persistent_notification/create", map[string]string{
		"title":           "Presence Bridge: " + title,
		"message":         msg,
		"notification_id": notificationID(component),
	})
	return err
}

func (n *Notifier) dismiss(ctx context.Context, component string) error {
	_, err := n.sup.do(ctx, http.MethodPost, "/core/api/services/persistent_notification/dismiss", map[string]string{
		"notification_id": notificationID(component),
	})
	return err
}
