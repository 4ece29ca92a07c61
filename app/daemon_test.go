package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/sbsource"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const alexID = "6f1c2a3b-1111-2222-3333-444455556666"

// daemonConfig writes a configuration for Alex on the broker at mqttURL,
// with the Service Bus connection string from $SB; top and mqttExtra add
// lines at the top level and under mqtt.
func daemonConfig(t *testing.T, mqttURL, top, mqttExtra string) string {
	t.Helper()
	text := fmt.Sprintf(`%s
data_dir: %s
health_addr: ""
users:
  - {id: %s, name: Alex}
service_bus:
  connection_string: ${SB}
mqtt:
  url: %s
%s`, top, t.TempDir(), alexID, mqttURL, mqttExtra)
	p := filepath.Join(t.TempDir(), "presence-bridge.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// daemon runs `presence-bridge run` in-process and returns its exit code on
// the channel.
func daemon(t *testing.T, ctx context.Context, cfgPath string, vars map[string]string, stderr *safebuf.Buffer) <-chan int {
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"run", "-config", cfgPath}, Env{
			Stdout: stderr, Stderr: stderr,
			LookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		})
	}()
	return exit
}

// subscribe collects the messages of topic on the broker.
func subscribe(t *testing.T, url, topic string) <-chan mqtt.Message {
	t.Helper()
	ch := make(chan mqtt.Message, 100)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("test-sub-" + t.Name()))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	if tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { ch <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return ch
}

func await(t *testing.T, ch <-chan mqtt.Message, want func(mqtt.Message) bool, what string) mqtt.Message {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-ch:
			if want(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestDaemonDeliversAndStopsCleanly runs the whole daemon against the
// Service Bus stand-in and a real mosquitto: a message reaches Home
// Assistant's state topic, and on SIGTERM (context cancelled) the bridge
// publishes offline and exits 0 within the 5 s SPEC §6 allows.
func TestDaemonDeliversAndStopsCleanly(t *testing.T) {
	sb := sbtest.Start(t, sbtest.Options{Subscriptions: []string{alexID + "/home"}})
	broker := mosquitto.Start(t)
	cfg := daemonConfig(t, broker.URL(), "", "")
	states := subscribe(t, broker.URL(), "presence-bridge/#")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs safebuf.Buffer
	exit := daemon(t, ctx, cfg, map[string]string{"SB": sb.ConnectionString()}, &logs)

	await(t, states, func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/bridge/state" && string(m.Payload()) == "online"
	}, "bridge online")
	body, err := presence.Encode(presence.Update{
		UserID: alexID, Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall,
		ObservedAt: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sb.Send(ctx, alexID, body)
	m := await(t, states, func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/"+alexID+"/state" && strings.Contains(string(m.Payload()), `"InACall"`)
	}, "alex's state")
	if !m.Retained() && !strings.Contains(string(m.Payload()), `"in_call":"ON"`) {
		t.Errorf("state %s", m.Payload())
	}

	stopAt := time.Now()
	cancel()
	select {
	case code := <-exit:
		if code != ExitOK {
			t.Errorf("exit %d after SIGTERM, want 0; logs:\n%s", code, logs.String())
		}
		if took := time.Since(stopAt); took > 5*time.Second {
			t.Errorf("stop took %v, SPEC §6 allows 5 s", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon did not stop; logs:\n%s", logs.String())
	}
	await(t, states, func(m mqtt.Message) bool {
		return m.Topic() == "presence-bridge/bridge/state" && string(m.Payload()) == "offline"
	}, "bridge offline after stop")
}

// TestDaemonRefusedCredentialsAndNoSecretsInLogs: the broker refuses the
// MQTT password and Service Bus refuses the key; the bridge says so clearly,
// exits 1, and no secret appears anywhere in its output, even at debug level.
func TestDaemonRefusedCredentialsAndNoSecretsInLogs(t *testing.T) {
	const (
		mqttSecret = "wrong-mqtt-password-a1b2c3"
		sbSecret   = "d3JvbmctYnVzLWtleS1zZWNyZXQ"
	)
	sb := sbtest.Start(t, sbtest.Options{
		Subscriptions: []string{alexID + "/home"},
		Keys:          map[string]string{"listen": "cmlnaHQta2V5"},
	})
	broker := mosquitto.Start(t, mosquitto.WithCredentials("bridge", "the-right-password"))
	cfg := daemonConfig(t, broker.URL(), "log_level: debug", "  username: bridge\n  password: ${MQTT_PASSWORD}\n")
	var logs safebuf.Buffer
	exit := daemon(t, t.Context(), cfg, map[string]string{
		"SB":            sb.ConnectionStringWithKey("listen", sbSecret),
		"MQTT_PASSWORD": mqttSecret,
	}, &logs)
	select {
	case code := <-exit:
		if code != ExitFailure {
			t.Errorf("exit %d, want %d", code, ExitFailure)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon kept running with refused credentials; logs:\n%s", logs.String())
	}
	out := logs.String()
	if !strings.Contains(out, "check mqtt.username and mqtt.password") {
		t.Errorf("no clear word about the refused credentials:\n%s", out)
	}
	for _, s := range []string{mqttSecret, sbSecret} {
		if strings.Contains(out, s) {
			t.Errorf("secret %q in the output:\n%s", s, out)
		}
	}
}

// TestDaemonServiceBusKeyRefusedNoSecretsInLogs: Service Bus refuses the key;
// the bridge keeps running (Home Assistant stays up), says what to check, and
// never prints the key.
func TestDaemonServiceBusKeyRefusedNoSecretsInLogs(t *testing.T) {
	const sbSecret = "d3JvbmctYnVzLWtleS1zZWNyZXQ"
	sb := sbtest.Start(t, sbtest.Options{
		Subscriptions: []string{alexID + "/home"},
		Keys:          map[string]string{"listen": "cmlnaHQta2V5"},
	})
	broker := mosquitto.Start(t)
	cfg := daemonConfig(t, broker.URL(), "log_level: debug", "")
	sensor := subscribe(t, broker.URL(), "presence-bridge/bridge/service_bus")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs safebuf.Buffer
	exit := daemon(t, ctx, cfg, map[string]string{"SB": sb.ConnectionStringWithKey("listen", sbSecret)}, &logs)
	await(t, sensor, func(m mqtt.Message) bool { return string(m.Payload()) == "OFF" }, "service_bus connectivity OFF")
	cancel()
	if code := <-exit; code != ExitOK {
		t.Errorf("exit %d", code)
	}
	out := logs.String()
	if !strings.Contains(strings.ToLower(out), "unauthorized") && !strings.Contains(strings.ToLower(out), "credentials") {
		t.Errorf("the refused key is not reported:\n%s", out)
	}
	if strings.Contains(out, sbSecret) {
		t.Errorf("Service Bus key in the output:\n%s", out)
	}
}

// fakeSupervisor records the notification calls of the add-on.
type fakeSupervisor struct {
	mu    sync.Mutex
	calls []string
	seen  chan string
}

func (f *fakeSupervisor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls = append(f.calls, r.URL.Path+" "+string(body))
	f.mu.Unlock()
	select {
	case f.seen <- r.URL.Path + " " + string(body):
	default:
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `[]`)
}

func (f *fakeSupervisor) creates() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.Contains(c, "/create") {
			out = append(out, c)
		}
	}
	return out
}

// TestAddOnNotifiesOnlyWhatTheUserMustFix: in the add-on, a refused Service
// Bus key raises a Home Assistant notification; a normal start (the source
// is "connecting" for a moment) raises none.
func TestAddOnNotifiesOnlyWhatTheUserMustFix(t *testing.T) {
	for _, tt := range []struct {
		name   string
		badKey bool
	}{{"refused key", true}, {"normal start", false}} {
		t.Run(tt.name, func(t *testing.T) {
			sb := sbtest.Start(t, sbtest.Options{
				Subscriptions: []string{alexID + "/home"},
				Keys:          map[string]string{"listen": "cmlnaHQta2V5"},
			})
			broker := mosquitto.Start(t)
			sup := &fakeSupervisor{seen: make(chan string, 10)}
			srv := httptest.NewServer(sup)
			defer srv.Close()
			key := "cmlnaHQta2V5"
			if tt.badKey {
				key = "d3Jvbmc"
			}
			cfg, err := config.Parse(fmt.Appendf(nil, `
health_addr: ""
users: [{id: %s, name: Alex}]
service_bus: {connection_string: "%s"}
mqtt: {url: "%s"}
`, alexID, sb.ConnectionStringWithKey("listen", key), broker.URL()), nil)
			if err != nil {
				t.Fatal(err)
			}
			d, err := NewDaemon(DaemonOptions{Config: cfg, AddOn: true, SupervisorURL: srv.URL, SupervisorToken: "token"})
			if err != nil {
				t.Fatal(err)
			}
			healthy := make(chan struct{}, 1)
			d.Health.Watch(func(c string, st bridge.ComponentStatus) {
				if c == sbsource.SourceName && st.OK {
					select {
					case healthy <- struct{}{}:
					default:
					}
				}
			})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			defer func() { cancel(); <-done }()
			if tt.badKey {
				deadline := time.After(20 * time.Second)
				for {
					select {
					case call := <-sup.seen:
						if strings.Contains(call, "persistent_notification/create") && strings.Contains(call, "presence_bridge_service_bus") {
							return
						}
					case <-deadline:
						t.Fatal("no notification for a refused key")
					}
				}
			}
			select {
			case <-healthy:
			case <-time.After(20 * time.Second):
				t.Fatal("service bus never became healthy")
			}
			if c := sup.creates(); len(c) != 0 {
				t.Errorf("notifications raised on a normal start: %v", c)
			}
		})
	}
}
