// Package cli is presence-poller's command line and its one composition
// root: it parses the command, loads the configuration and wires the store,
// sign-in, Graph, Service Bus, the refresh engine and the HTTP server. It
// never calls os.Exit and reads the environment only through Env, so tests
// run every command in-process.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
)

// Exit codes, as the bridge's.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // runtime failure (and check-config on an invalid file)
	ExitUsage   = 2 // usage or configuration error
)

// ConfigEnv names the variable that overrides the default configuration
// path; DefaultConfigPath is read otherwise.
const (
	ConfigEnv         = "PRESENCE_POLLER_CONFIG"
	DefaultConfigPath = "presence-poller.yaml"
)

// Env is what a command may use of the process.
type Env struct {
	Stdout, Stderr io.Writer
	LookupEnv      func(name string) (string, bool)
	Version        string
	Commit         string
	// HTTPClient, when set, makes every outgoing HTTPS request (Entra,
	// Graph, the Service Bus management API): tests pass one that trusts
	// their fakes. Nil: each part uses its default.
	HTTPClient *http.Client
	// Ready, when set, learns the address serve listens on.
	Ready func(addr string)
}

func (e Env) getenv(name string) string {
	if e.LookupEnv == nil {
		return ""
	}
	v, _ := e.LookupEnv(name)
	return v
}

const usage = `usage: presence-poller <command> [flags]

commands:
  serve                   sign-in pages, API and the refresh loop   -config FILE
  functions               the same as an Azure Functions custom handler
                          (listens on $FUNCTIONS_CUSTOMHANDLER_PORT)
  check-config            validate and print the configuration, secrets redacted
  accounts [-json]        list signed-in people (works beside a running serve)
  accounts remove <id>    forget a person (their topic stays)
  accounts add -tenant T [-name N] <id>
                          add a person of an app-only tenant without a sign-in
  version                 print version, commit and Go version
`

// Run runs the command named by args (without the program name) and returns
// the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return ExitUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, args, env)
	case "check-config":
		return runCheckConfig(args, env)
	case "accounts":
		return runAccounts(ctx, args, env)
	case "functions":
		return runFunctions(ctx, args, env)
	case "version":
		fmt.Fprintf(env.Stdout, "presence-poller %s (commit %s, %s)\n", or(env.Version, "dev"), or(env.Commit, "unknown"), runtime.Version())
		return ExitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(env.Stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "presence-poller: unknown command %q\n\n%s", cmd, usage)
	return ExitUsage
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }
