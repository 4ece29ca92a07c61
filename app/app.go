// Package app is the presence-bridge command line: it parses the command and
// its flags, loads the configuration and wires sources and sinks to the core.
// It never calls os.Exit and reads the environment only through Env, so tests
// run every command in-process.
package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
)

// Exit codes.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // runtime failure
	ExitUsage   = 2 // usage or configuration error
)

// Env is what a command may use of the process.
type Env struct {
	Stdout, Stderr io.Writer
	// LookupEnv reads an environment variable (os.LookupEnv in main).
	LookupEnv func(name string) (string, bool)
	// Version and Commit identify the build (set with -ldflags -X in main).
	Version, Commit string
	// ConfiguredUsers, when set, learns how many users the daemon runs
	// with before it starts (main sizes the runtime's memory limit by it).
	ConfiguredUsers func(n int)
	// HTTPClient, when set, is what login uses to reach Microsoft (tests:
	// one that trusts the fake Entra).
	HTTPClient *http.Client
}

func (e Env) getenv(name string) string {
	if e.LookupEnv == nil {
		return ""
	}
	v, _ := e.LookupEnv(name)
	return v
}

const usage = `usage: presence-bridge <command> [flags]

commands:
  run            run the bridge (default)        -config FILE
  check-config   validate and print the configuration, secrets redacted
  demo           moved to its own program: make demo (go run ./cmd/presence-demo)
  hue pair       wait for the Hue link button and print a new API key
  hue groups     list a Hue bridge's groups
  login          sign in to Microsoft for the graph source (device code)
                 -config FILE
  accounts       list the graph source's signed-in accounts; accounts
                 remove <upn> forgets one          -config FILE
  healthcheck    ask the running bridge's health endpoint (exit 0 when healthy)
  version        print version, commit and Go version
`

// Run runs the command named by args (without the program name) and returns
// the process exit code.
func Run(ctx context.Context, args []string, env Env) int {
	cmd := "run"
	if len(args) > 0 && (len(args[0]) == 0 || args[0][0] != '-') {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runDaemon(ctx, args, env)
	case "check-config":
		return runCheckConfig(ctx, args, env)
	case "demo":
		return runDemo(ctx, args, env)
	case "hue":
		return runHue(ctx, args, env)
	case "login":
		return runLogin(ctx, args, env)
	case "accounts":
		return runAccounts(ctx, args, env)
	case "healthcheck":
		return runHealthcheck(ctx, args, env)
	case "version":
		fmt.Fprintf(env.Stdout, "presence-bridge %s (commit %s, %s)\n", or(env.Version, "dev"), or(env.Commit, "unknown"), runtime.Version())
		return ExitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(env.Stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "presence-bridge: unknown command %q\n\n%s", cmd, usage)
	return ExitUsage
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
