package app

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/discovery/discoverytest"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
	"github.com/presence-bridge/presence-bridge/presence"
)

// oneUpdate is a source that submits one update and reports its outcome.
type oneUpdate struct {
	u       presence.Update
	outcome chan bridge.Outcome
}

func (s *oneUpdate) Name() string { return "service_bus" }

func (s *oneUpdate) Run(ctx context.Context, core bridge.Submitter) error {
	if err := core.WaitReady(ctx); err != nil {
		return nil
	}
	core.Submit(s.u, s.Name(), func(o bridge.Outcome) { s.outcome <- o })
	<-ctx.Done()
	return nil
}

// TestUpperCaseUserIDReachesHomeAssistantAndHue: a user configured with an
// upper-case id (check-config and the add-on accept it) gets their state
// on MQTT under the lower-case id the source decodes, the lamps of a group
// naming them by that id change, and the message is acknowledged only once
// the state is on the broker. Before the fix Home Assistant never got a
// state and the lamps never changed, while the message was completed.
func TestUpperCaseUserIDReachesHomeAssistantAndHue(t *testing.T) {
	const upper = "6F1C2A3B-1111-2222-3333-444455556666"
	fake := huetest.New(huetest.Options{})
	host, err := fake.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	cfg, err := config.Parse([]byte(`
health_addr: ""
data_dir: `+t.TempDir()+`
users: [{id: `+upper+`, name: Alex}]
service_bus: {connection_string: "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v"}
mqtt: {url: "tcp://fake:1883"}
hue:
  mode: always
  bridges: [{host: "`+host+`", username: test-key, groups: [{group: Office, users: [`+upper+`]}]}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := discoverytest.New()
	src := &oneUpdate{
		u:       presence.Update{UserID: "6f1c2a3b-1111-2222-3333-444455556666", Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall, ObservedAt: time.Now()},
		outcome: make(chan bridge.Outcome, 1),
	}
	d, err := NewDaemon(DaemonOptions{
		Config: cfg, MQTTDial: b.Dial, Logger: slog.New(slog.DiscardHandler),
		Sources: []SourceFactory{func(bridge.StatusReporter, *slog.Logger) (Source, error) { return src, nil }},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	select {
	case o := <-src.outcome:
		if o != bridge.Applied {
			t.Fatalf("outcome %v, want applied", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message was never acknowledged")
	}
	if p, ok := b.Retained("presence-bridge/6f1c2a3b-1111-2222-3333-444455556666/state"); !ok || !strings.Contains(p, `"InACall"`) {
		t.Errorf("retained state %q, want Alex in a call under the lower-case id", p)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(fake.Commands()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the Hue driver runs on its own goroutine; polling the fake's record
	}
	if len(fake.Commands()) == 0 {
		t.Error("the lamps of the group naming Alex by the upper-case id never changed")
	}
}
