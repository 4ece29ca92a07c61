package app

import (
	"context"
	"fmt"
)

// runHue is owned by the Hue sink work (issue 5).
func runHue(_ context.Context, _ []string, env Env) int {
	fmt.Fprintln(env.Stderr, "presence-bridge hue: coming with the Hue sink")
	return ExitUsage
}
