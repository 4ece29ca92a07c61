package notify

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
)

// Decryption failures. Each one means the notification is not what Graph
// would have sent to this poller: it changes nothing.
var (
	// ErrBadKey: dataKey does not decrypt with the key (RSA-OAEP) to a
	// 32-byte AES key.
	ErrBadKey = errors.New("notify: dataKey does not decrypt with the certificate's key")
	// ErrBadSignature: HMAC-SHA256 of data under the key is not
	// dataSignature (data or signature tampered with).
	ErrBadSignature = errors.New("notify: dataSignature does not match the data")
	// ErrBadData: the data is not AES-256-CBC with PKCS #7 padding, or a
	// field is not base64.
	ErrBadData = errors.New("notify: encrypted data is malformed")
)

// maxEncryptedData bounds data (a presence is well under 4 KiB).
const maxEncryptedData = 64 << 10

// EncryptedContent is a rich notification's encryptedContent.
type EncryptedContent struct {
	Data                            string `json:"data"`
	DataSignature                   string `json:"dataSignature"`
	DataKey                         string `json:"dataKey"`
	EncryptionCertificateID         string `json:"encryptionCertificateId"`
	EncryptionCertificateThumbprint string `json:"encryptionCertificateThumbprint"`
}

// Decrypt returns the resource data of a rich notification, as Graph
// documents it: RSA-OAEP (SHA-1) decrypts dataKey into a 32-byte key;
// HMAC-SHA256 of the (base64-decoded) data under that key must equal
// dataSignature, checked before anything is decrypted; then AES-256-CBC
// with PKCS #7 padding and the key's first 16 bytes as IV. The key must be
// the one named by the content's encryptionCertificateId (KeyRing.Get).
func (k *Key) Decrypt(c EncryptedContent) ([]byte, error) {
	if len(c.Data) > base64.StdEncoding.EncodedLen(maxEncryptedData) || len(c.DataKey) > 2048 || len(c.DataSignature) > 256 {
		return nil, ErrBadData
	}
	wrapped, err := decode64(c.DataKey)
	if err != nil {
		return nil, ErrBadData
	}
	data, err := decode64(c.Data)
	if err != nil || len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, ErrBadData
	}
	sig, err := decode64(c.DataSignature)
	if err != nil {
		return nil, ErrBadData
	}
	key, err := rsa.DecryptOAEP(sha1.New(), nil, k.private, wrapped, nil)
	if err != nil || len(key) != 32 {
		return nil, ErrBadKey
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(data)
	if !hmac.Equal(mac.Sum(nil), sig) {
		return nil, ErrBadSignature
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, ErrBadKey
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, key[:aes.BlockSize]).CryptBlocks(plain, data)
	n := int(plain[len(plain)-1])
	if n == 0 || n > aes.BlockSize {
		return nil, ErrBadData
	}
	for _, b := range plain[len(plain)-n:] {
		if int(b) != n {
			return nil, ErrBadData
		}
	}
	return plain[:len(plain)-n], nil
}

// decode64 accepts standard base64 with or without padding (Graph pads).
func decode64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}
