// Package tablestore is presence-poller's store in Azure Table Storage
// (storage.tables), for the Azure Functions deployment and for several serve
// processes sharing one store. Every write of a presence record is
// conditional on its ETag, so instances that run at once coordinate through
// the table: a stale writer gets poller.ErrConflict.
//
// Layout: one table (presencepoller by default). A person's rows share a
// partition, named by the first two characters of their object id (256
// partitions, so that no partition carries more than a sliver of the load
// and reads spread over the service's partition servers), with row keys
//
//	a:<objectId>  the account (JSON in Data)
//	c:<objectId>  the sealed token cache (binary, in chunks)
//	p:<objectId>  the presence record (JSON, in chunks); its entity ETag is
//	              the record's ETag
//	s:<objectId>  the change-notification subscription (JSON), ETag likewise
//
// and one more row, partition "~", row key k:notification-keys: the sealed
// key ring of change notifications.
//
// Forgetting a person deletes their rows in one entity group
// transaction. Listing accounts runs one range query per leading hex digit,
// sixteen at a time, and sorts the result.
//
// A property holds at most 64 KiB; values are split over D0, D1, ... (a
// row holds at most 1 MiB, more than a token cache or a record with a long
// backlog of pending changes needs).
package tablestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// DefaultTable is the table the store keeps everything in.
const DefaultTable = "presencepoller"

// chunk is the size of one property's share of a value: under Table
// Storage's 64 KiB per property.
const chunk = 60 << 10

// maxChunks bounds a value (a row holds at most 1 MiB).
const maxChunks = 15

// Options configure a Store.
type Options struct {
	// ConnectionString of the storage account (AccountName and AccountKey,
	// or TableEndpoint with a key or SharedAccessSignature).
	ConnectionString string
	// Table is the table name; default DefaultTable. It is created when
	// missing.
	Table string
	// HTTPClient sends the requests; default azcore's.
	HTTPClient *http.Client
}

// Store is a poller.Store in Table Storage.
type Store struct {
	c *aztables.Client
}

var _ poller.Store = (*Store)(nil)

// Open connects and creates the table when it is missing.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	var opts aztables.ClientOptions
	opts.Retry = policy.RetryOptions{MaxRetries: 3, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 3 * time.Second}
	if o.HTTPClient != nil {
		opts.Transport = o.HTTPClient
	}
	svc, err := aztables.NewServiceClientFromConnectionString(o.ConnectionString, &opts)
	if err != nil {
		// The SDK's errors can quote the connection string: say what it is
		// instead.
		return nil, errors.New("tablestore: storage.tables is not a usable storage connection string")
	}
	s := &Store{c: svc.NewClient(o.Table)}
	if _, err := s.c.CreateTable(ctx, nil); err != nil && !hasCode(err, aztables.TableAlreadyExists) {
		return nil, fmt.Errorf("tablestore: create table %s: %w", o.Table, clean(err))
	}
	return s, nil
}

// Close releases nothing: the store holds no connection of its own.
func (s *Store) Close() error { return nil }

// Ping checks that the table answers (health).
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.c.GetEntity(ctx, "~", "~ping", nil)
	if err != nil && !hasCode(err, aztables.ResourceNotFound) && !hasCode(err, aztables.EntityNotFound) && !isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("tablestore: %w", clean(err))
	}
	return nil
}

func partition(id presence.UserID) string {
	c := string(presence.CanonicalUserID(string(id)))
	for len(c) < 2 {
		c += "_"
	}
	return c[:2]
}

func rowKey(kind byte, id presence.UserID) (string, error) {
	c := string(presence.CanonicalUserID(string(id)))
	if c == "" || strings.ContainsAny(c, "/\\#?\t\n\r") || len(c) > 200 {
		return "", fmt.Errorf("tablestore: %q cannot be a row key", id)
	}
	return string(kind) + ":" + c, nil
}

// entity is a row as sent and read: the keys and the value in chunks.
type entity map[string]any

func newEntity(pk, rk string, value []byte) (entity, error) {
	if len(value) > chunk*maxChunks {
		return nil, fmt.Errorf("tablestore: a value of %d bytes is over the %d a row holds", len(value), chunk*maxChunks)
	}
	e := entity{"PartitionKey": pk, "RowKey": rk}
	n := 0
	for {
		end := min((n+1)*chunk, len(value))
		e[fmt.Sprintf("D%d", n)] = value[n*chunk : end]
		e[fmt.Sprintf("D%d@odata.type", n)] = "Edm.Binary"
		n++
		if end >= len(value) {
			break
		}
	}
	e["N"] = int32(n)
	return e, nil
}

// value joins the chunks of a row read back.
func value(raw []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	var n int
	if err := json.Unmarshal(m["N"], &n); err != nil {
		return nil, fmt.Errorf("row without a chunk count: %w", err)
	}
	var out []byte
	for i := range n {
		var part []byte // Edm.Binary arrives as base64 text
		if err := json.Unmarshal(m[fmt.Sprintf("D%d", i)], &part); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		out = append(out, part...)
	}
	return out, nil
}

func (s *Store) get(ctx context.Context, kind byte, id presence.UserID) ([]byte, azcore.ETag, bool, error) {
	rk, err := rowKey(kind, id)
	if err != nil {
		return nil, "", false, err
	}
	resp, err := s.c.GetEntity(ctx, partition(id), rk, nil)
	if err != nil {
		if hasCode(err, aztables.ResourceNotFound) || hasCode(err, aztables.EntityNotFound) || isStatus(err, http.StatusNotFound) {
			return nil, "", false, nil
		}
		return nil, "", false, clean(err)
	}
	v, err := value(resp.Value)
	if err != nil {
		return nil, "", false, fmt.Errorf("row %s: %w", rk, err)
	}
	return v, resp.ETag, true, nil
}

func (s *Store) upsert(ctx context.Context, kind byte, id presence.UserID, v []byte) error {
	rk, err := rowKey(kind, id)
	if err != nil {
		return err
	}
	e, err := newEntity(partition(id), rk, v)
	if err != nil {
		return err
	}
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = s.c.UpsertEntity(ctx, body, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace})
	return clean(err)
}

// Accounts lists everyone, ordered by user id.
func (s *Store) Accounts(ctx context.Context) ([]poller.Account, error) {
	const digits = "0123456789abcdef"
	var (
		mu   sync.Mutex
		out  []poller.Account
		errs []error
		wg   sync.WaitGroup
	)
	// One range per leading hex digit, plus what sorts outside them (ids
	// that are not GUIDs: tests, hand-made rows).
	ranges := [][2]string{{"", "0"}}
	for i := range len(digits) {
		hi := "g"
		if i+1 < len(digits) {
			hi = digits[i+1 : i+2]
		}
		ranges = append(ranges, [2]string{digits[i : i+1], hi})
	}
	ranges = append(ranges, [2]string{"g", "~~"})
	for _, r := range ranges {
		wg.Go(func() {
			filter := fmt.Sprintf("PartitionKey ge '%s' and PartitionKey lt '%s' and RowKey ge 'a:' and RowKey lt 'a;'", r[0], r[1])
			got, err := s.list(ctx, filter)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out = append(out, got...)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tablestore: accounts: %w", err)
	}
	slices.SortFunc(out, func(a, b poller.Account) int { return strings.Compare(string(a.UserID), string(b.UserID)) })
	return out, nil
}

func (s *Store) list(ctx context.Context, filter string) ([]poller.Account, error) {
	var out []poller.Account
	pager := s.c.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, clean(err)
		}
		for _, raw := range page.Entities {
			v, err := value(raw)
			if err != nil {
				return nil, err
			}
			var a poller.Account
			if err := json.Unmarshal(v, &a); err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// Account returns one person, or poller.ErrNotFound.
func (s *Store) Account(ctx context.Context, id presence.UserID) (poller.Account, error) {
	var a poller.Account
	v, _, ok, err := s.get(ctx, 'a', id)
	if err != nil {
		return a, fmt.Errorf("tablestore: account: %w", err)
	}
	if !ok {
		return a, poller.ErrNotFound
	}
	if err := json.Unmarshal(v, &a); err != nil {
		return a, fmt.Errorf("tablestore: account: %w", err)
	}
	return a, nil
}

// PutAccount creates or replaces a person.
func (s *Store) PutAccount(ctx context.Context, a poller.Account) error {
	a.UserID = presence.CanonicalUserID(string(a.UserID))
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("tablestore: put account: %w", err)
	}
	if err := s.upsert(ctx, 'a', a.UserID, v); err != nil {
		return fmt.Errorf("tablestore: put account: %w", err)
	}
	return nil
}

// DeleteAccount forgets a person: their rows go in one transaction.
func (s *Store) DeleteAccount(ctx context.Context, id presence.UserID) error {
	return s.deleteAccount(ctx, id, 3)
}

func (s *Store) deleteAccount(ctx context.Context, id presence.UserID, attempts int) error {
	if _, err := s.Account(ctx, id); err != nil {
		return err
	}
	var actions []aztables.TransactionAction
	for _, kind := range []byte{'a', 'c', 'p', 's'} {
		_, tag, ok, err := s.get(ctx, kind, id)
		if err != nil {
			return fmt.Errorf("tablestore: delete: %w", err)
		}
		if !ok {
			continue
		}
		rk, _ := rowKey(kind, id)
		body, _ := json.Marshal(entity{"PartitionKey": partition(id), "RowKey": rk})
		actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeDelete, Entity: body, IfMatch: &tag})
	}
	if len(actions) == 0 {
		return poller.ErrNotFound
	}
	if _, err := s.c.SubmitTransaction(ctx, actions, nil); err != nil {
		if attempts > 1 && (isStatus(err, http.StatusPreconditionFailed) || hasCode(err, aztables.UpdateConditionNotSatisfied)) {
			// A row changed between the read and the delete (a cycle wrote
			// the presence): read again and delete what is there.
			return s.deleteAccount(ctx, id, attempts-1)
		}
		return fmt.Errorf("tablestore: delete: %w", clean(err))
	}
	return nil
}

// TokenCache returns the sealed cache, nil when none.
func (s *Store) TokenCache(ctx context.Context, id presence.UserID) ([]byte, error) {
	v, _, ok, err := s.get(ctx, 'c', id)
	if err != nil {
		return nil, fmt.Errorf("tablestore: token cache: %w", err)
	}
	if !ok {
		return nil, nil
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// PutTokenCache replaces the sealed cache.
func (s *Store) PutTokenCache(ctx context.Context, id presence.UserID, sealed []byte) error {
	if err := s.upsert(ctx, 'c', id, sealed); err != nil {
		return fmt.Errorf("tablestore: put token cache: %w", err)
	}
	return nil
}

// Presence returns the record and its ETag ("" when none).
func (s *Store) Presence(ctx context.Context, id presence.UserID) (poller.PresenceRecord, poller.ETag, error) {
	var rec poller.PresenceRecord
	v, tag, ok, err := s.get(ctx, 'p', id)
	if err != nil {
		return rec, "", fmt.Errorf("tablestore: presence: %w", err)
	}
	if !ok {
		return rec, "", nil
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return poller.PresenceRecord{}, "", fmt.Errorf("tablestore: presence: %w", err)
	}
	return rec, poller.ETag(tag), nil
}

// PutPresence writes the record if its ETag is still ifMatch: an insert
// when ifMatch is "" (refused when the row exists), else a replace with
// If-Match (refused when the row changed or is gone).
func (s *Store) PutPresence(ctx context.Context, id presence.UserID, rec poller.PresenceRecord, ifMatch poller.ETag) (poller.ETag, error) {
	v, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("tablestore: put presence: %w", err)
	}
	rk, err := rowKey('p', id)
	if err != nil {
		return "", err
	}
	tag, err := s.putIfMatch(ctx, partition(id), rk, v, ifMatch)
	if err != nil && !errors.Is(err, poller.ErrConflict) {
		return "", fmt.Errorf("tablestore: put presence: %w", err)
	}
	return tag, err
}

// putIfMatch writes a row conditionally: an insert when ifMatch is ""
// (poller.ErrConflict when the row exists), else a replace with If-Match
// (poller.ErrConflict when the row changed or is gone).
func (s *Store) putIfMatch(ctx context.Context, pk, rk string, v []byte, ifMatch poller.ETag) (poller.ETag, error) {
	e, err := newEntity(pk, rk, v)
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	if ifMatch == "" {
		resp, err := s.c.AddEntity(ctx, body, nil)
		switch {
		case hasCode(err, aztables.EntityAlreadyExists) || isStatus(err, http.StatusConflict):
			return "", poller.ErrConflict
		case err != nil:
			return "", clean(err)
		}
		return poller.ETag(resp.ETag), nil
	}
	tag := azcore.ETag(ifMatch)
	resp, err := s.c.UpdateEntity(ctx, body, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeReplace, IfMatch: &tag})
	switch {
	case isStatus(err, http.StatusPreconditionFailed) || isStatus(err, http.StatusNotFound) ||
		hasCode(err, aztables.UpdateConditionNotSatisfied) || hasCode(err, aztables.ResourceNotFound):
		return "", poller.ErrConflict
	case err != nil:
		return "", clean(err)
	}
	return poller.ETag(resp.ETag), nil
}

// Subscriptions lists every subscription record, ordered by user id.
func (s *Store) Subscriptions(ctx context.Context) ([]poller.Subscription, error) {
	var out []poller.Subscription
	filter := "RowKey ge 's:' and RowKey lt 's;'"
	pager := s.c.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("tablestore: subscriptions: %w", clean(err))
		}
		for _, raw := range page.Entities {
			v, err := value(raw)
			if err != nil {
				return nil, fmt.Errorf("tablestore: subscriptions: %w", err)
			}
			var sub poller.Subscription
			if err := json.Unmarshal(v, &sub); err != nil {
				return nil, fmt.Errorf("tablestore: subscriptions: %w", err)
			}
			out = append(out, sub)
		}
	}
	slices.SortFunc(out, func(a, b poller.Subscription) int { return strings.Compare(string(a.UserID), string(b.UserID)) })
	return out, nil
}

// Subscription returns the person's subscription record and its ETag (""
// when none).
func (s *Store) Subscription(ctx context.Context, id presence.UserID) (poller.Subscription, poller.ETag, error) {
	var sub poller.Subscription
	v, tag, ok, err := s.get(ctx, 's', id)
	if err != nil {
		return sub, "", fmt.Errorf("tablestore: subscription: %w", err)
	}
	if !ok {
		return sub, "", nil
	}
	if err := json.Unmarshal(v, &sub); err != nil {
		return poller.Subscription{}, "", fmt.Errorf("tablestore: subscription: %w", err)
	}
	return sub, poller.ETag(tag), nil
}

// PutSubscription writes the record if its ETag is still ifMatch.
func (s *Store) PutSubscription(ctx context.Context, id presence.UserID, sub poller.Subscription, ifMatch poller.ETag) (poller.ETag, error) {
	v, err := json.Marshal(sub)
	if err != nil {
		return "", fmt.Errorf("tablestore: put subscription: %w", err)
	}
	rk, err := rowKey('s', id)
	if err != nil {
		return "", err
	}
	tag, err := s.putIfMatch(ctx, partition(id), rk, v, ifMatch)
	if err != nil && !errors.Is(err, poller.ErrConflict) {
		return "", fmt.Errorf("tablestore: put subscription: %w", err)
	}
	return tag, err
}

// The key ring's row.
const (
	metaPartition = "~"
	keyRingRow    = "k:notification-keys"
)

// KeyRing returns the sealed key ring and its ETag (nil and "" when none).
func (s *Store) KeyRing(ctx context.Context) ([]byte, poller.ETag, error) {
	resp, err := s.c.GetEntity(ctx, metaPartition, keyRingRow, nil)
	if hasCode(err, aztables.ResourceNotFound) || hasCode(err, aztables.EntityNotFound) || isStatus(err, http.StatusNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("tablestore: key ring: %w", clean(err))
	}
	v, err := value(resp.Value)
	if err != nil {
		return nil, "", fmt.Errorf("tablestore: key ring: %w", err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, poller.ETag(resp.ETag), nil
}

// PutKeyRing replaces the sealed key ring if its ETag is still ifMatch.
func (s *Store) PutKeyRing(ctx context.Context, sealed []byte, ifMatch poller.ETag) (poller.ETag, error) {
	tag, err := s.putIfMatch(ctx, metaPartition, keyRingRow, sealed, ifMatch)
	if err != nil && !errors.Is(err, poller.ErrConflict) {
		return "", fmt.Errorf("tablestore: put key ring: %w", err)
	}
	return tag, err
}

func hasCode(err error, code aztables.TableErrorCode) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.ErrorCode == string(code)
}

func isStatus(err error, status int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

// clean shortens the SDK's response errors (which repeat the request and
// the whole reply) to the status and the service's error code.
func clean(err error) error {
	if err == nil {
		return nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("HTTP %d %s", re.StatusCode, re.ErrorCode)
	}
	return err
}
