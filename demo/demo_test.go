package demo_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/demo"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
)

const wait = 20 * time.Second

// The demo runs the real pipeline: a subscriber of its broker sees the
// discovery configs and the simulated users' states; cancelling stops it.
func TestDemoPublishesToSubscribers(t *testing.T) {
	users := demo.Users()
	var (
		mu      sync.Mutex
		seen    = make(map[string]bool) // topic or topic+" "+availability/activity
		changed = make(chan struct{}, 1)
	)
	record := func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		seen[m.Topic()] = true
		var st struct{ Availability, Activity string }
		if strings.HasSuffix(m.Topic(), "/state") && json.Unmarshal(m.Payload(), &st) == nil {
			seen[m.Topic()+" "+st.Availability+"/"+st.Activity] = true
		}
		mu.Unlock()
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	listening := make(chan string, 1)
	var out safebuf.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	runErr := make(chan error, 1)
	go func() {
		runErr <- demo.Run(ctx, demo.Options{
			Addr: "127.0.0.1:0", Out: &out, Interval: 10 * time.Millisecond, Version: "test",
			Listening: func(addr string) {
				c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("watcher").SetAutoReconnect(false))
				if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
					t.Errorf("connect to the demo broker: %v", tok.Error())
					return
				}
				tok := c.SubscribeMultiple(map[string]byte{"homeassistant/#": 1, "presence-bridge/#": 1}, record)
				if !tok.WaitTimeout(wait) || tok.Error() != nil {
					t.Errorf("subscribe: %v", tok.Error())
				}
				listening <- addr
			},
		})
	}()

	select {
	case <-listening:
	case err := <-runErr:
		t.Fatalf("demo stopped before listening: %v", err)
	}
	want := []string{
		"homeassistant/device/presence_bridge/config",
		"homeassistant/device/presence_bridge_" + string(users[0].ID) + "/config",
		"homeassistant/device/presence_bridge_" + string(users[1].ID) + "/config",
		"presence-bridge/bridge/state",
		"presence-bridge/" + string(users[0].ID) + "/availability",
		"presence-bridge/" + string(users[0].ID) + "/state Busy/InACall",
		"presence-bridge/" + string(users[1].ID) + "/state DoNotDisturb/Presenting",
	}
	for {
		mu.Lock()
		var missing []string
		for _, w := range want {
			if !seen[w] {
				missing = append(missing, w)
			}
		}
		mu.Unlock()
		if len(missing) == 0 {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the subscriber never saw %q\noutput:\n%s", missing, out.String())
		}
	}
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(wait):
		t.Fatal("demo did not stop after cancel")
	}
	text := out.String()
	for _, line := range []string{
		`discovered device "Teams – Alex": binary_sensor.alex_teams_busy, binary_sensor.alex_teams_in_call, sensor.alex_teams_activity, sensor.alex_teams_availability`,
		"Teams      Alex is now Busy / InACall",
		"sensor.alex_teams_availability=Busy  sensor.alex_teams_activity=InACall  binary_sensor.alex_teams_in_call=on  binary_sensor.alex_teams_busy=on",
		"bridge is online",
		"bridge is offline",
		"demo stopped",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("output lacks %q:\n%s", line, text)
		}
	}
}

// Steps bounds a run: it ends by itself after that many changes.
func TestDemoSteps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var out safebuf.Buffer
	if err := demo.Run(ctx, demo.Options{Addr: "127.0.0.1:0", Out: &out, Interval: time.Millisecond, Steps: 3}); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if n := strings.Count(out.String(), "Teams      "); n != 3 {
		t.Fatalf("%d changes, want 3:\n%s", n, out.String())
	}
}

func TestDemoBusyPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	first := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- demo.Run(ctx, demo.Options{Addr: "127.0.0.1:0", Interval: time.Hour, Listening: func(a string) { first <- a }})
	}()
	var addr string
	select {
	case addr = <-first:
	case err := <-done:
		t.Fatalf("first demo: %v", err)
	}
	if err := demo.Run(ctx, demo.Options{Addr: addr}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second demo on a busy port = %v, want an error naming %s", err, addr)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("first demo: %v", err)
	}
}

// TestDemoDrivesSimulatedHue: the demo's Hue sink turns the simulated
// bridge's lamps green, then red once Alex is in a call, and drives the zone
// the two users share.
func TestDemoDrivesSimulatedHue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var out safebuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- demo.Run(ctx, demo.Options{Addr: "127.0.0.1:0", Out: &out, Interval: 300 * time.Millisecond})
	}()
	for _, want := range []string{"Office  lights green", "Office  lights red", "Hallway lights"} {
		for !strings.Contains(out.String(), want) {
			select {
			case err := <-done:
				t.Fatalf("demo ended (%v) before %q:\n%s", err, want, out.String())
			case <-ctx.Done():
				t.Fatalf("no %q in:\n%s", want, out.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
