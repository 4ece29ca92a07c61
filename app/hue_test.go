package app

import (
	"net"
	"strings"
	"testing"

	"github.com/presence-bridge/presence-bridge/hue/huetest"
)

func TestHueCommands(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef01234567"
	fake := huetest.Start(t, huetest.Options{
		Username: key,
		Groups: []huetest.Group{
			{ID: "1", Name: "Office", Type: "Room", Lights: []string{"1", "2"}},
			{ID: "11", Name: "Desk\x1b[2J", Type: "Zone"},
			{ID: "2", Name: "Kitchen", Type: "Room", Lights: []string{"3"}},
		},
	})
	pressed := huetest.Start(t, huetest.Options{LinkButtonPressed: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name       string
		vars       map[string]string
		args       []string
		want       int
		wantStdout []string
		wantStderr string
	}{
		{name: "groups", args: []string{"groups", "-host", fake.Host(), "-username", key}, want: ExitOK,
			wantStdout: []string{"ID  NAME", "1   Office", "2   Kitchen   Room  3", "11  Desk?[2J  Zone  -"}},
		{name: "groups with http:// host and key from the environment", vars: map[string]string{"HUE_USERNAME": key},
			args: []string{"groups", "-host", "http://" + fake.Host()}, want: ExitOK, wantStdout: []string{"Office"}},
		{name: "groups with a rejected key", args: []string{"groups", "-host", fake.Host(), "-username", "wrong"}, want: ExitFailure,
			wantStderr: "presence-bridge hue pair -host"},
		{name: "groups unreachable", args: []string{"groups", "-host", dead, "-username", key}, want: ExitFailure, wantStderr: "connection refused"},
		{name: "groups without key", args: []string{"groups", "-host", fake.Host()}, want: ExitUsage, wantStderr: "-username"},
		{name: "groups without host", args: []string{"groups", "-username", key}, want: ExitUsage, wantStderr: "-host is required"},
		{name: "groups with https host", args: []string{"groups", "-host", "https://hue.local", "-username", key}, want: ExitUsage, wantStderr: "plain http"},
		{name: "pair", args: []string{"pair", "-host", pressed.Host()}, want: ExitOK, wantStderr: "Paired"},
		{name: "pair times out", args: []string{"pair", "-host", fake.Host(), "-timeout", "300ms"}, want: ExitFailure,
			wantStderr: "Press the round link button"},
		{name: "pair unreachable", args: []string{"pair", "-host", dead, "-timeout", "5s"}, want: ExitFailure, wantStderr: "connection refused"},
		{name: "pair without host", args: []string{"pair"}, want: ExitUsage, wantStderr: "-host is required"},
		{name: "pair with a bad timeout", args: []string{"pair", "-host", fake.Host(), "-timeout", "0s"}, want: ExitUsage},
		{name: "pair with an unknown flag", args: []string{"pair", "-bogus"}, want: ExitUsage, wantStderr: "usage"},
		{name: "extra argument", args: []string{"groups", "-host", fake.Host(), "-username", key, "more"}, want: ExitUsage},
		{name: "no subcommand", args: nil, want: ExitUsage, wantStderr: "usage"},
		{name: "unknown subcommand", args: []string{"lights"}, want: ExitUsage, wantStderr: `unknown command "lights"`},
		{name: "help", args: []string{"pair", "-h"}, want: ExitOK, wantStderr: "-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, tt.vars, append([]string{"hue"}, tt.args...)...)
			if code != tt.want {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.want, out, errOut)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errOut, tt.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantStderr, errOut)
			}
			if tt.name != "pair" && strings.Contains(errOut, key) {
				t.Errorf("stderr shows the key:\n%s", errOut)
			}
		})
	}
}

// The key printed by `hue pair` is one the bridge accepts.
func TestHuePairPrintsAWorkingKey(t *testing.T) {
	fake := huetest.Start(t, huetest.Options{LinkButtonPressed: true})
	code, out, errOut := cli(t, nil, "hue", "pair", "-host", fake.Host())
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	key := strings.TrimSpace(out)
	if key == "" || strings.Contains(out, " ") {
		t.Fatalf("stdout %q is not just the key", out)
	}
	code, out, errOut = cli(t, nil, "hue", "groups", "-host", fake.Host(), "-username", key)
	if code != ExitOK || !strings.Contains(out, "Office") {
		t.Errorf("the new key does not list groups: exit %d\n%s%s", code, out, errOut)
	}
}
