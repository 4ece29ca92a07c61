package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/boltstore"
	"github.com/presence-bridge/presence-bridge/poller/config"
	"github.com/presence-bridge/presence-bridge/poller/server"
	"github.com/presence-bridge/presence-bridge/presence"
)

// configFlag registers -config and returns a loader for the file it names;
// the loader prints the configuration's problems and says whether it
// loaded.
func configFlag(fs *flag.FlagSet, env Env) func() (*config.Config, string, bool) {
	path := fs.String("config", "", "configuration file (default $"+ConfigEnv+" or "+DefaultConfigPath+")")
	return func() (*config.Config, string, bool) {
		p := or(*path, or(env.getenv(ConfigEnv), DefaultConfigPath))
		cfg, err := config.Load(p, env.LookupEnv)
		if err != nil {
			fmt.Fprintf(env.Stderr, "presence-poller: the configuration has problems:\n%s\n", indent(err.Error()))
			return nil, p, false
		}
		return cfg, p, true
	}
}

func runCheckConfig(args []string, env Env) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	load := configFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	cfg, path, ok := load()
	if !ok {
		return ExitFailure
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-poller: print configuration: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintf(env.Stdout, "# %s is valid; effective configuration, secrets redacted:\n%s", path, out)
	return ExitOK
}

// storeWait is how long accounts waits for the store before asking the
// running serve instead.
const storeWait = 300 * time.Millisecond

func runAccounts(ctx context.Context, args []string, env Env) int {
	if len(args) > 0 && args[0] == "add" {
		return runAccountsAdd(ctx, args[1:], env)
	}
	remove := len(args) > 0 && args[0] == "remove"
	if remove {
		args = args[1:]
	}
	fs := flag.NewFlagSet("accounts", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	load := configFlag(fs, env)
	asJSON := fs.Bool("json", false, "print a JSON array")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	var target presence.UserID
	if remove {
		if fs.NArg() != 1 {
			fmt.Fprintln(env.Stderr, "usage: presence-poller accounts remove [-config FILE] <objectId>")
			return ExitUsage
		}
		id, err := presence.ParseUserID(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(env.Stderr, "presence-poller: %v (give the person's object id)\n", err)
			return ExitUsage
		}
		target = id
	} else if fs.NArg() != 0 {
		fmt.Fprintf(env.Stderr, "presence-poller: unexpected %q\n", fs.Arg(0))
		return ExitUsage
	}
	cfg, _, ok := load()
	if !ok {
		return ExitUsage
	}
	var list []poller.AccountView
	store, err := openStore(cfg, storeWait)
	switch {
	case errors.Is(err, boltstore.ErrLocked):
		// serve holds the store: go through its API.
		list, err = viaAPI(ctx, cfg, target, remove)
	case err != nil:
	default:
		if remove {
			err = store.DeleteAccount(ctx, target)
		} else {
			list, err = poller.ListAccounts(ctx, store)
		}
		store.Close()
	}
	if errors.Is(err, poller.ErrNotFound) {
		fmt.Fprintf(env.Stderr, "presence-poller: no person %s\n", target)
		return ExitFailure
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-poller: accounts: %v\n", err)
		return ExitFailure
	}
	if remove {
		fmt.Fprintf(env.Stdout, "removed %s (their topic is left in place)\n", target)
		return ExitOK
	}
	if *asJSON {
		if list == nil {
			list = []poller.AccountView{}
		}
		b, _ := json.MarshalIndent(list, "", "  ")
		fmt.Fprintf(env.Stdout, "%s\n", b)
		return ExitOK
	}
	printAccounts(env.Stdout, list)
	return ExitOK
}

func printAccounts(w io.Writer, list []poller.AccountView) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, a := range list {
		last := "-"
		if a.LastChange != nil {
			last = a.LastChange.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ObjectID, a.TenantID, a.UPN, a.State, or(a.Availability, "-"), last, or(a.Notifications, "-"))
	}
	tw.Flush()
}

// viaAPI lists or removes through the running serve's API: the address is
// the configuration's listen (a wildcard host is reached on loopback), the
// key its api_key.
func viaAPI(ctx context.Context, cfg *config.Config, id presence.UserID, remove bool) ([]poller.AccountView, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	path := "/api/accounts"
	method := http.MethodGet
	if remove {
		path += "/" + string(id)
		method = http.MethodDelete
	}
	resp, err := apiRequest(ctx, cfg, method, path, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		if remove {
			return nil, poller.ErrNotFound
		}
		return nil, errors.New("the running serve has no API (is api_key set in its configuration?)")
	case http.StatusUnauthorized:
		return nil, errors.New("the running serve refused api_key: is it the same configuration?")
	default:
		return nil, fmt.Errorf("the running serve answered HTTP %d", resp.StatusCode)
	}
	if remove {
		return nil, nil
	}
	var list []poller.AccountView
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&list); err != nil {
		return nil, fmt.Errorf("the running serve's answer: %w", err)
	}
	return list, nil
}

// apiRequest calls the running serve's API: the address is the
// configuration's listen (a wildcard host is reached on loopback), the key
// its api_key.
func apiRequest(ctx context.Context, cfg *config.Config, method, path string, body io.Reader) (*http.Response, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("the store is held by a running serve, and api_key is empty: set api_key (the API is how accounts reaches a running serve) or stop serve")
	}
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+net.JoinHostPort(host, port)+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+cfg.APIKey.Value())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the store is held by a running serve, which does not answer at %s: %w", net.JoinHostPort(host, port), unwrapURL(err))
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && !strings.Contains(err.Error(), "Bearer") {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

func runAccountsAdd(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("accounts add", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	load := configFlag(fs, env)
	tenant := fs.String("tenant", "", "the person's tenant id (one of entra.app_only_tenants)")
	name := fs.String("name", "", "the bridge's name for them (default person-<first 8 of the id>)")
	// Flags may come after the object id too.
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return ExitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) != 1 || *tenant == "" {
		fmt.Fprintln(env.Stderr, "usage: presence-poller accounts add [-config FILE] -tenant T [-name N] <objectId>")
		return ExitUsage
	}
	id, err := presence.ParseUserID(rest[0])
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-poller: %v (give the person's object id)\n", err)
		return ExitUsage
	}
	cfg, _, ok := load()
	if !ok {
		return ExitUsage
	}
	req := server.AddRequest{ObjectID: id, TenantID: *tenant, Name: *name}
	logger := newLogger(env.Stderr, "warn")
	var res server.AddResult
	d, err := NewDaemon(DaemonOptions{Config: cfg, Logger: logger, HTTPClient: env.HTTPClient})
	switch {
	case errors.Is(err, boltstore.ErrLocked):
		res, err = addViaAPI(ctx, cfg, req)
	case err != nil:
	default:
		res, err = d.Handler.AddAccount(ctx, req)
		d.Close()
	}
	if errors.Is(err, server.ErrCannotAdd) {
		fmt.Fprintf(env.Stderr, "presence-poller: %v\n", err)
		return ExitUsage
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-poller: accounts add: %v\n", err)
		return ExitFailure
	}
	a := res.Account
	fmt.Fprintf(env.Stdout, "added %s (%s) of tenant %s: topic %s in %s", a.UserID, a.Name, a.TenantID, a.Topic, a.Namespace)
	if res.Published {
		fmt.Fprint(env.Stdout, "; their current presence is published")
	}
	fmt.Fprintln(env.Stdout)
	if res.Manual != "" {
		fmt.Fprintf(env.Stdout, "\nThe namespace's key may not manage entities: %s\n", res.Manual)
	}
	fmt.Fprintf(env.Stdout, "\n# For presence-bridge.yaml (or the add-on's options), under users:\n%s", res.UsersEntry)
	if strings.Contains(res.UsersEntry, "connection_string") {
		fmt.Fprintln(env.Stdout, "# The connection string is a key that reads this topic; it is shown only now. Adding the person again makes a new one.")
	}
	return ExitOK
}

// addViaAPI adds through the running serve's API.
func addViaAPI(ctx context.Context, cfg *config.Config, req server.AddRequest) (server.AddResult, error) {
	var out server.AddResult
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	body, _ := json.Marshal(req)
	resp, err := apiRequest(ctx, cfg, http.MethodPost, "/api/accounts", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
			return out, fmt.Errorf("the running serve's answer: %w", err)
		}
		return out, nil
	case http.StatusBadRequest:
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		return out, fmt.Errorf("%w: %s", server.ErrCannotAdd, strings.TrimPrefix(e.Error, server.ErrCannotAdd.Error()+": "))
	case http.StatusUnauthorized:
		return out, errors.New("the running serve refused api_key: is it the same configuration?")
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return out, errors.New("the running serve has no API for adding (is api_key set, and is it this version?)")
	default:
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		return out, fmt.Errorf("the running serve answered HTTP %d: %s", resp.StatusCode, e.Error)
	}
}
