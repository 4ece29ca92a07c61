package signin

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	"golang.org/x/crypto/pkcs12"
)

// LoadCertificate reads the app registration's certificate with its
// private key from a PEM file (certificate and key blocks, the key
// optionally encrypted with password) or a PFX/PKCS#12 file. The PKCS#12
// reader (golang.org/x/crypto/pkcs12) knows the classic 3DES/RC2
// encryption that Windows and Azure Key Vault exports use; a PFX made with
// OpenSSL 3's default AES is refused with the command that converts it.
func LoadCertificate(data []byte, password string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	if bytes.Contains(data, []byte("-----BEGIN")) {
		certs, key, err := confidential.CertFromPEM(data, password)
		if err != nil {
			return nil, nil, fmt.Errorf("not a PEM certificate with its private key: %w", err)
		}
		return certs, key, nil
	}
	key, cert, err := pkcs12.Decode(data, password)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, nil, errors.New("the PFX password (certificate_password) is wrong")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read the PFX file (%v); convert it to PEM with: openssl pkcs12 -in cert.pfx -out cert.pem -nodes", err)
	}
	return []*x509.Certificate{cert}, key, nil
}
