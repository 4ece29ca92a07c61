package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/poller"
)

func run(t *testing.T, ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(ctx, args, Env{Stdout: &stdout, Stderr: &stderr, Version: "1.2.3", Commit: "abc1234",
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	return code, stdout.String(), stderr.String()
}

func TestVersionAndUsage(t *testing.T) {
	if code, out, _ := run(t, t.Context(), nil, "version"); code != ExitOK || !strings.Contains(out, "presence-poller 1.2.3 (commit abc1234") {
		t.Errorf("version: %d %q", code, out)
	}
	for _, args := range [][]string{{}, {"bogus"}, {"functions"}, {"accounts", "add", "-tenant", "t", "x"}} {
		if code, _, _ := run(t, t.Context(), nil, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, ExitUsage)
		}
	}
	env := map[string]string{"POLLER_SECRET_KEY": secretKey, "POLLER_CLIENT_SECRET": clientSecret,
		"SB_CONNECTION_STRING": "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=" + manageKey}
	if code, _, errOut := run(t, t.Context(), env, "functions", "-config", "../config/testdata/good/minimal.yaml"); code != ExitUsage || !strings.Contains(errOut, PortEnv+" is not set") {
		t.Errorf("functions without the host's port: exit %d, %q", code, errOut)
	}
}

func TestCheckConfigRedacts(t *testing.T) {
	env := map[string]string{"POLLER_SECRET_KEY": secretKey, "POLLER_CLIENT_SECRET": clientSecret,
		"SB_CONNECTION_STRING": "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=" + manageKey}
	code, out, errOut := run(t, t.Context(), env, "check-config", "-config", "../config/testdata/good/minimal.yaml")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, s := range []string{secretKey, clientSecret, manageKey} {
		if strings.Contains(out+errOut, s) {
			t.Errorf("check-config printed a secret")
		}
	}
	if !strings.Contains(out, "secret_key: <redacted>") || strings.Contains(out, "not in this version: graph.notifications") {
		t.Errorf("output:\n%s", out)
	}
	if code, _, errOut := run(t, t.Context(), env, "check-config", "-config", "../config/testdata/bad/semantics.yaml"); code != ExitFailure || !strings.Contains(errOut, "entra.client_id:") {
		t.Errorf("bad file: exit %d\n%s", code, errOut)
	}
}

// TestAccountsBesideServe: accounts lists and removes people from the
// store directly, and through the running serve's API while serve holds
// the store.
func TestAccountsBesideServe(t *testing.T) {
	p := person(8, "Max")
	r := newRig(t, rigOptions{people: []entratest.Person{p}, broker: true})
	if status, _ := r.signIn(t, p.ObjectID); status != http.StatusOK {
		t.Fatal("sign-in failed")
	}
	r.d.Store.Close()
	r.srv.Close()

	// A configuration file whose listen is a free port serve will use.
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "presence-poller.yaml")
	yaml := strings.Replace(r.yaml, "listen: 127.0.0.1:0", "listen: "+freeAddr(t), 1)
	writeFile(t, cfgPath, yaml)
	env := r.env

	code, out, errOut := run(t, t.Context(), env, "accounts", "-config", cfgPath)
	if code != ExitOK || !strings.Contains(out, string(p.ObjectID)) || !strings.Contains(out, "active") {
		t.Fatalf("accounts without serve: %d %q %s", code, out, errOut)
	}

	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	logs := &safebuf.Buffer{}
	go func() {
		done <- Run(ctx, []string{"serve", "-config", cfgPath}, Env{Stdout: logs, Stderr: logs, HTTPClient: r.entra.Client(),
			LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }, Ready: func(a string) { ready <- a }})
	}()
	select {
	case <-ready:
	case code := <-done:
		t.Fatalf("serve exited %d:\n%s", code, logs.String())
	}
	code, out, errOut = run(t, t.Context(), env, "accounts", "-json", "-config", cfgPath)
	var list []poller.AccountView
	if code != ExitOK || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ObjectID != p.ObjectID {
		t.Fatalf("accounts -json beside serve: %d %q %s", code, out, errOut)
	}
	if code, out, errOut := run(t, t.Context(), env, "accounts", "remove", "-config", cfgPath, string(p.ObjectID)); code != ExitOK || !strings.Contains(out, "removed") {
		t.Fatalf("remove beside serve: %d %q %s", code, out, errOut)
	}
	if code, _, _ := run(t, t.Context(), env, "accounts", "remove", "-config", cfgPath, string(p.ObjectID)); code != ExitFailure {
		t.Errorf("removing an unknown person: exit %d", code)
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Errorf("serve exit %d:\n%s", code, logs.String())
	}
	r.noSecrets(t, "serve's logs", logs.String())
	_ = os.Remove(cfgPath)
}
