package demo_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/demo"
	"github.com/presence-bridge/presence-bridge/internal/chromium"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
)

// TestSystemDemoInABrowser opens the whole-system demo's page in a real
// headless Chromium, signs in as the simulated colleague Alex (the demo's
// page → the poller's /auth/start → the simulated Microsoft sign-in page →
// the form post to the poller's /auth/end), and waits for Alex's Teams
// presence to reach Home Assistant's state topic on the demo's broker.
func TestSystemDemoInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a browser and the whole system")
	}
	browser := chromium.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out safebuf.Buffer
	ready := make(chan [2]string, 1)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- demo.RunSystem(runCtx, demo.SystemOptions{
			WebAddr: "127.0.0.1:0", BrokerAddr: "127.0.0.1:0", Out: &out,
			Interval: 300 * time.Millisecond, PollInterval: time.Second,
			Listening: func(page, broker string) { ready <- [2]string{page, broker} },
		})
	}()
	var page, broker string
	select {
	case a := <-ready:
		page, broker = a[0], a[1]
	case err := <-done:
		t.Fatalf("demo stopped before listening: %v", err)
	}

	// Home Assistant's view: Alex's state topic.
	const alexState = "presence-bridge/6f1c2a3b-1111-2222-3333-444455556666/state"
	var mu sync.Mutex
	var states []string
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("ha-stand-in"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	sub.Subscribe(alexState, 1, func(_ mqtt.Client, m mqtt.Message) {
		var st struct{ Availability, Activity string }
		if json.Unmarshal(m.Payload(), &st) == nil {
			mu.Lock()
			states = append(states, st.Availability+"/"+st.Activity)
			mu.Unlock()
		}
	}).WaitTimeout(10 * time.Second)

	bctx, bcancel := context.WithTimeout(browser, 60*time.Second)
	defer bcancel()
	if err := chromedp.Do(bctx, chromedp.Navigate(page+"/"), chromedp.Click(chromedp.CSS("#signin-Alex"))); err != nil {
		t.Fatalf("the demo's page: %v\n%s", err, out.String())
	}
	// The simulated Microsoft page lists the colleagues, each a button.
	if err := chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS("#person-6f1c2a3b-1111-2222-3333-444455556666"))); err != nil {
		loc, _ := chromedp.Run(browser, chromedp.Location())
		body, _ := chromedp.Run(browser, chromedp.OuterHTML(chromedp.CSS("html")))
		t.Fatalf("to the sign-in page: %v (at %s)\n%s\n%s", err, loc, body, out.String())
	}
	html, err := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html, "form") {
		t.Fatalf("sign-in page:\n%s", html)
	}
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`#person-6f1c2a3b-1111-2222-3333-444455556666`))); err != nil {
		t.Fatalf("pick Alex: %v\n%s", err, html)
	}
	// The poller's page after the sign-in shows the bridge's users: entry
	// for Alex (the form post to /auth/end lands there).
	var result string
	for end := time.Now().Add(30 * time.Second); ; {
		result, _ = chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body")))
		if strings.Contains(result, "users:") || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling the page the browser shows
	}
	if !strings.Contains(result, "users:") || !strings.Contains(result, "6f1c2a3b-1111-2222-3333-444455556666") {
		loc, _ := chromedp.Run(bctx, chromedp.Location())
		t.Fatalf("the page after the sign-in (%s) does not show Alex's users: entry:\n%s", loc, result)
	}

	// Alex's presence, as the simulated Teams changes it, reaches Home
	// Assistant: more than one state in a while.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n, got := len(states), strings.Join(states, ", ")
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Home Assistant saw %d states of Alex (%s)\n%s", n, got, out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling the subscriber's record
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"Bus        topic 6f1c2a3b-1111-2222-3333-444455556666 created", "Teams      Alex is now", "sensor.alex_teams_availability="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
