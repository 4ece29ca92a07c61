// Package sbsource is the bridge's Service Bus source: it reads presence
// messages in peek-lock mode from every configured user's topic subscription
// (or from one queue that every subscription auto-forwards into), decodes them
// with the presence package and hands them to the core.
//
// Settlement follows the "no presence change is lost" rule: a message is
// completed only once the core reports its outcome (Applied once durable,
// Heartbeat, Stale and Unconfigured at once); invalid messages are
// dead-lettered with the presence package's reason and a short description;
// everything still in hand when the source stops is abandoned so that another
// consumer gets it at once.
//
// Each receiver takes one batch at a time; a batch's settlements run on
// while the next one is received. Within a batch only the newest update per
// user is submitted and kept in hand; the messages it supersedes change
// nothing and are completed as they arrive. While the core is not ready (its durable sink, MQTT, is
// down) no batch is taken, and while a batch waits for the core its locks are
// renewed: a message is never abandoned to wait, because every abandon counts
// as a delivery and Service Bus dead-letters after its max delivery count.
package sbsource

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// SourceName is what the source passes to Submit and the component it
// reports its status under.
const SourceName = "service_bus"

// Options configure a Source. Zero tuning values take the defaults.
type Options struct {
	Config config.ServiceBus
	Users  []config.User
	Logger *slog.Logger
	// Status receives the connectivity of all receivers together, as
	// component "service_bus". Optional.
	Status bridge.StatusReporter

	// BatchSize is the most messages taken per receive; default 100.
	BatchSize int
	// MaxHeld is the most messages one batch takes: while receives bring
	// more than one message (a backlog), the source keeps receiving up to
	// this many before it submits, so that a backlog reaches the sinks as one
	// state per user; default 10,000. Only the newest message of each user
	// stays in hand (the others are completed as they arrive), so memory
	// grows with the users in the batch, not with this number.
	MaxHeld int
	// BacklogWait is how long, in a backlog, the source waits for the
	// first message of the next one before it submits what it holds;
	// default 250ms (a round trip to Azure with room to spare). It does not
	// wait once a peek shows that no message follows the ones it took.
	BacklogWait time.Duration
	// TimeAfterFirstMessage is how long the first receive of a batch waits
	// for more messages after the first one arrived; default 1ms. Live
	// updates come one at a time, so this wait is added to each one's
	// latency: the SDK's own default, 20ms, was most of the bridge's share.
	TimeAfterFirstMessage time.Duration
	// BacklogTimeAfterFirstMessage is the same wait for the receives that
	// follow once a backlog is seen (a receive brought more than one
	// message); default 20ms (the SDK's default), or TimeAfterFirstMessage
	// if that is longer. A backlog's receives return as soon as they are
	// full, but a short window there cuts batches short when the broker
	// sends slowly, which ends the collapse early and sends a user's state
	// more than once.
	BacklogTimeAfterFirstMessage time.Duration
	// StreamGap: while the last two batches were taken less than this
	// apart, messages come in a stream, and a receive waits
	// BacklogTimeAfterFirstMessage after its first one instead of
	// TimeAfterFirstMessage; default 50ms (live changes of a household
	// come seconds apart, and keep the short wait).
	StreamGap time.Duration
	// SettleTimeout bounds each settlement, and the abandons after the
	// source is cancelled; default 10s.
	SettleTimeout time.Duration
	// SettleConcurrency is how many settlements of one receiver run at once;
	// default 16.
	SettleConcurrency int
	// RetryMin and RetryMax bound the back-off after a connection failure;
	// defaults 1s and 30s.
	RetryMin, RetryMax time.Duration
	// ConfigRetry is the wait before trying again an entity that does not
	// exist or that the key may not read (a configuration problem: it is
	// not retried in a hot loop); default 1 minute.
	ConfigRetry time.Duration
	// DefaultLockDuration is assumed when a message's lock expiry cannot be
	// trusted (clock skew); default 30s.
	DefaultLockDuration time.Duration
	// ClientOptions override the SDK client's options (retries, TLS,
	// websockets). Default: short SDK retries; the source retries on its own.
	ClientOptions *azservicebus.ClientOptions

	// onSettled, when set (tests and benchmarks), is called after each
	// successful settlement.
	onSettled func(op string)
	// openReceiver, when set (tests), opens receivers instead of the SDK:
	// path is a queue or <topic>/Subscriptions/<name>.
	openReceiver func(path string) (receiver, error)
}

func (o *Options) setDefaults() {
	o.BatchSize = cmp.Or(o.BatchSize, 100)
	o.MaxHeld = max(cmp.Or(o.MaxHeld, 10000), o.BatchSize)
	o.BacklogWait = cmp.Or(o.BacklogWait, 250*time.Millisecond)
	o.TimeAfterFirstMessage = cmp.Or(o.TimeAfterFirstMessage, time.Millisecond)
	o.BacklogTimeAfterFirstMessage = cmp.Or(o.BacklogTimeAfterFirstMessage, max(20*time.Millisecond, o.TimeAfterFirstMessage))
	o.StreamGap = cmp.Or(o.StreamGap, 50*time.Millisecond)
	o.SettleTimeout = cmp.Or(o.SettleTimeout, 10*time.Second)
	o.SettleConcurrency = cmp.Or(o.SettleConcurrency, 16)
	o.RetryMin = cmp.Or(o.RetryMin, time.Second)
	o.RetryMax = max(cmp.Or(o.RetryMax, 30*time.Second), o.RetryMin)
	o.ConfigRetry = cmp.Or(o.ConfigRetry, time.Minute)
	o.DefaultLockDuration = cmp.Or(o.DefaultLockDuration, 30*time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ClientOptions == nil {
		o.ClientOptions = servicebus.ClientOptions()
	}
}

// Source reads presence messages from Service Bus.
type Source struct {
	opts      Options
	log       *slog.Logger
	health    *health
	clients   []*azservicebus.Client
	receivers []*entityReceiver
}

// receiver is the part of *azservicebus.Receiver the source uses.
type receiver interface {
	ReceiveMessages(ctx context.Context, maxMessages int, options *azservicebus.ReceiveMessagesOptions) ([]*azservicebus.ReceivedMessage, error)
	PeekMessages(ctx context.Context, maxMessageCount int, options *azservicebus.PeekMessagesOptions) ([]*azservicebus.ReceivedMessage, error)
	CompleteMessage(ctx context.Context, message *azservicebus.ReceivedMessage, options *azservicebus.CompleteMessageOptions) error
	AbandonMessage(ctx context.Context, message *azservicebus.ReceivedMessage, options *azservicebus.AbandonMessageOptions) error
	DeadLetterMessage(ctx context.Context, message *azservicebus.ReceivedMessage, options *azservicebus.DeadLetterOptions) error
	RenewMessageLock(ctx context.Context, message *azservicebus.ReceivedMessage, options *azservicebus.RenewMessageLockOptions) error
	Close(ctx context.Context) error
}

var _ receiver = (*azservicebus.Receiver)(nil)

// New prepares one receiver per user subscription, or one for the queue when
// Config.Queue is set. It does not connect: Run does.
func New(opts Options) (*Source, error) {
	opts.setDefaults()
	s := &Source{opts: opts, log: opts.Logger.With("component", SourceName)}
	s.health = newHealth(s.log, opts.Status)
	clients := map[string]*azservicebus.Client{}
	client := func(connStr string) (*azservicebus.Client, error) {
		if c, ok := clients[connStr]; ok {
			return c, nil
		}
		c, err := azservicebus.NewClientFromConnectionString(connStr, opts.ClientOptions)
		if err != nil {
			// The SDK's parse errors do not repeat the key.
			return nil, fmt.Errorf("servicebus: connection string: %w", err)
		}
		clients[connStr] = c
		s.clients = append(s.clients, c)
		return c, nil
	}
	add := func(connStr, topic, sub, queue string, userID presence.UserID) error {
		path := queue
		if topic != "" {
			path = topic + "/Subscriptions/" + sub
		}
		var open func() (receiver, error)
		if opts.openReceiver != nil {
			open = func() (receiver, error) { return opts.openReceiver(path) }
		} else {
			c, err := client(connStr)
			if err != nil {
				return err
			}
			open = func() (receiver, error) { return c.NewReceiverForQueue(queue, nil) }
			if topic != "" {
				open = func() (receiver, error) { return c.NewReceiverForSubscription(topic, sub, nil) }
			}
		}
		r, err := open()
		if err != nil {
			return fmt.Errorf("servicebus: receiver for %s: %w", path, err)
		}
		er := s.newEntityReceiver(r, path, userID)
		er.settlement = open
		s.receivers = append(s.receivers, er)
		return nil
	}
	cfg := opts.Config
	var err error
	switch {
	case cfg.Queue != "":
		if topic, sub, ok := strings.Cut(cfg.Queue, "/Subscriptions/"); ok {
			err = add(cfg.ConnectionString.Value(), topic, sub, "", "")
		} else {
			err = add(cfg.ConnectionString.Value(), "", "", cfg.Queue, "")
		}
	case cfg.Subscription == "":
		err = errors.New("servicebus: neither service_bus.subscription nor service_bus.queue is set")
	case len(opts.Users) == 0:
		err = errors.New("servicebus: no users configured")
	default:
		for _, u := range opts.Users {
			cs := cmp.Or(u.ConnectionString.Value(), cfg.ConnectionString.Value())
			if err = add(cs, u.TopicName(), cfg.Subscription, "", u.ID); err != nil {
				break
			}
		}
	}
	if err != nil {
		s.closeClients(context.Background())
		return nil, err
	}
	return s, nil
}

func (s *Source) newEntityReceiver(r receiver, path string, userID presence.UserID) *entityReceiver {
	return &entityReceiver{
		opts:   &s.opts,
		log:    s.log.With("entity", path),
		health: s.health,
		rcv:    r,
		path:   path,
		userID: userID,
	}
}

// Name is the component the source reports its health under.
func (s *Source) Name() string { return SourceName }

// Entities lists the entity paths the source reads, in configuration order.
func (s *Source) Entities() []string {
	out := make([]string, len(s.receivers))
	for i, r := range s.receivers {
		out[i] = r.path
	}
	return out
}

// Run receives until ctx ends, then abandons the messages in hand and closes
// the connections. It returns nil after a cancellation; a failing entity
// never stops it (the failure is logged and reported as status).
func (s *Source) Run(ctx context.Context, sub bridge.Submitter) error {
	s.health.start(s.Entities())
	// Once ctx ends, the goodbyes (abandons, closing links and clients) share
	// one deadline, so the whole stop takes at most SettleTimeout.
	stopCtx, cancel := stopContext(ctx, s.opts.SettleTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range s.receivers {
		wg.Go(func() {
			r.run(ctx, stopCtx, sub)
			r.shutdown(stopCtx)
		})
	}
	wg.Wait()
	s.closeClients(stopCtx)
	return nil
}

// stopContext returns a context that is not cancelled with ctx but ends d
// after ctx does.
func stopContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	stopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var timer *time.Timer
	var mu sync.Mutex
	unregister := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		timer = time.AfterFunc(d, cancel)
	})
	return stopCtx, func() {
		unregister()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

func (s *Source) closeClients(ctx context.Context) {
	for _, c := range s.clients {
		_ = c.Close(ctx)
	}
}
