package app

import (
	"context"
	"fmt"
)

// runDemo is owned by the Home Assistant sink work (issue 4).
func runDemo(_ context.Context, _ []string, env Env) int {
	fmt.Fprintln(env.Stderr, "presence-bridge demo: coming with the Home Assistant sink")
	return ExitUsage
}
