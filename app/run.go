package app

import (
	"context"
	"fmt"
)

func runDaemon(_ context.Context, _ []string, env Env) int {
	fmt.Fprintln(env.Stderr, "presence-bridge run: not wired yet")
	return ExitUsage
}

func runCheckConfig(_ context.Context, _ []string, env Env) int {
	fmt.Fprintln(env.Stderr, "presence-bridge check-config: not wired yet")
	return ExitUsage
}
