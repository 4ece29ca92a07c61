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

// memoryLimit is the Go runtime's soft memory limit for a bridge with the
// given number of configured users, unless GOMEMLIMIT is set. The budget is
// 30 MiB resident for a household and for 1,000 users (SPEC §8); about
// 8.5 MiB of that is the binary's own pages, outside what the runtime counts,
// so up to 1,000 users the runtime (heap, stacks, metadata) gets 20 MiB: the
// live heap peaks at about 9 MiB under a 1,000-user backlog, so the collector
// keeps room, collects before the heap doubles and hands idle memory back at
// once instead of minutes later. Beyond that the limit grows by 8 KiB a user,
// about what each held message and state costs, so that a larger installation
// is not left collecting back to back (measured: with 2,000 users a fixed
// 20 MiB spent about half the bridge's CPU in the collector). It is soft:
// GOMEMLIMIT (for example "off" or "64MiB") overrides it.
func memoryLimit(users int) int64 {
	return max(20<<20, 12<<20+int64(users)*8<<10)
}

func main() { os.Exit(run()) }

func run() int {
	_, userLimit := os.LookupEnv("GOMEMLIMIT")
	if !userLimit {
		debug.SetMemoryLimit(memoryLimit(0))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return app.Run(ctx, os.Args[1:], app.Env{
		Stdout:    os.Stdout,
		Stderr:    os.Stderr,
		LookupEnv: os.LookupEnv,
		Version:   version,
		Commit:    commit,
		ConfiguredUsers: func(n int) {
			if !userLimit {
				debug.SetMemoryLimit(memoryLimit(n))
			}
		},
	})
}
