package app

import (
	"context"
	"fmt"
)

// runHealthcheck is owned by the add-on work (issue 6).
func runHealthcheck(_ context.Context, _ []string, env Env) int {
	fmt.Fprintln(env.Stderr, "presence-bridge healthcheck: coming with the add-on")
	return ExitUsage
}
