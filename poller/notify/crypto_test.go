package notify_test

import (
	"encoding/base64"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/notify"
	"github.com/presence-bridge/presence-bridge/poller/storetest"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestMemStoreContract(t *testing.T) {
	storetest.Run(t, func(*testing.T) poller.Store { return newMemStore() })
}

func newRing(t testing.TB, store notify.KeyStore, o notify.KeyRingOptions) *notify.KeyRing {
	t.Helper()
	o.Store, o.SecretKey = store, secret
	r, err := notify.NewKeyRing(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func encrypt(t testing.TB, k *notify.Key, plain string) notify.EncryptedContent {
	t.Helper()
	c, err := graphtest.Encrypt(k.Certificate, k.ID, []byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	return notify.EncryptedContent(c)
}

const presenceJSON = `{"@odata.type":"#microsoft.graph.presence","id":"6f1c2a3b-1111-2222-3333-444455556666","availability":"Busy","activity":"InACall","sequenceNumber":"638680000000000042"}`

// TestDecryptRoundTripAndTampering: what the fake Graph encrypts to the
// ring's certificate decrypts to the same bytes; tampering with the data,
// the signature or the wrapped key, or naming another certificate, is
// refused before anything is decrypted.
func TestDecryptRoundTripAndTampering(t *testing.T) {
	store := newMemStore()
	ring := newRing(t, store, notify.KeyRingOptions{})
	key, err := ring.Current(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(key.ID) > 128 || key.Thumbprint() == "" {
		t.Fatalf("key id %q", key.ID)
	}
	c := encrypt(t, key, presenceJSON)
	if c.EncryptionCertificateThumbprint != key.Thumbprint() {
		t.Errorf("thumbprint %s, fake sent %s", key.Thumbprint(), c.EncryptionCertificateThumbprint)
	}
	got, err := ring.Get(t.Context(), c.EncryptionCertificateID)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := got.Decrypt(c)
	if err != nil || string(plain) != presenceJSON {
		t.Fatalf("round trip: %q %v", plain, err)
	}
	flip := func(s string, i int) string {
		b, _ := base64.StdEncoding.DecodeString(s)
		b[i%len(b)] ^= 0x01
		return base64.StdEncoding.EncodeToString(b)
	}
	other := encrypt(t, key, presenceJSON)
	for name, tc := range map[string]struct {
		mut  func(*notify.EncryptedContent)
		want error
	}{
		"data":                 {func(c *notify.EncryptedContent) { c.Data = flip(c.Data, 5) }, notify.ErrBadSignature},
		"data of another item": {func(c *notify.EncryptedContent) { c.Data = other.Data }, notify.ErrBadSignature},
		"signature":            {func(c *notify.EncryptedContent) { c.DataSignature = flip(c.DataSignature, 3) }, notify.ErrBadSignature},
		"key":                  {func(c *notify.EncryptedContent) { c.DataKey = flip(c.DataKey, 17) }, notify.ErrBadKey},
		"key of another item":  {func(c *notify.EncryptedContent) { c.DataKey = other.DataKey }, notify.ErrBadSignature},
		"not base64":           {func(c *notify.EncryptedContent) { c.Data = "%%%" }, notify.ErrBadData},
		"truncated data":       {func(c *notify.EncryptedContent) { c.Data = c.Data[:8] }, notify.ErrBadData},
	} {
		t.Run(name, func(t *testing.T) {
			bad := c
			tc.mut(&bad)
			if out, err := key.Decrypt(bad); !errors.Is(err, tc.want) || out != nil {
				t.Fatalf("Decrypt = %q, %v; want %v", out, err, tc.want)
			}
		})
	}
	t.Run("certificate id", func(t *testing.T) {
		if _, err := ring.Get(t.Context(), "presence-poller-forged"); !errors.Is(err, notify.ErrUnknownKey) {
			t.Fatalf("unknown certificate id: %v", err)
		}
	})
	t.Run("another certificate's key", func(t *testing.T) {
		foreign := newRing(t, newMemStore(), notify.KeyRingOptions{})
		fk, err := foreign.Current(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// Encrypted to a stranger's certificate but naming ours.
		c := encrypt(t, fk, presenceJSON)
		if _, err := key.Decrypt(c); !errors.Is(err, notify.ErrBadKey) {
			t.Fatalf("decrypting with the wrong private key: %v", err)
		}
	})
}

// TestKeyRingSealedAndShared: the ring is stored sealed with secret_key (no
// private key in the clear), a second instance on the same store uses the
// same key, and a ring sealed under another secret_key is refused.
func TestKeyRingSealedAndShared(t *testing.T) {
	store := newMemStore()
	a := newRing(t, store, notify.KeyRingOptions{})
	ka, err := a.Current(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	raw, _, _ := store.KeyRing(t.Context())
	if len(raw) == 0 || containsBytes(raw, ka.Certificate[:64]) {
		t.Fatal("the key ring is not sealed at rest")
	}
	b := newRing(t, store, notify.KeyRingOptions{})
	kb, err := b.Current(t.Context())
	if err != nil || kb.ID != ka.ID {
		t.Fatalf("second instance: %v %v (want the same key %s)", kb, err, ka.ID)
	}
	plain, err := kb.Decrypt(encrypt(t, ka, "x"))
	if err != nil || string(plain) != "x" {
		t.Fatalf("the second instance cannot decrypt: %v", err)
	}
	o := notify.KeyRingOptions{Store: store, SecretKey: []byte("another secret key of 32 bytes!!")}
	c, _ := notify.NewKeyRing(o)
	if _, err := c.Current(t.Context()); err == nil {
		t.Fatal("a ring sealed under another secret_key was opened")
	}
}

func containsBytes(hay, needle []byte) bool {
	for i := 0; i+len(needle) <= len(hay); i++ {
		if string(hay[i:i+len(needle)]) == string(needle) {
			return true
		}
	}
	return false
}

// TestKeyRotationKeepsOldKeyWhileUsed: after RotateEvery a new key becomes
// current; the old one still decrypts while a subscription uses it, and
// for KeepFor after the last one moved off it; then it is retired.
func TestKeyRotationKeepsOldKeyWhileUsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		ring := newRing(t, store, notify.KeyRingOptions{RotateEvery: 24 * time.Hour, KeepFor: 5 * time.Hour})
		ctx := t.Context()
		k1, err := ring.Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(23 * time.Hour)
		if k, _ := ring.Current(ctx); k.ID != k1.ID {
			t.Fatal("rotated early")
		}
		time.Sleep(time.Hour)
		k2, err := ring.Current(ctx)
		if err != nil || k2.ID == k1.ID {
			t.Fatalf("not rotated after RotateEvery: %v", err)
		}
		inFlight := encrypt(t, k1, "sent before the rotation")
		time.Sleep(6 * time.Hour)
		if gone, _ := ring.Retire(ctx, map[string]bool{k1.ID: true}); len(gone) != 0 {
			t.Fatalf("retired %v while a subscription uses it", gone)
		}
		old, err := ring.Get(ctx, k1.ID)
		if err != nil {
			t.Fatal(err)
		}
		if plain, err := old.Decrypt(inFlight); err != nil || string(plain) != "sent before the rotation" {
			t.Fatalf("in-flight notification: %q %v", plain, err)
		}
		// The last subscription moved off k1: it stays for KeepFor from
		// its supersession, which has passed, so it goes now.
		if gone, _ := ring.Retire(ctx, map[string]bool{k2.ID: true}); len(gone) != 1 || gone[0] != k1.ID {
			t.Fatalf("retired %v, want %s", gone, k1.ID)
		}
		if _, err := ring.Get(ctx, k1.ID); !errors.Is(err, notify.ErrUnknownKey) {
			t.Fatalf("a retired key still decrypts: %v", err)
		}
		if ids := ring.IDs(); len(ids) != 1 || ids[0] != k2.ID {
			t.Fatalf("ring %v", ids)
		}
	})
}

// TestRotationByAnotherInstance: an instance that meets a certificate id it
// does not know reloads the ring from the store (another instance rotated).
func TestRotationByAnotherInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		a := newRing(t, store, notify.KeyRingOptions{RotateEvery: time.Hour})
		b := newRing(t, store, notify.KeyRingOptions{RotateEvery: time.Hour})
		if _, err := a.Current(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Current(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		k2, err := a.Current(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if store.Writes("ring") != 2 {
			t.Fatalf("%d ring writes, want 2", store.Writes("ring"))
		}
		if _, err := b.Get(t.Context(), k2.ID); err != nil {
			t.Fatalf("the other instance does not find the new key: %v", err)
		}
		if k, err := b.Current(t.Context()); err != nil || k.ID != k2.ID {
			t.Fatalf("the other instance rotated again: %v %v", k, err)
		}
	})
}
