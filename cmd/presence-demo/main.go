// Command presence-demo shows Presence Bridge working with no cloud and no
// hardware: simulated people, an embedded MQTT broker, the real bridge and
// a simulated Hue bridge. `make demo` runs it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/presence-bridge/presence-bridge/demo"
)

// Set with -ldflags "-X main.version=...".
var version = "dev"

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return demo.Command(ctx, os.Args[1:], os.Stdout, os.Stderr, version)
}
