package demo

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"
)

// Exit codes, as the bridge's.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Command runs `presence-demo [flags]` and returns the exit code; main
// passes the process's arguments and streams.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer, version string) int {
	fs := flag.NewFlagSet("presence-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: presence-demo [flags]

The home side of Presence Bridge with no cloud and no hardware: simulated
people, an embedded MQTT broker, the real bridge, a simulated Hue bridge.
With -system, the whole system: a page where you sign in as a simulated
colleague, the real poller, an in-process Service Bus, and the home side.

flags:
`)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", DefaultAddr, "listen address of the embedded MQTT broker (port 0: any free port)")
	interval := fs.Duration("interval", defaultInterval, "time between two presence changes")
	steps := fs.Int("steps", 0, "stop after this many presence changes (0: until interrupted)")
	logLevel := fs.String("log-level", "warn", "diagnostics on stderr: debug | info | warn | error")
	noHue := fs.Bool("no-hue", false, "leave out the simulated Hue bridge")
	showVersion := fs.Bool("version", false, "print the version and exit")
	system := fs.Bool("system", false, "the whole system: sign in on a page, the real poller, the home side")
	web := fs.String("web", DefaultWebAddr, "with -system: listen address of the page (port 0: any free port)")
	poll := fs.Duration("poll", 2*time.Second, "with -system: the poller's Graph polling interval")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "presence-demo: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	if *showVersion {
		fmt.Fprintf(stdout, "presence-demo %s (%s)\n", version, runtime.Version())
		return ExitOK
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "presence-demo: -log-level %q: want debug, info, warn or error\n", *logLevel)
		return ExitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	var err error
	if *system {
		err = RunSystem(ctx, SystemOptions{
			WebAddr: *web, BrokerAddr: *listen, Out: stdout, Logger: logger,
			Interval: *interval, PollInterval: *poll, Version: version, NoHue: *noHue,
		})
	} else {
		err = Run(ctx, Options{
			Addr:     *listen,
			Out:      stdout,
			Logger:   logger,
			Interval: *interval,
			Steps:    *steps,
			Version:  version,
			NoHue:    *noHue,
		})
	}
	if err != nil {
		fmt.Fprintf(stderr, "presence-demo: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}
