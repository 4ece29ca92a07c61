package graphsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// AccountState says whether an account's tokens still work.
type AccountState string

// Account states.
const (
	// StateActive: the account's tokens are used to read presence.
	StateActive AccountState = "active"
	// StateSignInRequired: Entra refused the refresh token (revoked,
	// expired, consent withdrawn) or Graph refused the account twice; only a
	// new sign-in of the person brings it back. Nothing retries it.
	StateSignInRequired AccountState = "signin_required"
)

// fileVersion is the layout of an account file.
const fileVersion = 1

// maxAccountFile bounds an account file (a token cache is a few KiB).
const maxAccountFile = 1 << 20

// Account is one signed-in person as the store keeps it: one file per
// account, so that MSAL's public client, whose cache store cannot tell
// accounts apart, only ever sees one account's cache.
type Account struct {
	Version int `json:"version"`
	// HomeAccountID is MSAL's account id, <object id>.<tenant id>; it names
	// the file.
	HomeAccountID string          `json:"home_account_id"`
	ObjectID      presence.UserID `json:"object_id"`
	TenantID      string          `json:"tenant_id"`
	UPN           string          `json:"upn"`
	Name          string          `json:"name,omitempty"`
	// ClientID is the app registration the tokens were issued to.
	ClientID string `json:"client_id"`
	// Scopes are the Graph permissions Entra granted (Presence.Read.All).
	Scopes     []string     `json:"scopes"`
	SignedInAt time.Time    `json:"signed_in_at"`
	State      AccountState `json:"state"`
	// Reason says why a sign-in is required (Entra's AADSTS text, never a
	// token); StateSince when the state last changed.
	Reason     string    `json:"reason,omitempty"`
	StateSince time.Time `json:"state_since,omitzero"`
	// Revision increases with every write; a writer that read an older one
	// loses (see Store.Update).
	Revision int64 `json:"revision"`
	// Cache is MSAL's token cache of this account alone.
	Cache json.RawMessage `json:"msal_cache"`
}

// ReadsAll reports whether the account was granted Presence.Read.All (it can
// read every configured colleague in batches).
func (a *Account) ReadsAll() bool {
	return slices.ContainsFunc(a.Scopes, func(s string) bool { return strings.EqualFold(scopeName(s), "Presence.Read.All") })
}

func scopeName(scope string) string {
	if i := strings.LastIndexByte(scope, '/'); i >= 0 {
		return scope[i+1:]
	}
	return scope
}

// validHomeAccountID reports whether id is <object id>.<tenant id>, two
// GUIDs: it names a file, so nothing else may pass.
func validHomeAccountID(id string) bool {
	oid, tid, ok := strings.Cut(id, ".")
	return ok && presence.IsGUID(oid) && presence.IsGUID(tid) && id == strings.ToLower(id)
}

// ParseAccount decodes and checks an account file. It never fails open: a
// file that is not exactly an account of this version is an error.
func ParseAccount(data []byte) (Account, error) {
	if len(data) > maxAccountFile {
		return Account{}, fmt.Errorf("account file over %d bytes", maxAccountFile)
	}
	var a Account
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return Account{}, fmt.Errorf("account file: %w", err)
	}
	if dec.More() {
		return Account{}, errors.New("account file: data after the account")
	}
	switch {
	case a.Version != fileVersion:
		return Account{}, fmt.Errorf("account file: version %d, want %d", a.Version, fileVersion)
	case !validHomeAccountID(a.HomeAccountID):
		return Account{}, errors.New("account file: home_account_id is not <object id>.<tenant id>")
	case !a.ObjectID.Valid() || !strings.HasPrefix(a.HomeAccountID, string(a.ObjectID)+"."):
		return Account{}, errors.New("account file: object_id does not match home_account_id")
	case a.State != StateActive && a.State != StateSignInRequired:
		return Account{}, fmt.Errorf("account file: unknown state %q", clip(string(a.State), 32))
	case a.Revision < 0:
		return Account{}, errors.New("account file: negative revision")
	case len(a.Cache) == 0 || a.Cache[0] != '{':
		return Account{}, errors.New("account file: msal_cache is not a JSON object")
	}
	return a, nil
}

// Errors of the store.
var (
	// ErrNotFound: no account file of that key (or upn).
	ErrNotFound = errors.New("no such signed-in account")
	// ErrConflict: the account file changed since it was read (a new
	// sign-in, or `accounts remove` beside the daemon).
	ErrConflict = errors.New("the account changed on disk meanwhile")
)

// Store keeps the signed-in accounts in a folder of data_dir, one file per
// account (<home account id>.json, mode 0600), each written whole to a
// temporary file and renamed over the old one, so a reader never sees half
// a file and needs no lock. Writers (the daemon refreshing tokens, `login`,
// `accounts remove`) take an exclusive lock on the folder's .lock file and
// check the revision they read: `presence-bridge login` and `accounts
// remove` work while the daemon runs, and a removed account is never
// written back by a refresh that was in flight.
type Store struct {
	dir string
}

// StoreDir is the folder of data_dir the accounts live in.
const StoreDir = "graph-accounts"

// NewStore returns the store under dataDir; the folder is made on the first
// write.
func NewStore(dataDir string) *Store {
	return &Store{dir: filepath.Join(dataDir, StoreDir)}
}

// Dir is the store's folder.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(key string) string { return filepath.Join(s.dir, key+".json") }

// List reads every account. A file that cannot be read or parsed is skipped
// and reported in the second result (with its name, never its content).
func (s *Store) List() ([]Account, []error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("graph accounts: %w", err)}
	}
	var out []Account
	var errs []error
	for _, e := range entries {
		key, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		a, err := s.read(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("graph accounts: %s: %w", e.Name(), err))
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Account) int {
		if c := a.SignedInAt.Compare(b.SignedInAt); c != 0 {
			return c
		}
		return strings.Compare(a.HomeAccountID, b.HomeAccountID)
	})
	return out, errs
}

func (s *Store) read(key string) (Account, error) {
	data, err := os.ReadFile(s.path(key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Account{}, ErrNotFound
		}
		return Account{}, err
	}
	a, err := ParseAccount(data)
	if err != nil {
		return Account{}, err
	}
	if a.HomeAccountID != key {
		return Account{}, errors.New("the file name does not match its home_account_id")
	}
	return a, nil
}

// Put stores an account made by a sign-in, replacing the person's earlier
// one; it returns the account with its new revision.
func (s *Store) Put(a Account) (Account, error) {
	if !validHomeAccountID(a.HomeAccountID) {
		return Account{}, errors.New("graph accounts: not an <object id>.<tenant id> account")
	}
	unlock, err := s.lock()
	if err != nil {
		return Account{}, err
	}
	defer unlock()
	a.Version = fileVersion
	a.Revision = 1
	if old, err := s.read(a.HomeAccountID); err == nil {
		a.Revision = old.Revision + 1
	}
	if err := s.write(a); err != nil {
		return Account{}, err
	}
	return a, nil
}

// Update changes the account of key if its revision is still rev; it
// returns ErrNotFound when the account was removed and ErrConflict when it
// changed (the caller then reloads it).
func (s *Store) Update(key string, rev int64, change func(*Account)) (Account, error) {
	unlock, err := s.lock()
	if err != nil {
		return Account{}, err
	}
	defer unlock()
	a, err := s.read(key)
	if err != nil {
		return Account{}, err
	}
	if a.Revision != rev {
		return Account{}, ErrConflict
	}
	change(&a)
	a.Revision = rev + 1
	if err := s.write(a); err != nil {
		return Account{}, err
	}
	return a, nil
}

// Remove forgets the account whose upn (any case) or home account id is
// match, and returns it.
func (s *Store) Remove(match string) (Account, error) {
	unlock, err := s.lock()
	if err != nil {
		return Account{}, err
	}
	defer unlock()
	accounts, _ := s.List()
	for _, a := range accounts {
		if strings.EqualFold(a.UPN, match) || a.HomeAccountID == strings.ToLower(match) {
			if err := os.Remove(s.path(a.HomeAccountID)); err != nil {
				return Account{}, fmt.Errorf("graph accounts: %w", err)
			}
			return a, nil
		}
	}
	return Account{}, ErrNotFound
}

// write replaces the account's file atomically (temporary file, fsync,
// rename). The caller holds the lock.
func (s *Store) write(a Account) error {
	data, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("graph accounts: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("graph accounts: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing left
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("graph accounts: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("graph accounts: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("graph accounts: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("graph accounts: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path(a.HomeAccountID)); err != nil {
		return fmt.Errorf("graph accounts: %w", err)
	}
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync() // the rename survives a power cut
		d.Close()
	}
	return nil
}

// lock takes the store's exclusive lock (made with the folder if needed).
func (s *Store) lock() (func(), error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("graph accounts: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("graph accounts: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("graph accounts: lock: %w", err)
	}
	return func() {
		_ = unlockFile(f)
		f.Close()
	}, nil
}

// Signature summarises the account files (names, sizes, modification
// times), so that the daemon notices a sign-in or removal made by another
// process without reading every file each cycle.
func (s *Store) Signature() string {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return "error:" + err.Error()
	}
	var b strings.Builder
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		b.WriteString(e.Name())
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(info.Size(), 10))
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(info.ModTime().UnixNano(), 10))
		b.WriteByte('\n')
	}
	return b.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && strings.ToValidUTF8(s, "") != s {
		s = s[:len(s)-1]
	}
	return s
}
