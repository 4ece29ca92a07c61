package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/health"
)

// runHealthcheck asks the running daemon's health endpoint. Exit 0 when it
// reports every source and sink healthy, 1 when it does not or cannot be
// reached (Docker's "unhealthy"), 2 on a usage or configuration error.
func runHealthcheck(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "read health_addr from this configuration `FILE`")
	defaultAddr := config.Default().HealthAddr // used when neither -addr nor -config names the endpoint
	addr := fs.String("addr", "", "the health endpoint's `host:port` (default: health_addr, else "+defaultAddr+")")
	if err := fs.Parse(args); err != nil {
		fs.SetOutput(env.Stderr)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(env.Stderr, "usage: presence-bridge healthcheck [-config FILE] [-addr HOST:PORT]")
			fs.PrintDefaults()
			return ExitOK
		}
		fmt.Fprintf(env.Stderr, "presence-bridge healthcheck: %v\nusage: presence-bridge healthcheck [-config FILE] [-addr HOST:PORT]\n", err)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "presence-bridge healthcheck: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	target := *addr
	if target != "" {
		if _, _, err := net.SplitHostPort(target); err != nil {
			fmt.Fprintf(env.Stderr, "presence-bridge healthcheck: -addr %q: want host:port\n", target)
			return ExitUsage
		}
	}
	if target == "" && *cfgPath != "" {
		cfg, err := config.Load(*cfgPath, env.LookupEnv)
		if err != nil {
			fmt.Fprintf(env.Stderr, "presence-bridge healthcheck: %v\n", err)
			return ExitUsage
		}
		if cfg.HealthAddr == "" {
			fmt.Fprintln(env.Stderr, "presence-bridge healthcheck: the health endpoint is off (health_addr is empty)")
			return ExitFailure
		}
		target = cfg.HealthAddr
	}
	if target == "" {
		target = defaultAddr
	}
	if err := health.Check(ctx, target); err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge healthcheck: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintln(env.Stdout, "healthy")
	return ExitOK
}
