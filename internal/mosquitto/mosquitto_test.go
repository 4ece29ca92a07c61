package mosquitto_test

import (
	"errors"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
)

const wait = 10 * time.Second

func connect(t *testing.T, url, id, user, pass string) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(wait)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatalf("connect %s: no answer within %v", id, wait)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func await(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(wait) {
		t.Fatalf("%s: no answer within %v", what, wait)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// roundTrip publishes a retained message and proves a later subscriber gets it.
func roundTrip(t *testing.T, url, user, pass, payload string) {
	t.Helper()
	pub, err := connect(t, url, "pub", user, pass)
	if err != nil {
		t.Fatalf("connect publisher: %v", err)
	}
	await(t, pub.Publish("test/topic", 1, true, payload), "publish")
	sub, err := connect(t, url, "sub", user, pass)
	if err != nil {
		t.Fatalf("connect subscriber: %v", err)
	}
	got := make(chan string, 1)
	await(t, sub.Subscribe("test/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- string(m.Payload()):
		default:
		}
	}), "subscribe")
	select {
	case p := <-got:
		if p != payload {
			t.Fatalf("subscriber got %q, want %q", p, payload)
		}
	case <-time.After(wait):
		t.Fatal("subscriber got nothing")
	}
}

func TestRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	b := mosquitto.Start(t)
	roundTrip(t, b.URL(), "", "", "hello")
}

func TestRestartKeepsPortAndDropsRetained(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	b := mosquitto.Start(t)
	url := b.URL()
	roundTrip(t, url, "", "", "before")
	b.Restart()
	if b.URL() != url {
		t.Fatalf("url after restart = %s, want %s", b.URL(), url)
	}
	// Persistence is off: the retained message is gone, a new one works.
	roundTrip(t, url, "", "", "after")
}

func TestStopRefusesConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	b := mosquitto.Start(t)
	b.Stop()
	if _, err := connect(t, b.URL(), "late", "", ""); err == nil {
		t.Fatal("connect to a stopped broker succeeded")
	}
}

func TestCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	b := mosquitto.Start(t, mosquitto.WithCredentials("alice", "s3cret"))
	t.Run("right password", func(t *testing.T) {
		roundTrip(t, b.URL(), "alice", "s3cret", "authorised")
	})
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", "alice", "nope"},
		{"unknown user", "mallory", "s3cret"},
		{"anonymous", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := connect(t, b.URL(), "c-"+tc.user, tc.user, tc.pass)
			if !errors.Is(err, packets.ErrorRefusedNotAuthorised) && !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
				t.Fatalf("connect error = %v, want a refusal", err)
			}
		})
	}
}
