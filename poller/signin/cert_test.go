package signin

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "presence-poller"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

func TestLoadCertificatePEM(t *testing.T) {
	c, k := selfSigned(t)
	certs, key, err := LoadCertificate(append(c, k...), "")
	if err != nil || len(certs) != 1 || key == nil {
		t.Fatalf("%v", err)
	}
	if _, _, err := LoadCertificate(c, ""); err == nil {
		t.Error("a PEM without its key was accepted")
	}
}

// TestLoadCertificatePFX reads a PFX made by openssl with the classic
// 3DES encryption Windows exports use, and explains an unreadable one.
func TestLoadCertificatePFX(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl makes the test's PFX files; it is not installed")
	}
	dir := t.TempDir()
	c, k := selfSigned(t)
	if err := os.WriteFile(filepath.Join(dir, "c.pem"), append(c, k...), 0o600); err != nil {
		t.Fatal(err)
	}
	pfx := filepath.Join(dir, "c.pfx")
	out, err := exec.Command(openssl, "pkcs12", "-export", "-in", filepath.Join(dir, "c.pem"), "-out", pfx, "-passout", "pass:pw",
		"-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1").CombinedOutput()
	if err != nil {
		t.Skipf("openssl cannot make a 3DES PFX here: %v %s", err, out)
	}
	data, _ := os.ReadFile(pfx)
	certs, key, err := LoadCertificate(data, "pw")
	if err != nil || len(certs) != 1 || key == nil {
		t.Fatalf("3DES PFX: %v", err)
	}
	if _, _, err := LoadCertificate(data, "wrong"); err == nil {
		t.Error("a wrong password was accepted")
	}
	if _, _, err := LoadCertificate([]byte("garbage"), ""); err == nil {
		t.Error("garbage accepted")
	}
}
