// Command presence-bridge brings Microsoft Teams presence, read from Azure
// Service Bus, into Home Assistant (MQTT discovery) and onto Philips Hue lamps.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/presence-bridge/presence-bridge/app"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT is
// set. The bridge's budget is 30 MiB resident; about 8.5 MiB of that is the
// binary's own pages, outside what the runtime counts, so the runtime (heap,
// stacks, metadata) gets 20 MiB. With 1,000 users the live heap peaks at
// about 9 MiB under a backlog, so the limit leaves the collector room and
// mainly makes it collect before the heap doubles and hand idle memory back
// to the system at once, instead of minutes later. It is soft: a larger
// installation whose live heap needs more keeps working, with more GC work;
// GOMEMLIMIT (for example "off" or "64MiB") overrides it.
const memoryLimit = 20 << 20

func main() { os.Exit(run()) }

func run() int {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return app.Run(ctx, os.Args[1:], app.Env{
		Stdout:    os.Stdout,
		Stderr:    os.Stderr,
		LookupEnv: os.LookupEnv,
		Version:   version,
		Commit:    commit,
	})
}
