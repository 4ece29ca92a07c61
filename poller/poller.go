// Package poller is the core of presence-poller, the cloud half of Presence
// Bridge: for every signed-in person it reads their Teams presence, detects
// a change against the last presence it stored, and publishes the change
// (SPEC §2's v1 body) to the person's Service Bus topic, with a heartbeat
// when nothing changed for graph.heartbeat.
//
// The refresh loop is independent of what triggers it: Engine.Cycle is one
// pass over everyone, called by serve's own ticker, by POST /api/refresh,
// and by the Azure Functions timer (poller/functions). At scale the timer
// only splits the cycle into work items (Engine.Enqueue: up to 650 people
// of one tenant each, on a Service Bus session queue, session = tenant),
// and Engine.Work does one item wherever the Functions host runs it.
// People of app-only tenants (entra.app_only_tenants) are read with the
// app's own token in batches of 650: ⌈N/650⌉ Graph requests per cycle for a
// tenant of N. The parts it consumes are small
// interfaces declared here (Store, PresenceReader, Publisher, TokenSource);
// the composition root (poller/cli) wires the real ones.
//
// Ordering and delivery: a detected change is first written to the store as
// pending (with its encoded body and message id <objectId>:<observedAt ms>),
// then published, then removed from pending. A publish that fails leaves it
// pending; the next cycle (or the next process, after a restart) publishes
// the pending messages first, oldest first, with the same ids and bodies,
// so Service Bus duplicate detection removes a send that had in fact gone
// through. Every write of a person's presence record is a compare-and-swap
// on its ETag, and the write that stores a message to publish also takes a
// short lease in the record, released once the message is sent: a caller
// that finds a live lease leaves the person to its holder. So several
// instances sharing a store never publish a change twice or one after a
// newer one (TestRacingConsumersNeverPublishOutOfOrder forces the
// interleavings).
package poller

import (
	"context"
	"errors"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// State is whether the poller can read a person.
type State string

// Account states (the accounts command prints them).
const (
	StateActive         State = "active"
	StateSignInRequired State = "signin_required"
)

// Account is a signed-in person.
type Account struct {
	UserID   presence.UserID `json:"userId"`
	TenantID string          `json:"tenantId"`
	UPN      string          `json:"upn"`
	Name     string          `json:"name"`
	// HomeAccountID is MSAL's account id (<oid>.<tid>), the token cache's
	// partition key.
	HomeAccountID string `json:"homeAccountId"`
	// Namespace is the host of the Service Bus namespace that holds the
	// person's topic; Topic its name.
	Namespace  string    `json:"namespace"`
	Topic      string    `json:"topic"`
	State      State     `json:"state"`
	SignedInAt time.Time `json:"signedInAt"`
}

// PresenceRecord is what the store keeps of a person's presence.
type PresenceRecord struct {
	// Last is the newest presence read and accepted as a change (published
	// or pending): change detection compares with it.
	Last presence.Update `json:"last"`
	// LastChange is when Last was first observed (the accounts listing's
	// "last change").
	LastChange time.Time `json:"lastChange"`
	// PublishedAt is when Service Bus last accepted a message of this
	// person (a change or a heartbeat): the heartbeat counts from it.
	PublishedAt time.Time `json:"publishedAt"`
	// Pending are messages not yet accepted by Service Bus, oldest first.
	Pending []Pending `json:"pending,omitempty"`
	// Lease, while it has not expired, says that one engine call is
	// publishing this person's pending messages; every other caller (another
	// instance, another work item) leaves the person alone until it is
	// released or expires, so that no message is sent after a newer one.
	Lease *Lease `json:"lease,omitempty"`
	// Inbox holds change notifications received but not opened yet
	// (decrypted and applied), oldest first: the webhook answers Graph once
	// a notification is here, and the engine opens it just after.
	Inbox []Inbound `json:"inbox,omitempty"`
	// Seen is the highest sequenceNumber seen for the person when it is
	// newer than Last's (a read or a notification of the same state), so
	// that a notification older than it is not taken for a change.
	Seen string `json:"seen,omitempty"`
}

// Inbound is one change notification as received, waiting to be opened.
type Inbound struct {
	// ID is unique per notification (Graph's notification id, else a hash
	// of its content): a redelivery is recognised while still here.
	ID string `json:"id"`
	// Content is opaque to the engine (Options.Open reads it).
	Content    []byte    `json:"content"`
	ReceivedAt time.Time `json:"receivedAt"`
}

// seen is the highest sequence number known for the person.
func (r PresenceRecord) seen() string {
	if r.Seen != "" && (r.Last.Sequence == "" || presence.Compare(presence.Update{Sequence: r.Last.Sequence}, presence.Update{Sequence: r.Seen}) > 0) {
		return r.Seen
	}
	return r.Last.Sequence
}

// Lease is a claim on a person's pending messages.
type Lease struct {
	// Owner identifies the claim (instance and call); Until is when it
	// lapses if its owner never releases it (a crash).
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

// Held reports whether the lease is still in force at now.
func (l *Lease) Held(now time.Time) bool { return l != nil && now.Before(l.Until) }

// Pending is one message waiting to be published, stored as it will be
// sent so that a retry is byte-identical.
type Pending struct {
	ID           string `json:"id"`
	Body         []byte `json:"body"`
	Availability string `json:"availability"`
	Activity     string `json:"activity"`
}

// ETag identifies one version of a stored presence record; "" means "does
// not exist".
type ETag string

// Store errors.
var (
	// ErrNotFound: no such account.
	ErrNotFound = errors.New("poller: not found")
	// ErrConflict: the record changed since it was read (compare-and-swap
	// lost).
	ErrConflict = errors.New("poller: the record changed since it was read")
)

// Store keeps accounts, their encrypted token caches and their presence.
// Implementations: poller/boltstore (embedded, one file) and
// poller/tablestore (Azure Table Storage, shared by instances). Every
// implementation passes poller/storetest.
type Store interface {
	// Accounts lists everyone, ordered by user id.
	Accounts(ctx context.Context) ([]Account, error)
	// Account returns one person, or ErrNotFound.
	Account(ctx context.Context, id presence.UserID) (Account, error)
	// PutAccount creates or replaces a person.
	PutAccount(ctx context.Context, a Account) error
	// DeleteAccount forgets a person: account, token cache, presence and
	// subscription record.
	// Deleting an unknown person is ErrNotFound.
	DeleteAccount(ctx context.Context, id presence.UserID) error
	// TokenCache returns the person's sealed token cache, nil when none.
	TokenCache(ctx context.Context, id presence.UserID) ([]byte, error)
	// PutTokenCache replaces it. The store never sees a plaintext token.
	PutTokenCache(ctx context.Context, id presence.UserID, sealed []byte) error
	// Presence returns the person's presence record and its ETag; a person
	// without one gives the zero record and "".
	Presence(ctx context.Context, id presence.UserID) (PresenceRecord, ETag, error)
	// PutPresence writes the record if its current ETag is ifMatch ("":
	// only if none exists), and returns the new ETag, or ErrConflict.
	PutPresence(ctx context.Context, id presence.UserID, rec PresenceRecord, ifMatch ETag) (ETag, error)

	// Subscriptions lists every person's change-notification subscription
	// record, ordered by user id.
	Subscriptions(ctx context.Context) ([]Subscription, error)
	// Subscription returns the person's subscription record and its ETag;
	// a person without one gives the zero record and "".
	Subscription(ctx context.Context, id presence.UserID) (Subscription, ETag, error)
	// PutSubscription writes the record if its current ETag is ifMatch ("":
	// only if none exists), and returns the new ETag, or ErrConflict.
	// DeleteAccount removes it with the person.
	PutSubscription(ctx context.Context, id presence.UserID, s Subscription, ifMatch ETag) (ETag, error)
	// KeyRing returns the sealed key ring of change notifications (the
	// RSA keys their resource data is encrypted to) and its ETag; nil and
	// "" when none was stored yet.
	KeyRing(ctx context.Context) ([]byte, ETag, error)
	// PutKeyRing replaces it if its current ETag is ifMatch ("": only if
	// none exists), and returns the new ETag, or ErrConflict.
	PutKeyRing(ctx context.Context, sealed []byte, ifMatch ETag) (ETag, error)
}

// PresenceReader reads presence from Graph (graph.Client is one). Me reads
// the token's own person; ByUserIDs reads up to 650 people of an app-only
// tenant with the app's own token.
type PresenceReader interface {
	Me(ctx context.Context, tenantID, token string) (presence.Update, error)
	ByUserIDs(ctx context.Context, tenantID, token string, ids []presence.UserID) ([]presence.Update, error)
}

// Message is one message for a person's topic.
type Message = servicebus.Message

// Publisher sends a message to a topic of a namespace and returns once
// Service Bus has accepted it.
type Publisher interface {
	Publish(ctx context.Context, namespace, topic string, m Message) error
}

// ErrSignInRequired: the person's refresh token no longer works (revoked,
// expired, consent withdrawn); only a new sign-in helps.
var ErrSignInRequired = errors.New("poller: the person must sign in again")

// TokenSource gives a Graph access token for a person, refreshing it with
// the stored refresh token when needed.
type TokenSource interface {
	Token(ctx context.Context, a Account) (string, error)
}

// AppTokenSource gives the app's own Graph token for a tenant whose admin
// granted the application permission Presence.Read.All (client
// credentials; entra.app_only_tenants).
type AppTokenSource interface {
	AppToken(ctx context.Context, tenantID string) (string, error)
}

// AccountView is one line of the accounts listing (CLI and /api/accounts).
type AccountView struct {
	ObjectID     presence.UserID `json:"objectId"`
	TenantID     string          `json:"tenantId"`
	UPN          string          `json:"upn"`
	State        State           `json:"state"`
	Availability string          `json:"availability"`
	LastChange   *time.Time      `json:"lastChange"`
	// Notifications is the state of the person's change notifications:
	// "subscribed until <time>", or "polled: <reason>" when no
	// subscription works; empty when none was tried (notifications off).
	Notifications string `json:"notifications,omitempty"`
}

// ListAccounts builds the accounts listing from the store.
func ListAccounts(ctx context.Context, s Store) ([]AccountView, error) {
	accts, err := s.Accounts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]AccountView, 0, len(accts))
	for _, a := range accts {
		v := AccountView{ObjectID: a.UserID, TenantID: a.TenantID, UPN: a.UPN, State: a.State}
		rec, tag, err := s.Presence(ctx, a.UserID)
		if err != nil {
			return nil, err
		}
		if tag != "" && rec.Last.UserID != "" {
			v.Availability = rec.Last.Availability.String()
			lc := rec.LastChange.UTC()
			v.LastChange = &lc
		}
		sub, stag, err := s.Subscription(ctx, a.UserID)
		if err != nil {
			return nil, err
		}
		if stag != "" {
			v.Notifications = sub.Describe(time.Now())
		}
		out = append(out, v)
	}
	return out, nil
}
