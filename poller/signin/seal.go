// Package signin is presence-poller's side of Microsoft sign-in: the
// authorization-code flow with PKCE, state and nonce carried in a sealed
// cookie (Flow), and people's MSAL token caches, encrypted at rest, behind
// a pool of confidential clients (Tokens).
//
// Keys: secret_key (32 bytes) is never used directly; HKDF-SHA256 derives
// one AES-256-GCM key for the sign-in cookie and another for token caches,
// with distinct labels, so that a sealed cookie can never be opened as a
// cache or the other way round.
package signin

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// Labels of the derived keys.
const (
	cookieLabel = "presence-poller sign-in cookie v1"
	cacheLabel  = "presence-poller token cache v1"
)

// ErrUnsealed: a sealed value is forged, damaged, or sealed for something
// else.
var ErrUnsealed = errors.New("signin: the sealed value cannot be opened")

// Sealer encrypts and authenticates small values with AES-256-GCM.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer derives the key labelled label from secret (32 bytes).
func NewSealer(secret []byte, label string) (*Sealer, error) {
	if len(secret) != 32 {
		return nil, fmt.Errorf("signin: secret key is %d bytes, want 32", len(secret))
	}
	key, err := hkdf.Key(sha256.New, secret, nil, label, 32)
	if err != nil {
		return nil, fmt.Errorf("signin: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("signin: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("signin: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plain, bound to aad (the same aad must open it): a random
// nonce followed by the ciphertext.
func (s *Sealer) Seal(plain, aad []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	_, _ = rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plain, aad)
}

// Open decrypts what Seal made with the same aad.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrUnsealed
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, ErrUnsealed
	}
	return plain, nil
}

// SealString is Seal as base64url text (a cookie value).
func (s *Sealer) SealString(plain, aad []byte) string {
	return base64.RawURLEncoding.EncodeToString(s.Seal(plain, aad))
}

// OpenString opens what SealString made.
func (s *Sealer) OpenString(v string, aad []byte) ([]byte, error) {
	if len(v) > 4096 {
		return nil, ErrUnsealed
	}
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil, ErrUnsealed
	}
	return s.Open(raw, aad)
}
