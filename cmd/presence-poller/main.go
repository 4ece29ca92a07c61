// Command presence-poller is the cloud half of Presence Bridge: people sign
// in once, and their Teams presence is published to their Service Bus
// topic, which presence-bridge reads at home.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/presence-bridge/presence-bridge/poller/cli"
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
	return cli.Run(ctx, os.Args[1:], cli.Env{
		Stdout:    os.Stdout,
		Stderr:    os.Stderr,
		LookupEnv: os.LookupEnv,
		Version:   version,
		Commit:    commit,
	})
}
