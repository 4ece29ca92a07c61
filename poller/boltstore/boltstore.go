// Package boltstore is presence-poller's embedded store: one bbolt file
// (presence-poller.db) under data_dir, mode 0600, for a single serve
// process. bbolt holds an exclusive lock on the file while it is open, so a
// second process (the accounts command beside a running serve) gets
// ErrLocked and goes through the server's API instead.
//
// Buckets: accounts (JSON), caches (sealed token caches, opaque bytes),
// presence and subscriptions (an 8-byte version followed by the JSON record;
// the ETag is the version), and meta (the sealed key ring of change
// notifications, versioned the same way).
package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// FileName is the store's file under data_dir.
const FileName = "presence-poller.db"

// ErrLocked: another process has the store open.
var ErrLocked = errors.New("boltstore: the store is in use by another process (a running serve)")

var (
	bucketAccounts = []byte("accounts")
	bucketCaches   = []byte("caches")
	bucketPresence = []byte("presence")
	bucketSubs     = []byte("subscriptions")
	bucketMeta     = []byte("meta")
	keyKeyRing     = []byte("notification-keys")
)

// Store is a poller.Store in one bbolt file.
type Store struct {
	db      *bolt.DB
	writers atomic.Int32 // writes under way
}

var _ poller.Store = (*Store)(nil)

// Open opens (creating) the store in dir, waiting up to wait for another
// process to release it.
func Open(dir string, wait time.Duration) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: max(wait, time.Millisecond)})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAccounts, bucketCaches, bucketPresence, bucketSubs, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: init %s: %w", path, err)
	}
	// A write waits at most this long for others to share its commit.
	db.MaxBatchDelay = batchDelay
	return &Store{db: db}, nil
}

// batchDelay bounds what a batched write waits for company (bbolt's default
// is 10 ms); while a commit is under way the next writers gather anyway.
const batchDelay = time.Millisecond

// Close releases the file.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks that the store answers (health).
func (s *Store) Ping(context.Context) error {
	return s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccounts) == nil {
			return errors.New("boltstore: accounts bucket missing")
		}
		return nil
	})
}

func key(id presence.UserID) []byte { return []byte(presence.CanonicalUserID(string(id))) }

// Accounts lists everyone ordered by user id (bbolt keeps keys sorted).
func (s *Store) Accounts(ctx context.Context) ([]poller.Account, error) {
	var out []poller.Account
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).ForEach(func(_, v []byte) error {
			var a poller.Account
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: accounts: %w", err)
	}
	return out, nil
}

// Account returns one person.
func (s *Store) Account(ctx context.Context, id presence.UserID) (poller.Account, error) {
	var a poller.Account
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAccounts).Get(key(id))
		if v == nil {
			return poller.ErrNotFound
		}
		return json.Unmarshal(v, &a)
	})
	if err != nil && !errors.Is(err, poller.ErrNotFound) {
		return a, fmt.Errorf("boltstore: account: %w", err)
	}
	return a, err
}

// PutAccount creates or replaces a person.
func (s *Store) PutAccount(ctx context.Context, a poller.Account) error {
	a.UserID = presence.CanonicalUserID(string(a.UserID))
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("boltstore: put account: %w", err)
	}
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketAccounts).Put(key(a.UserID), v) })
}

// DeleteAccount forgets a person with their token cache, presence and
// subscription record.
func (s *Store) DeleteAccount(ctx context.Context, id presence.UserID) error {
	return s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccounts).Get(key(id)) == nil {
			return poller.ErrNotFound
		}
		for _, b := range [][]byte{bucketAccounts, bucketCaches, bucketPresence, bucketSubs} {
			if err := tx.Bucket(b).Delete(key(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// TokenCache returns the sealed cache, nil when none.
func (s *Store) TokenCache(ctx context.Context, id presence.UserID) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketCaches).Get(key(id)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// PutTokenCache replaces the sealed cache.
func (s *Store) PutTokenCache(ctx context.Context, id presence.UserID, sealed []byte) error {
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCaches).Put(key(id), sealed) })
}

// Presence returns the record and its ETag ("" when none).
func (s *Store) Presence(ctx context.Context, id presence.UserID) (poller.PresenceRecord, poller.ETag, error) {
	var rec poller.PresenceRecord
	var tag poller.ETag
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPresence).Get(key(id))
		if v == nil {
			return nil
		}
		if len(v) < 8 {
			return errors.New("presence record too short")
		}
		tag = etag(binary.BigEndian.Uint64(v))
		return json.Unmarshal(v[8:], &rec)
	})
	if err != nil {
		return poller.PresenceRecord{}, "", fmt.Errorf("boltstore: presence: %w", err)
	}
	return rec, tag, nil
}

// PutPresence writes the record if its ETag is still ifMatch.
func (s *Store) PutPresence(ctx context.Context, id presence.UserID, rec poller.PresenceRecord, ifMatch poller.ETag) (poller.ETag, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("boltstore: put presence: %w", err)
	}
	return s.putVersioned(bucketPresence, key(id), body, ifMatch)
}

// putVersioned writes body under k, prefixed with the next version, if the
// current version is ifMatch ("": only if k does not exist).
func (s *Store) putVersioned(bucket, k, body []byte, ifMatch poller.ETag) (poller.ETag, error) {
	var tag poller.ETag
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var version uint64
		if cur := b.Get(k); cur != nil {
			if len(cur) < 8 {
				return errors.New("record too short")
			}
			version = binary.BigEndian.Uint64(cur)
			if etag(version) != ifMatch {
				return poller.ErrConflict
			}
		} else if ifMatch != "" {
			return poller.ErrConflict
		}
		version++
		v := make([]byte, 8+len(body))
		binary.BigEndian.PutUint64(v, version)
		copy(v[8:], body)
		tag = etag(version)
		return b.Put(k, v)
	})
	return tag, err
}

// getVersioned returns a copy of the body under k and its ETag (nil and ""
// when k does not exist).
func (s *Store) getVersioned(bucket, k []byte) ([]byte, poller.ETag, error) {
	var body []byte
	var tag poller.ETag
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get(k)
		if v == nil {
			return nil
		}
		if len(v) < 8 {
			return errors.New("record too short")
		}
		tag = etag(binary.BigEndian.Uint64(v))
		body = append([]byte(nil), v[8:]...)
		return nil
	})
	return body, tag, err
}

// Subscriptions lists every subscription record, ordered by user id.
func (s *Store) Subscriptions(ctx context.Context) ([]poller.Subscription, error) {
	var out []poller.Subscription
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSubs).ForEach(func(_, v []byte) error {
			if len(v) < 8 {
				return errors.New("subscription record too short")
			}
			var sub poller.Subscription
			if err := json.Unmarshal(v[8:], &sub); err != nil {
				return err
			}
			out = append(out, sub)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: subscriptions: %w", err)
	}
	return out, nil
}

// Subscription returns the person's subscription record and its ETag (""
// when none).
func (s *Store) Subscription(ctx context.Context, id presence.UserID) (poller.Subscription, poller.ETag, error) {
	var sub poller.Subscription
	body, tag, err := s.getVersioned(bucketSubs, key(id))
	if err == nil && body != nil {
		err = json.Unmarshal(body, &sub)
	}
	if err != nil {
		return poller.Subscription{}, "", fmt.Errorf("boltstore: subscription: %w", err)
	}
	return sub, tag, nil
}

// PutSubscription writes the record if its ETag is still ifMatch.
func (s *Store) PutSubscription(ctx context.Context, id presence.UserID, sub poller.Subscription, ifMatch poller.ETag) (poller.ETag, error) {
	body, err := json.Marshal(sub)
	if err != nil {
		return "", fmt.Errorf("boltstore: put subscription: %w", err)
	}
	return s.putVersioned(bucketSubs, key(id), body, ifMatch)
}

// KeyRing returns the sealed key ring and its ETag (nil and "" when none).
func (s *Store) KeyRing(ctx context.Context) ([]byte, poller.ETag, error) {
	body, tag, err := s.getVersioned(bucketMeta, keyKeyRing)
	if err != nil {
		return nil, "", fmt.Errorf("boltstore: key ring: %w", err)
	}
	return body, tag, nil
}

// PutKeyRing replaces the sealed key ring if its ETag is still ifMatch.
func (s *Store) PutKeyRing(ctx context.Context, sealed []byte, ifMatch poller.ETag) (poller.ETag, error) {
	return s.putVersioned(bucketMeta, keyKeyRing, sealed, ifMatch)
}

func etag(v uint64) poller.ETag { return poller.ETag(strconv.FormatUint(v, 10)) }

// update runs fn in a write transaction. A write that finds others under
// way shares their next commit (bbolt's Batch: one commit and one fsync for
// all of them), so that under load (the webhook's notifications beside the
// workers' writes) writes are not one synced transaction each; a lone
// write commits at once. fn may run more than once (every fn here is a
// pure function of the transaction).
func (s *Store) update(fn func(*bolt.Tx) error) error {
	var err error
	if s.writers.Add(1) == 1 {
		err = s.db.Update(fn)
	} else {
		err = s.db.Batch(fn)
	}
	s.writers.Add(-1)
	if err != nil && !errors.Is(err, poller.ErrConflict) && !errors.Is(err, poller.ErrNotFound) {
		return fmt.Errorf("boltstore: %w", err)
	}
	return err
}
