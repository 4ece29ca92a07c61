// Command presence-bridge brings Microsoft Teams presence, read from Azure
// Service Bus, into Home Assistant (MQTT discovery) and onto Philips Hue lamps.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/presence-bridge/presence-bridge/app"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

func main() { os.Exit(run()) }

func run() int {
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
