package app

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

const (
	sbKey    = "c2VydmljZS1idXMta2V5LXNlY3JldA"
	mqttPass = "mqtt-password-secret"
)

// cli runs a command in-process and returns its exit code and output.
func cli(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, Env{
		Stdout: &stdout, Stderr: &stderr,
		LookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		Version:   "1.2.3", Commit: "abc1234",
	})
	return code, stdout.String(), stderr.String()
}

var secrets = map[string]string{
	"SB":            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=" + sbKey,
	"MQTT_PASSWORD": mqttPass,
}

func TestCheckConfig(t *testing.T) {
	code, out, errOut := cli(t, secrets, "check-config", "-config", "testdata/presence-bridge.yaml")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	for _, want := range []string{"is valid", "name: Alex", "password: <redacted>", "connection_string: <redacted>", "base_topic: presence-bridge", "min_interval: 1s"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, s := range []string{sbKey, mqttPass} {
		if strings.Contains(out+errOut, s) {
			t.Errorf("check-config printed a secret:\n%s%s", out, errOut)
		}
	}
}

func TestCheckConfigReportsEveryProblem(t *testing.T) {
	code, out, errOut := cli(t, secrets, "check-config", "-config", "testdata/bad.yaml")
	if code != ExitFailure {
		t.Errorf("exit %d, want %d", code, ExitFailure)
	}
	for _, want := range []string{
		`users[0].id: "not-a-guid" is not a GUID`,
		`hue.bridges[0].groups[0].users[0]: unknown user "Alx"`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if out != "" || strings.Contains(errOut, sbKey) || strings.Contains(errOut, mqttPass) {
		t.Errorf("printed a secret or a configuration:\n%s\n%s", out, errOut)
	}
}

func TestCheckConfigFromEnvironmentPath(t *testing.T) {
	vars := map[string]string{ConfigEnv: "testdata/no-sinks.yaml"}
	if code, _, errOut := cli(t, vars, "check-config"); code != ExitOK {
		t.Errorf("exit %d with %s set: %s", code, ConfigEnv, errOut)
	}
	if code, _, errOut := cli(t, nil, "check-config", "-config", "testdata/missing.yaml"); code != ExitFailure || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d, %s", code, errOut)
	}
	if code, _, errOut := cli(t, secrets, "check-config", "-config", "testdata/presence-bridge.yaml", "-bogus"); code != ExitUsage {
		t.Errorf("unknown flag: exit %d, %s", code, errOut)
	}
}

func TestRunRefusesWithoutSinksOrWithBadConfig(t *testing.T) {
	code, _, errOut := cli(t, nil, "run", "-config", "testdata/no-sinks.yaml")
	if code != ExitUsage || !strings.Contains(errOut, "nothing to drive") {
		t.Errorf("no sinks: exit %d, %s", code, errOut)
	}
	code, _, errOut = cli(t, secrets, "-config", "testdata/bad.yaml") // run is the default command
	if code != ExitUsage || !strings.Contains(errOut, "not a GUID") {
		t.Errorf("bad config: exit %d, %s", code, errOut)
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, out, _ := cli(t, nil, "version")
	if code != ExitOK || !strings.Contains(out, "presence-bridge 1.2.3 (commit abc1234, "+runtime.Version()+")") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	code, _, errOut := cli(t, nil, "frobnicate")
	if code != ExitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) || !strings.Contains(errOut, "check-config") {
		t.Errorf("unknown command: exit %d, %q", code, errOut)
	}
	if code, out, _ := cli(t, nil, "help"); code != ExitOK || !strings.Contains(out, "usage:") {
		t.Errorf("help: exit %d, %q", code, out)
	}
}
