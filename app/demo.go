package app

import (
	"context"
	"fmt"
)

// runDemo points at the demo program. The demo embeds an MQTT broker (NATS
// server, about 16 MB) that would double the size of this binary, which
// ships in the add-on and on Raspberry Pis; so it is a program of its own.
func runDemo(_ context.Context, _ []string, env Env) int {
	fmt.Fprint(env.Stderr, `presence-bridge: the demo is a program of its own (its embedded MQTT broker would double this binary's size).
From a clone of the repository run:
  make demo                       # or: go run ./cmd/presence-demo
`)
	return ExitUsage
}
