package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/presence-bridge/presence-bridge/hue"
)

const hueUsage = `usage: presence-bridge hue <command> [flags]

commands:
  pair    -host H [-timeout 2m]      wait for the bridge's link button, print a new API key
  groups  -host H [-username KEY]    list the bridge's groups (id, name, type, lights);
                                     the key defaults to $HUE_USERNAME
`

// runHue runs `presence-bridge hue pair|groups`.
func runHue(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, hueUsage)
		return ExitUsage
	}
	switch args[0] {
	case "pair":
		return runHuePair(ctx, args[1:], env)
	case "groups":
		return runHueGroups(ctx, args[1:], env)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(env.Stdout, hueUsage)
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "presence-bridge hue: unknown command %q\n\n%s", args[0], hueUsage)
	return ExitUsage
}

// parseHueFlags parses a hue subcommand's flags; code is -1 to go on.
func parseHueFlags(fs *flag.FlagSet, args []string, env Env, usage string) int {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		fs.SetOutput(env.Stderr)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(env.Stderr, usage)
			fs.PrintDefaults()
			return ExitOK
		}
		fmt.Fprintf(env.Stderr, "presence-bridge %s: %v\n%s\n", fs.Name(), err, usage)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "presence-bridge %s: unexpected argument %q\n%s\n", fs.Name(), fs.Arg(0), usage)
		return ExitUsage
	}
	return -1
}

func checkHost(name, host string, env Env, usage string) bool {
	if host == "" {
		fmt.Fprintf(env.Stderr, "presence-bridge %s: -host is required\n%s\n", name, usage)
		return false
	}
	if _, err := hue.ParseHost(host); err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge %s: -host: %v\n", name, err)
		return false
	}
	return true
}

func runHuePair(ctx context.Context, args []string, env Env) int {
	const usage = "usage: presence-bridge hue pair -host HOST[:PORT] [-timeout 2m]"
	fs := flag.NewFlagSet("hue pair", flag.ContinueOnError)
	host := fs.String("host", "", "the Hue bridge's `host[:port]`")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the link button")
	if code := parseHueFlags(fs, args, env, usage); code >= 0 {
		return code
	}
	if !checkHost(fs.Name(), *host, env, usage) {
		return ExitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(env.Stderr, "presence-bridge hue pair: -timeout must be positive\n%s\n", usage)
		return ExitUsage
	}
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "home"
	}
	fmt.Fprintf(env.Stderr, "Asking the Hue bridge at %s for an API key…\n", *host)
	user, err := hue.Pair(ctx, hue.PairOptions{
		Host:       *host,
		DeviceType: hue.DeviceType(name),
		Timeout:    *timeout,
		Waiting: func() {
			fmt.Fprintf(env.Stderr, "Press the round link button on the Hue bridge now (waiting up to %s).\n", *timeout)
		},
	})
	if err != nil {
		if errors.Is(err, hue.ErrPairTimeout) {
			fmt.Fprintf(env.Stderr, "presence-bridge hue pair: the link button was not pressed within %s; run the command again and press it\n", *timeout)
			return ExitFailure
		}
		fmt.Fprintf(env.Stderr, "presence-bridge hue pair: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintln(env.Stdout, user)
	fmt.Fprintln(env.Stderr, "Paired. Set this key as hue.bridges[].username (for example through ${HUE_USERNAME}); keep it secret.")
	return ExitOK
}

func runHueGroups(ctx context.Context, args []string, env Env) int {
	const usage = "usage: presence-bridge hue groups -host HOST[:PORT] [-username KEY]"
	fs := flag.NewFlagSet("hue groups", flag.ContinueOnError)
	host := fs.String("host", "", "the Hue bridge's `host[:port]`")
	username := fs.String("username", "", "the API key from `hue pair` (default $HUE_USERNAME)")
	if code := parseHueFlags(fs, args, env, usage); code >= 0 {
		return code
	}
	if !checkHost(fs.Name(), *host, env, usage) {
		return ExitUsage
	}
	key := *username
	if key == "" {
		key = env.getenv("HUE_USERNAME")
	}
	if key == "" {
		fmt.Fprintf(env.Stderr, "presence-bridge hue groups: -username (or $HUE_USERNAME) is required; get one with `presence-bridge hue pair`\n%s\n", usage)
		return ExitUsage
	}
	groups, err := hue.ListGroups(ctx, *host, key, nil)
	if err != nil {
		if errors.Is(err, hue.ErrUnauthorized) {
			fmt.Fprintf(env.Stderr, "presence-bridge hue groups: the bridge rejected the key; press its link button and run `presence-bridge hue pair -host %s`\n", *host)
			return ExitFailure
		}
		fmt.Fprintf(env.Stderr, "presence-bridge hue groups: %v\n", err)
		return ExitFailure
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTYPE\tLIGHTS")
	for _, g := range groups {
		lights := strings.Join(g.Lights, ",")
		if lights == "" {
			lights = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.ID, printable(g.Name), printable(g.Type), lights)
	}
	if err := tw.Flush(); err != nil {
		return ExitFailure
	}
	if len(groups) == 0 {
		fmt.Fprintln(env.Stderr, "The bridge has no groups: create a room or zone in the Hue app.")
	}
	return ExitOK
}

// printable keeps names from the bridge from moving the terminal around.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
