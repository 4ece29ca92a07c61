package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/internal/safebuf"
	"github.com/presence-bridge/presence-bridge/poller/functions"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const tenantB = "72f988bf-0000-0000-0000-00000000000b"

// host plays the Azure Functions host against a running `functions`.
type host struct {
	t    *testing.T
	base string
}

func (h host) invoke(function string, payload []byte) (int, functions.Response) {
	h.t.Helper()
	resp, err := http.Post(h.base+"/"+function, "application/json", bytes.NewReader(payload))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out functions.Response
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		h.t.Fatalf("%s: answer is not the protocol's JSON: %v", function, err)
	}
	return resp.StatusCode, out
}

// workPayload is what the host posts for a Service Bus message with
// dataType binary.
func workPayload(m *azservicebus.ReceivedMessage) []byte {
	b, _ := json.Marshal(map[string]any{
		"Data": map[string]any{"item": base64.StdEncoding.EncodeToString(m.Body)},
		"Metadata": map[string]any{"MessageId": m.MessageID, "SessionId": *m.SessionID, "DeliveryCount": m.DeliveryCount,
			"ContentType": "application/json", "sys": map[string]any{"MethodName": functions.WorkFunction, "UtcNow": time.Now().UTC()}},
	})
	return b
}

// TestFunctionsEndToEnd runs `presence-poller functions` as the Functions
// host runs it (FUNCTIONS_CUSTOMHANDLER_PORT), on Table Storage (Azurite),
// with a work queue (the stand-in's session queue): the readiness ping; a
// sign-in through the proxied HTTP functions; two people of an app-only
// tenant added without a sign-in; the timer enqueues one work item per
// tenant (session = tenant); each item, delivered as the host delivers it,
// publishes its people's presence (one batch read for the app-only
// tenant); an item whose Graph read fails answers 500 and its redelivery
// succeeds.
func TestFunctionsEndToEnd(t *testing.T) {
	signer := person(1, "Alex")
	b1 := entratest.Person{ObjectID: "0b000001-0000-4000-8000-000000000001", TenantID: tenantB}
	b2 := entratest.Person{ObjectID: "0b000002-0000-4000-8000-000000000002", TenantID: tenantB}
	r := newRig(t, rigOptions{people: []entratest.Person{signer}, broker: true, tables: true, workQueue: "presence-work", appOnly: []string{tenantB}})
	r.graph.SetPresence(signer.ObjectID, graphtest.Presence{Availability: "Busy", Activity: "InACall"})
	r.graph.SetPresence(b1.ObjectID, graphtest.Presence{Availability: "Away", Activity: "Away"})
	r.graph.SetPresence(b2.ObjectID, graphtest.Presence{Availability: "Available", Activity: "Available"})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "presence-poller.yaml")
	writeFile(t, cfgPath, r.yaml)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	env := map[string]string{PortEnv: port}
	for k, v := range r.env {
		env[k] = v
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	// Two people of the app-only tenant, added before the app starts.
	for i, p := range []entratest.Person{b1, b2} {
		code, out, errOut := runTrusting(t, ctx, r.entra.Client(), env, "accounts", "add", "-config", cfgPath, "-tenant", tenantB, "-name", fmt.Sprintf("Office %d", i), string(p.ObjectID))
		if code != ExitOK || !strings.Contains(out, "connection_string: Endpoint=sb://") || !strings.Contains(out, "name: Office") {
			t.Fatalf("accounts add: %d %q %s", code, out, errOut)
		}
	}

	ready := make(chan string, 1)
	done := make(chan int, 1)
	logs := &safebuf.Buffer{}
	runCtx, stop := context.WithCancel(ctx)
	go func() {
		done <- Run(runCtx, []string{"functions", "-config", cfgPath}, Env{Stdout: logs, Stderr: logs, HTTPClient: r.entra.Client(),
			LookupEnv: lookup, Ready: func(a string) { ready <- a }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case code := <-done:
		t.Fatalf("functions exited %d:\n%s", code, logs.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("functions logs:\n%s", logs.String())
		}
	})
	if addr != "127.0.0.1:"+port {
		t.Errorf("listens on %s, want 127.0.0.1:%s", addr, port)
	}
	h := host{t: t, base: "http://" + addr}
	if resp, err := http.Get(h.base + "/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readiness ping: %v %v", resp, err)
	}

	// A sign-in through the proxied HTTP functions.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(h.base + "/auth/start")
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("/auth/start: %v %v", resp, err)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		cookie = c
	}
	_, form, err := r.entra.SignInURL(resp.Header.Get("Location"), signer.ObjectID)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/auth/end", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "id: "+string(signer.ObjectID)) {
		t.Fatalf("/auth/end: %d\n%s", resp.StatusCode, page)
	}
	// The presence published at sign-in and at accounts add.
	for _, p := range []presence.UserID{signer.ObjectID, b1.ObjectID, b2.ObjectID} {
		drain(t, ctx, r.sb, string(p), 1)
	}

	// The timer only enqueues: one item per tenant.
	timer, _ := os.ReadFile("../functions/testdata/timer.json")
	status, out := h.invoke(functions.TimerFunction, timer)
	if rv, _ := json.Marshal(out.ReturnValue); status != http.StatusOK || string(rv) != `{"workItems":2}` {
		t.Fatalf("timer: %d %s %q", status, rv, out.Logs)
	}
	batchesBefore := r.graph.Batches(tenantB)
	r.graph.SetPresence(signer.ObjectID, graphtest.Presence{Availability: "Available", Activity: "Available"})
	r.graph.SetPresence(b1.ObjectID, graphtest.Presence{Availability: "Busy", Activity: "InAMeeting"})
	r.graph.Throttle(tenantB, 1, http.StatusInternalServerError, 0) // Graph fails the next read
	sessions := map[string]bool{}
	for range 2 {
		sr, err := r.sb.Client().AcceptNextSessionForQueue(ctx, "presence-work", nil)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := sr.ReceiveMessages(ctx, 1, nil)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("work item: %v", err)
		}
		m := msgs[0]
		sessions[sr.SessionID()] = true
		if !strings.HasPrefix(m.MessageID, sr.SessionID()+":") {
			t.Errorf("message id %s in session %s", m.MessageID, sr.SessionID())
		}
		status, out := h.invoke(functions.WorkFunction, workPayload(m))
		if sr.SessionID() == tenantB {
			// The failed batch read fails the item: the host abandons it
			// and Service Bus delivers it again.
			if status < 300 {
				t.Fatalf("a work item whose read failed answered %d %q", status, out.Logs)
			}
			if err := sr.AbandonMessage(ctx, m, nil); err != nil {
				t.Fatal(err)
			}
			again, err := sr.ReceiveMessages(ctx, 1, nil)
			if err != nil || len(again) != 1 || again[0].MessageID != m.MessageID || again[0].DeliveryCount != 2 {
				t.Fatalf("redelivery: %v %v", again, err)
			}
			m = again[0]
			status, out = h.invoke(functions.WorkFunction, workPayload(m))
		}
		if status != http.StatusOK {
			t.Fatalf("work item of %s: %d %q", sr.SessionID(), status, out.Logs)
		}
		if err := sr.CompleteMessage(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
		_ = sr.Close(ctx)
	}
	if !sessions[tenantA] || !sessions[tenantB] {
		t.Errorf("sessions %v, want one per tenant", sessions)
	}
	if n := r.graph.Batches(tenantB) - batchesBefore; n != 1 {
		t.Errorf("%d batch reads for the app-only tenant's item, want 1", n)
	}
	got := drain(t, ctx, r.sb, string(b1.ObjectID), 1)
	if u, err := presence.Decode(got[0].Body, presence.Meta{}); err != nil || u.Availability != presence.AvailabilityBusy {
		t.Errorf("b1's change: %+v %v", u, err)
	}
	drain(t, ctx, r.sb, string(signer.ObjectID), 1)

	stop()
	if code := <-done; code != ExitOK {
		t.Errorf("functions exit %d", code)
	}
	r.noSecrets(t, "the logs", logs.String())
}

// runTrusting is run with an HTTP client that trusts the fakes.
func runTrusting(t *testing.T, ctx context.Context, hc *http.Client, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(ctx, args, Env{Stdout: &stdout, Stderr: &stderr, HTTPClient: hc,
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	return code, stdout.String(), stderr.String()
}

// drain takes n messages from the person's home subscription.
func drain(t *testing.T, ctx context.Context, b *sbtest.Broker, topic string, n int) []*azservicebus.ReceivedMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	got, err := sbtest.Drain(ctx, b.Client(), topic+"/Subscriptions/home", 0, n)
	if err != nil {
		t.Fatalf("%s: %d of %d messages: %v", topic, len(got), n, err)
	}
	return got
}

// TestAccountsAdd: a person of an app-only tenant is added without a
// sign-in (topic, subscription, Listen key, the users entry, the current
// presence published with the app's token), directly and beside a running
// serve through its API; a tenant not in app_only_tenants is refused.
func TestAccountsAdd(t *testing.T) {
	r := newRig(t, rigOptions{broker: true, appOnly: []string{tenantB}})
	ids := []presence.UserID{"0b000003-0000-4000-8000-000000000003", "0b000004-0000-4000-8000-000000000004"}
	for _, id := range ids {
		r.graph.SetPresence(id, graphtest.Presence{Availability: "DoNotDisturb", Activity: "Presenting"})
	}
	r.d.Store.Close()
	r.srv.Close()
	cfgPath := filepath.Join(t.TempDir(), "presence-poller.yaml")
	writeFile(t, cfgPath, strings.Replace(r.yaml, "listen: 127.0.0.1:0", "listen: "+freeAddr(t), 1))
	env := r.env
	if code, _, errOut := runTrusting(t, t.Context(), r.entra.Client(), env, "accounts", "add", "-config", cfgPath, "-tenant", tenantA, string(ids[0])); code != ExitUsage || !strings.Contains(errOut, "app_only_tenants") {
		t.Errorf("a tenant not app-only: exit %d %q", code, errOut)
	}
	code, out, errOut := runTrusting(t, t.Context(), r.entra.Client(), env, "accounts", "add", "-config", cfgPath, "-tenant", tenantB, string(ids[0]))
	if code != ExitOK || !strings.Contains(out, "id: "+string(ids[0])) || !strings.Contains(out, "name: person-0b000003") || !strings.Contains(out, "published") {
		t.Fatalf("accounts add: %d %q %s", code, out, errOut)
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
	code, out, errOut = run(t, t.Context(), env, "accounts", "add", "-config", cfgPath, "-tenant", tenantB, "-name", "Front desk", string(ids[1]))
	if code != ExitOK || !strings.Contains(out, "name: Front desk") || !strings.Contains(out, "connection_string: Endpoint=sb://") {
		t.Fatalf("accounts add beside serve: %d %q %s", code, out, errOut)
	}
	code, out, _ = run(t, t.Context(), env, "accounts", "-config", cfgPath)
	if code != ExitOK || !strings.Contains(out, string(ids[0])) || !strings.Contains(out, string(ids[1])) || !strings.Contains(out, "DoNotDisturb") {
		t.Errorf("accounts: %q", out)
	}
	cancel()
	<-done
	for _, id := range ids {
		got := drain(t, t.Context(), r.sb, string(id), 1)
		if u, err := presence.Decode(got[0].Body, presence.Meta{}); err != nil || u.Activity != presence.ActivityPresenting {
			t.Errorf("%s: %+v %v", id, u, err)
		}
		if info, ok := r.mgmt.Topic(string(id)); !ok || len(info.Rules) != 1 {
			t.Errorf("%s: topic %+v", id, info)
		}
	}
	if r.graph.Batches(tenantB) < 2 {
		t.Errorf("%d batch reads, want one per person added at least", r.graph.Batches(tenantB))
	}
	r.noSecrets(t, "serve's logs", logs.String())
}
