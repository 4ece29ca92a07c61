package app

import (
	"context"
	"flag"
	"fmt"

	"github.com/presence-bridge/presence-bridge/demo"
)

// runDemo runs the home pipeline with simulated users and an embedded MQTT
// broker until ctx ends (Ctrl-C).
func runDemo(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	listen := fs.String("listen", demo.DefaultAddr, "listen address of the embedded MQTT broker")
	interval := fs.Duration("interval", 0, "time between two presence changes (default 3s)")
	steps := fs.Int("steps", 0, "stop after this many presence changes (0: until interrupted)")
	logLevel := fs.String("log-level", "warn", "diagnostics on stderr: debug | info | warn | error")
	noHue := fs.Bool("no-hue", false, "leave out the simulated Hue bridge")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "presence-bridge demo: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	err := demo.Run(ctx, demo.Options{
		Addr:     *listen,
		Out:      env.Stdout,
		Logger:   newLogger(env.Stderr, *logLevel),
		Interval: *interval,
		Steps:    *steps,
		Version:  or(env.Version, "dev"),
		NoHue:    *noHue,
	})
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge demo: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}
