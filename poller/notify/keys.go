package notify

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/signin"
	"github.com/presence-bridge/presence-bridge/presence"
)

// Key-ring defaults.
const (
	// DefaultRotateEvery is how long a key is the current one.
	DefaultRotateEvery = 7 * 24 * time.Hour
	// DefaultKeepFor is how long a superseded key is kept once no
	// subscription uses it: Graph retries a notification for up to 4
	// hours, encrypted to the key of its time.
	DefaultKeepFor = 5 * time.Hour
	// DefaultBits is the RSA key size (Graph accepts 2,048 to 4,096).
	DefaultBits = 2048
	// reloadEvery bounds how often an unknown certificate id makes the
	// ring reload from the store (another instance may have rotated).
	reloadEvery = 10 * time.Second
	ringLabel   = "presence-poller notification keys v1"
)

// ErrUnknownKey: no key of the ring has that certificate id.
var ErrUnknownKey = errors.New("notify: unknown encryption certificate id")

// KeyStore is the part of poller.Store that keeps the key ring.
type KeyStore interface {
	KeyRing(ctx context.Context) ([]byte, poller.ETag, error)
	PutKeyRing(ctx context.Context, sealed []byte, ifMatch poller.ETag) (poller.ETag, error)
}

// Key is one RSA key pair with the self-signed certificate Graph encrypts
// rich notifications to.
type Key struct {
	// ID is the subscription's encryptionCertificateId.
	ID      string
	Created time.Time
	// Superseded is when a newer key became current; zero for the current
	// key.
	Superseded time.Time
	// Certificate is the DER of the self-signed certificate (public part
	// only), sent as encryptionCertificate.
	Certificate []byte
	private     *rsa.PrivateKey
}

// storedKey is a key as sealed in the store.
type storedKey struct {
	ID          string    `json:"id"`
	Created     time.Time `json:"created"`
	Superseded  time.Time `json:"superseded,omitzero"`
	Certificate []byte    `json:"certificate"`
	PrivateKey  []byte    `json:"privateKey"` // PKCS #8 DER
}

// KeyRingOptions configure a KeyRing.
type KeyRingOptions struct {
	Store KeyStore
	// SecretKey (secret_key, 32 bytes) seals the ring at rest, as it seals
	// the token caches (a key derived for this use only).
	SecretKey   []byte
	RotateEvery time.Duration // default DefaultRotateEvery
	KeepFor     time.Duration // default DefaultKeepFor
	Bits        int           // default DefaultBits
}

// KeyRing is the poller's RSA keys for rich notifications: the current one,
// which new and renewed subscriptions use, and superseded ones kept until no
// subscription uses them and DefaultKeepFor has passed. The ring lives in
// the store, sealed, so every instance decrypts with the same keys; writes
// are compare-and-swap, so two instances never rotate at once.
type KeyRing struct {
	o      KeyRingOptions
	store  KeyStore
	sealer *signin.Sealer

	mu       sync.Mutex
	keys     []*Key // oldest first; the last is current
	tag      poller.ETag
	loaded   bool
	reloaded time.Time
}

// NewKeyRing makes a ring; nothing is read until it is used.
func NewKeyRing(o KeyRingOptions) (*KeyRing, error) {
	sealer, err := signin.NewSealer(o.SecretKey, ringLabel)
	if err != nil {
		return nil, err
	}
	if o.RotateEvery <= 0 {
		o.RotateEvery = DefaultRotateEvery
	}
	if o.KeepFor <= 0 {
		o.KeepFor = DefaultKeepFor
	}
	if o.Bits < DefaultBits {
		o.Bits = DefaultBits
	}
	return &KeyRing{o: o, store: o.Store, sealer: sealer}, nil
}

var ringAAD = []byte("notification-keys")

// load reads the ring from the store (r.mu held).
func (r *KeyRing) load(ctx context.Context) error {
	sealed, tag, err := r.store.KeyRing(ctx)
	if err != nil {
		return fmt.Errorf("notify: read key ring: %w", err)
	}
	r.reloaded = time.Now()
	if sealed == nil {
		r.keys, r.tag, r.loaded = nil, "", true
		return nil
	}
	plain, err := r.sealer.Open(sealed, ringAAD)
	if err != nil {
		return fmt.Errorf("notify: the stored key ring cannot be opened (was secret_key changed?): %w", err)
	}
	var stored []storedKey
	if err := json.Unmarshal(plain, &stored); err != nil {
		return fmt.Errorf("notify: key ring: %w", err)
	}
	keys := make([]*Key, 0, len(stored))
	for _, s := range stored {
		k, err := x509.ParsePKCS8PrivateKey(s.PrivateKey)
		if err != nil {
			return fmt.Errorf("notify: key ring: key %s: %w", s.ID, err)
		}
		priv, ok := k.(*rsa.PrivateKey)
		if !ok {
			return fmt.Errorf("notify: key ring: key %s is not RSA", s.ID)
		}
		keys = append(keys, &Key{ID: s.ID, Created: s.Created, Superseded: s.Superseded, Certificate: s.Certificate, private: priv})
	}
	r.keys, r.tag, r.loaded = keys, tag, true
	return nil
}

// save writes keys with compare-and-swap (r.mu held); on ErrConflict the
// caller reloads.
func (r *KeyRing) save(ctx context.Context, keys []*Key) error {
	stored := make([]storedKey, 0, len(keys))
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.private)
		if err != nil {
			return fmt.Errorf("notify: key ring: %w", err)
		}
		stored = append(stored, storedKey{ID: k.ID, Created: k.Created, Superseded: k.Superseded, Certificate: k.Certificate, PrivateKey: der})
	}
	plain, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("notify: key ring: %w", err)
	}
	tag, err := r.store.PutKeyRing(ctx, r.sealer.Seal(plain, ringAAD), r.tag)
	if err != nil {
		return err
	}
	r.keys, r.tag = keys, tag
	return nil
}

// Current returns the key new and renewed subscriptions use, making the
// first key, or a new one when the current is older than RotateEvery.
func (r *KeyRing) Current(ctx context.Context) (*Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if !r.loaded || attempt > 0 {
			if err := r.load(ctx); err != nil {
				return nil, err
			}
		}
		now := time.Now()
		if n := len(r.keys); n > 0 && now.Sub(r.keys[n-1].Created) < r.o.RotateEvery {
			return r.keys[n-1], nil
		}
		k, err := newKey(now, r.o.Bits)
		if err != nil {
			return nil, err
		}
		keys := make([]*Key, 0, len(r.keys)+1)
		for _, old := range r.keys {
			c := *old
			if c.Superseded.IsZero() {
				c.Superseded = now
			}
			keys = append(keys, &c)
		}
		keys = append(keys, k)
		err = r.save(ctx, keys)
		if err == nil {
			return k, nil
		}
		if !errors.Is(err, poller.ErrConflict) || attempt == 3 {
			return nil, fmt.Errorf("notify: store key ring: %w", err)
		}
		// Another instance wrote the ring meanwhile: use what it made.
	}
}

// Get returns the key with that certificate id. An id the ring does not
// know makes it reload from the store (at most every 10 s: another
// instance may have rotated) before it answers ErrUnknownKey.
func (r *KeyRing) Get(ctx context.Context, id string) (*Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k := r.find(id); k != nil {
		return k, nil
	}
	if r.loaded && time.Since(r.reloaded) < reloadEvery {
		return nil, ErrUnknownKey
	}
	if err := r.load(ctx); err != nil {
		return nil, err
	}
	if k := r.find(id); k != nil {
		return k, nil
	}
	return nil, ErrUnknownKey
}

func (r *KeyRing) find(id string) *Key {
	for _, k := range r.keys {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// IDs lists the certificate ids of the ring, oldest first.
func (r *KeyRing) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.keys))
	for _, k := range r.keys {
		out = append(out, k.ID)
	}
	return out
}

// Retire drops the superseded keys that no subscription uses (inUse) and
// that were superseded more than KeepFor ago, and returns their ids.
func (r *KeyRing) Retire(ctx context.Context, inUse map[string]bool) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if !r.loaded || attempt > 0 {
			if err := r.load(ctx); err != nil {
				return nil, err
			}
		}
		now := time.Now()
		var keep []*Key
		var gone []string
		for _, k := range r.keys {
			if !k.Superseded.IsZero() && !inUse[k.ID] && now.Sub(k.Superseded) >= r.o.KeepFor {
				gone = append(gone, k.ID)
				continue
			}
			keep = append(keep, k)
		}
		if len(gone) == 0 {
			return nil, nil
		}
		err := r.save(ctx, keep)
		if err == nil {
			return gone, nil
		}
		if !errors.Is(err, poller.ErrConflict) || attempt == 3 {
			return nil, fmt.Errorf("notify: store key ring: %w", err)
		}
	}
}

// newKey makes an RSA key pair and a self-signed certificate for it. Graph
// uses only the public key and checks neither issuer nor validity, but the
// certificate is well formed anyway (valid two years from now).
func newKey(now time.Time, bits int) (*Key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("notify: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	id := "presence-poller-" + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(suffix[:])
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "presence-poller change notifications", SerialNumber: id},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(2 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, fmt.Errorf("notify: self-signed certificate: %w", err)
	}
	return &Key{ID: id, Created: now, Certificate: der, private: priv}, nil
}

// Thumbprint is the certificate's SHA-1 thumbprint in upper-case hex, as
// Graph sends it in encryptionCertificateThumbprint.
func (k *Key) Thumbprint() string {
	sum := sha1.Sum(k.Certificate)
	return fmt.Sprintf("%X", sum[:])
}

// Open is poller.Options.Open: it decrypts a received notification's
// encryptedContent with the key its certificate id names and reads the
// presence in it, which must be the person's.
func (r *KeyRing) Open(ctx context.Context, a poller.Account, content []byte) (presence.Update, error) {
	var c EncryptedContent
	if err := json.Unmarshal(content, &c); err != nil {
		return presence.Update{}, fmt.Errorf("notify: received content: %w", err)
	}
	k, err := r.Get(ctx, c.EncryptionCertificateID)
	if err != nil {
		return presence.Update{}, err
	}
	plain, err := k.Decrypt(c)
	if err != nil {
		return presence.Update{}, err
	}
	u, err := graph.ParsePresence(plain, a.TenantID)
	if err != nil {
		return presence.Update{}, err
	}
	if u.UserID != a.UserID {
		return presence.Update{}, ErrOtherPerson
	}
	return u, nil
}

// ErrOtherPerson: the decrypted presence is not the subscription's person.
var ErrOtherPerson = errors.New("notify: the data is about someone else")
