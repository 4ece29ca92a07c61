package addon_test

// The add-on start-up bar (issue 6): from the add-on starting to `online` on
// the broker's bridge state topic, with a local broker. These benchmarks run
// the add-on path in-process (options.json, the Supervisor's MQTT lookup
// against an httptest Supervisor, the daemon) and the built binary as a
// process, against a real mosquitto and the Service Bus stand-in.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/presence-bridge/presence-bridge/addon"
	"github.com/presence-bridge/presence-bridge/app"
	"github.com/presence-bridge/presence-bridge/internal/mosquitto"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const benchUser = "6f1c2a3b-1111-2222-3333-444455556666"

// supervisorFor answers GET /services/mqtt with the broker's address, the
// port as a string as some Supervisors send it, and accepts notifications.
func supervisorFor(b *testing.B, brokerAddr string) *httptest.Server {
	host, port, err := net.SplitHostPort(brokerAddr)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/services/mqtt" {
			fmt.Fprintf(w, `{"result":"ok","data":{"addon":"core_mosquitto","host":%q,"port":%q,"ssl":false,"protocol":"3.1.1","username":"","password":""}}`, host, port)
			return
		}
		io.WriteString(w, `[]`)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// onlineWatcher subscribes to base/bridge/state and signals "online".
func onlineWatcher(b *testing.B, brokerURL, base string) <-chan struct{} {
	online := make(chan struct{}, 1)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID("bench-watch-" + base))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("watcher connect: %v", tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(50) })
	tok := c.Subscribe(base+"/bridge/state", 1, func(_ mqtt.Client, m mqtt.Message) {
		if string(m.Payload()) == "online" {
			select {
			case online <- struct{}{}:
			default:
			}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("watcher subscribe: %v", tok.Error())
	}
	return online
}

func report(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(samples)), "starts")
}

// BenchmarkAddonStartToOnline: addon.Load (options file + Supervisor MQTT
// lookup), app.NewDaemon and Run, until `online` arrives on the broker.
func BenchmarkAddonStartToOnline(b *testing.B) {
	if testing.Short() {
		b.Skip("needs mosquitto and the Service Bus stand-in")
	}
	sb := sbtest.Start(b, sbtest.Options{Subscriptions: []string{benchUser + "/home"}})
	broker := mosquitto.Start(b)
	sup := supervisorFor(b, broker.Addr())
	dir := b.TempDir()
	var samples []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		base := "bench-addon-" + strconv.Itoa(i)
		optionsPath := filepath.Join(dir, "options-"+strconv.Itoa(i)+".json")
		options := fmt.Sprintf(`{"log_level":"warn","health_addr":"","users":[{"id":%q,"name":"Alex"}],
"service_bus":{"subscription":"home","connection_string":%q},
"mqtt":{"client_id":%q,"discovery_prefix":"homeassistant","base_topic":%q},
"hue":{"mode":"auto","min_interval":"1s","bridges":[],"colors":[]}}`, benchUser, sb.ConnectionString(), base, base)
		if err := os.WriteFile(optionsPath, []byte(options), 0o600); err != nil {
			b.Fatal(err)
		}
		online := onlineWatcher(b, broker.URL(), base)
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan error, 1)
		b.StartTimer()

		start := time.Now()
		cfg, err := addon.Load(ctx, addon.Options{OptionsPath: optionsPath, SupervisorURL: sup.URL, Token: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		d, err := app.NewDaemon(app.DaemonOptions{Config: cfg, AddOn: true, SupervisorToken: "bench", SupervisorURL: sup.URL})
		if err != nil {
			b.Fatal(err)
		}
		go func() { done <- d.Run(ctx) }()
		select {
		case <-online:
		case err := <-done:
			b.Fatalf("daemon stopped before online: %v", err)
		case <-time.After(20 * time.Second):
			b.Fatal("no online within 20s")
		}
		samples = append(samples, time.Since(start))

		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatalf("daemon: %v", err)
		}
		b.StartTimer()
	}
	report(b, samples)
}

// BenchmarkBinaryStartToOnline: the built binary, started as a process with
// an equivalent presence-bridge.yaml, until `online` arrives on the broker.
// (The binary's add-on mode reads the fixed /data/options.json and
// http://supervisor, which a test cannot provide; the in-process benchmark
// above covers that path.)
func BenchmarkBinaryStartToOnline(b *testing.B) {
	if testing.Short() {
		b.Skip("needs mosquitto and the Service Bus stand-in")
	}
	sb := sbtest.Start(b, sbtest.Options{Subscriptions: []string{benchUser + "/home"}})
	broker := mosquitto.Start(b)
	dir := b.TempDir()
	bin := filepath.Join(dir, "presence-bridge")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "../cmd/presence-bridge")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	var samples []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		base := "bench-bin-" + strconv.Itoa(i)
		cfgPath := filepath.Join(dir, "presence-bridge-"+strconv.Itoa(i)+".yaml")
		cfgText := fmt.Sprintf("log_level: warn\nhealth_addr: \"\"\nusers:\n  - {id: %s, name: Alex}\nservice_bus:\n  connection_string: ${SB}\nmqtt:\n  url: %s\n  client_id: %s\n  base_topic: %s\n",
			benchUser, broker.URL(), base, base)
		if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
			b.Fatal(err)
		}
		online := onlineWatcher(b, broker.URL(), base)
		cmd := exec.Command(bin, "run", "-config", cfgPath)
		cmd.Dir = b.TempDir() // the default data_dir lands there
		cmd.Env = append(os.Environ(), "SB="+sb.ConnectionString())
		var stderr strings.Builder
		cmd.Stderr = &stderr
		b.StartTimer()

		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		select {
		case <-online:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			b.Fatalf("no online within 20s; stderr:\n%s", stderr.String())
		}
		samples = append(samples, time.Since(start))

		b.StopTimer()
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("binary exit: %v; stderr:\n%s", err, stderr.String())
		}
		b.StartTimer()
	}
	report(b, samples)
}
