package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/presence-bridge/presence-bridge/addon"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/graphsource"
)

// graphConfig loads the configuration for login and accounts: it must have
// the graph source. It returns the store and the configuration, or an exit
// code.
func graphConfig(ctx context.Context, name string, args []string, env Env) (*config.Config, *graphsource.Store, []string, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	load := configFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, nil, ExitOK
		}
		return nil, nil, nil, ExitUsage
	}
	cfg, path, err := load(ctx, newLogger(env.Stderr, "warn"))
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge: the configuration has problems:\n%s\n", indent(err.Error()))
		return nil, nil, nil, ExitUsage
	}
	if !cfg.Graph.Enabled() {
		fmt.Fprintf(env.Stderr, "presence-bridge %s: %s has no graph.client_id: the graph source is off (see DOCS.md, \"Sign in with Microsoft\")\n", name, path)
		return nil, nil, nil, ExitUsage
	}
	store := graphsource.NewStore(cfg.DataDirOrDefault(path == addon.DefaultOptionsPath))
	return cfg, store, fs.Args(), -1
}

// runLogin is `presence-bridge login`: a device-code sign-in in the
// terminal. The account goes to data_dir, where a running daemon picks it
// up on its next cycle.
func runLogin(ctx context.Context, args []string, env Env) int {
	cfg, store, rest, code := graphConfig(ctx, "login", args, env)
	if code >= 0 {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(env.Stderr, "presence-bridge login: unexpected argument %q\nusage: presence-bridge login [-config FILE]\n", rest[0])
		return ExitUsage
	}
	a, err := graphsource.SignIn(ctx, graphsource.SignInOptions{Config: cfg.Graph, HTTPClient: env.HTTPClient}, func(dc graphsource.DeviceCode) {
		fmt.Fprintf(env.Stdout, "To sign in, open %s and enter the code %s\n(the code works until %s). Waiting...\n",
			dc.URL, dc.Code, dc.ExpiresAt.Local().Format("15:04"))
	})
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge login: %v\n", err)
		return ExitFailure
	}
	saved, err := store.Put(a)
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-bridge login: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintf(env.Stdout, "Signed in as %s (%s); stored in %s.\n", saved.UPN, strings.Join(saved.Scopes, " "), store.Dir())
	covers := graphsource.Covers(saved, cfg.Users)
	switch {
	case saved.ReadsAll():
		fmt.Fprintf(env.Stdout, "It reads the presence of every configured user Microsoft Graph answers for in its organisation: %s.\n", names(covers))
	case len(covers) > 0:
		fmt.Fprintf(env.Stdout, "It reads its own presence: %s.\n", names(covers))
	default:
		fmt.Fprintf(env.Stdout, "It covers none of the configured users: add this person to users (id %s), or sign in with Presence.Read.All.\n", saved.ObjectID)
	}
	accounts, _ := store.List()
	if left := uncovered(accounts, cfg.Users); len(left) > 0 {
		fmt.Fprintf(env.Stdout, "Not covered by any sign-in yet: %s (each needs their own sign-in, or one with Presence.Read.All).\n", names(left))
	}
	fmt.Fprintln(env.Stdout, "A running presence-bridge picks the sign-in up within one poll interval.")
	return ExitOK
}

// runAccounts is `presence-bridge accounts` and `accounts remove <upn>`.
// Both read and write the store beside a running daemon safely (see
// graphsource.Store).
func runAccounts(ctx context.Context, args []string, env Env) int {
	remove := len(args) > 0 && args[0] == "remove"
	if remove {
		args = args[1:]
	}
	cfg, store, rest, code := graphConfig(ctx, "accounts", args, env)
	if code >= 0 {
		return code
	}
	if !remove && len(rest) > 0 && rest[0] == "remove" {
		remove, rest = true, rest[1:]
	}
	if remove {
		if len(rest) != 1 {
			fmt.Fprintln(env.Stderr, "usage: presence-bridge accounts remove [-config FILE] <upn>")
			return ExitUsage
		}
		a, err := store.Remove(rest[0])
		if errors.Is(err, graphsource.ErrNotFound) {
			fmt.Fprintf(env.Stderr, "presence-bridge accounts remove: no signed-in account %q (presence-bridge accounts lists them)\n", rest[0])
			return ExitFailure
		}
		if err != nil {
			fmt.Fprintf(env.Stderr, "presence-bridge accounts remove: %v\n", err)
			return ExitFailure
		}
		fmt.Fprintf(env.Stdout, "Removed %s. A running presence-bridge stops using it within one poll interval.\n", a.UPN)
		return ExitOK
	}
	if len(rest) > 0 {
		fmt.Fprintf(env.Stderr, "presence-bridge accounts: unexpected argument %q\nusage: presence-bridge accounts [-config FILE] | accounts remove [-config FILE] <upn>\n", rest[0])
		return ExitUsage
	}
	accounts, errs := store.List()
	for _, err := range errs {
		fmt.Fprintf(env.Stderr, "presence-bridge accounts: %v\n", err)
	}
	if len(accounts) == 0 {
		fmt.Fprintf(env.Stdout, "No signed-in accounts in %s: run presence-bridge login, or press Sign in in Home Assistant.\n", store.Dir())
		return ExitOK
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPN\tSCOPES\tUSERS COVERED\tTOKEN")
	for _, a := range accounts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.UPN, strings.Join(a.Scopes, " "), names(graphsource.Covers(a, cfg.Users)), tokenState(a, cfg.Graph.ClientID))
	}
	_ = tw.Flush()
	if left := uncovered(accounts, cfg.Users); len(left) > 0 {
		fmt.Fprintf(env.Stdout, "Not covered by any sign-in: %s.\n", names(left))
	}
	if len(errs) > 0 {
		return ExitFailure
	}
	return ExitOK
}

// tokenState says whether an account's tokens work, without any secret.
func tokenState(a graphsource.Account, clientID string) string {
	if a.State == graphsource.StateSignInRequired {
		return "signin_required since " + a.StateSince.UTC().Format(time.RFC3339) + ": " + a.Reason
	}
	if a.ClientID != clientID {
		return "signin_required: signed in to another app registration"
	}
	st, err := graphsource.ReadTokenState(a.Cache)
	switch {
	case err != nil:
		return "unreadable token cache"
	case !st.Refresh:
		return "no refresh token: sign in again"
	case st.AccessUntil.After(time.Now()):
		return "active (access token until " + st.AccessUntil.UTC().Format(time.RFC3339) + ")"
	}
	return "active (refreshed on next use)"
}

// uncovered lists the users no active account covers.
func uncovered(accounts []graphsource.Account, users []config.User) []config.User {
	covered := map[string]bool{}
	for _, a := range accounts {
		if a.State != graphsource.StateActive {
			continue
		}
		for _, u := range graphsource.Covers(a, users) {
			covered[string(u.ID)] = true
		}
	}
	var out []config.User
	for _, u := range users {
		if !covered[string(u.ID)] {
			out = append(out, u)
		}
	}
	return out
}

func names(users []config.User) string {
	if len(users) == 0 {
		return "-"
	}
	n := make([]string, len(users))
	for i, u := range users {
		n[i] = u.Name
	}
	return strings.Join(n, ", ")
}
