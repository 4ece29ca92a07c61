package notify_test

import (
	"encoding/json"
	"sync"
	"testing"

	"github.com/presence-bridge/presence-bridge/poller/notify"
)

// FuzzParse: no input makes the parser panic; what it accepts has items,
// each either a change or a lifecycle notification with a subscription id,
// and UserID never panics on it.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"value":[{"subscriptionId":"s","changeType":"updated","clientState":"c","resource":"communications/presences('6f1c2a3b-1111-2222-3333-444455556666')","resourceData":{"id":"6f1c2a3b-1111-2222-3333-444455556666"},"encryptedContent":{"data":"AA==","dataKey":"AA==","dataSignature":"AA==","encryptionCertificateId":"k"}}],"validationTokens":["a.b.c"]}`))
	f.Add([]byte(`{"value":[{"subscriptionId":"s","lifecycleEvent":"reauthorizationRequired","clientState":"c","tenantId":"t"}]}`))
	f.Add([]byte(`{"value":[{"subscriptionId":"s","changeType":"updated","resource":"communications/presences/6F1C2A3B-1111-2222-3333-444455556666"}]}`))
	f.Add([]byte(`{"value":[]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := notify.Parse(body)
		if err != nil {
			return
		}
		if len(c.Value) == 0 {
			t.Fatal("accepted a collection without items")
		}
		for _, n := range c.Value {
			if (n.ChangeType == "") == (n.LifecycleEvent == "") || n.SubscriptionID == "" {
				t.Fatalf("accepted %+v", n)
			}
			if id, err := n.UserID(); err == nil && id == "" {
				t.Fatal("UserID gave an empty id without an error")
			}
		}
	})
}

var (
	fuzzOnce sync.Once
	fuzzKey  *notify.Key
)

// FuzzDecrypt: whatever encryptedContent claims, Decrypt never panics, and
// it only returns data when the signature over it checks out: mutated
// fields of a genuine item are refused.
func FuzzDecrypt(f *testing.F) {
	fuzzOnce.Do(func() {
		ring := newRing(f, newMemStore(), notify.KeyRingOptions{})
		k, err := ring.Current(f.Context())
		if err != nil {
			f.Fatal(err)
		}
		fuzzKey = k
	})
	genuine := encrypt(f, fuzzKey, presenceJSON)
	seed, _ := json.Marshal(genuine)
	f.Add(seed, uint16(0), byte(0))
	f.Add(seed, uint16(40), byte(1))
	f.Add([]byte(`{"data":"","dataKey":"","dataSignature":""}`), uint16(0), byte(0))
	f.Fuzz(func(t *testing.T, content []byte, at uint16, xor byte) {
		var c notify.EncryptedContent
		if json.Unmarshal(content, &c) != nil {
			return
		}
		plain, err := fuzzKey.Decrypt(c)
		if err == nil && c != genuine {
			// Anything other than the genuine item must fail: the HMAC
			// under a key only our private key recovers guards the data.
			if c.Data != genuine.Data || c.DataSignature != genuine.DataSignature {
				t.Fatalf("decrypted forged content to %q", plain)
			}
		}
		if err == nil && string(plain) != presenceJSON && c.Data == genuine.Data {
			t.Fatalf("genuine data decrypted to %q", plain)
		}
		// Flip one byte of the genuine JSON and decrypt that.
		mut := append([]byte(nil), seed...)
		i := int(at) % len(mut)
		mut[i] ^= xor
		var m notify.EncryptedContent
		if json.Unmarshal(mut, &m) != nil {
			return
		}
		if out, err := fuzzKey.Decrypt(m); err == nil && string(out) != presenceJSON {
			t.Fatalf("a mutated item decrypted to %q", out)
		}
	})
}
