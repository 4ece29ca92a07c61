package notify_test

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/presence-bridge/presence-bridge/graph/graphtest"
	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// TestHandshake: the validation request is answered 200 with the
// URL-decoded token as text/plain; anything but POST is refused.
func TestHandshake(t *testing.T) {
	r := newRig(t, rigOptions{})
	token := "Validation: Testing client application reachability for subscription Request-Id: 1e1b0f3a & more?"
	resp, err := http.Post(r.srv.URL+"/notifications?validationToken="+url.QueryEscape(token), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != token || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("handshake: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, err = http.Get(r.srv.URL + "/notifications?validationToken=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

// TestSubscribeThenNotify: a pass of the manager subscribes everyone (the
// fake validated the webhook first); a change in the fake Graph is pushed,
// decrypted, recorded and published with Graph's sequence number, without
// a Graph read; the person counts as covered.
func TestSubscribeThenNotify(t *testing.T) {
	alex, sam := person(1), person(2)
	r := newRig(t, rigOptions{people: []presence.UserID{alex, sam}})
	if s := r.tick(t); s.Created != 2 || s.Failed != 0 {
		t.Fatalf("first pass %+v", s)
	}
	sub, ok := r.graph.SubscriptionOf(alex)
	if !ok || sub.Resource != "communications/presences/"+string(alex) || !sub.IncludeData || sub.NotificationURL != r.srv.URL+"/notifications" || sub.LifecycleURL != sub.NotificationURL {
		t.Fatalf("fake has %+v", sub)
	}
	rec := r.subscription(t, alex)
	if rec.ID != sub.ID || !rec.Healthy(sub.ExpiresAt.Add(-1)) || rec.CertificateID != sub.CertificateID || len(sub.ClientState) < 32 || len(sub.ClientState) > 128 {
		t.Fatalf("record %+v for %+v", rec, sub)
	}
	if strings.Contains(mustJSON(t, rec), sub.ClientState) {
		t.Error("the clientState is stored in the clear")
	}
	if covered, _ := r.manager.Covered(t.Context()); !covered[alex] || !covered[sam] {
		t.Errorf("covered %v", covered)
	}
	if s := r.tick(t); s.Created+s.Renewed != 0 || s.Healthy != 2 {
		t.Errorf("second pass %+v: nothing to do", s)
	}
	reads := r.graph.Requests(tenantA)
	r.graph.SetPresence(alex, graphtest.Presence{Availability: "Busy", Activity: "InACall"})
	u := r.pub.next(t)
	if u.UserID != alex || u.Availability != presence.AvailabilityBusy || u.Activity != presence.ActivityInACall || u.Sequence == "" {
		t.Fatalf("published %+v", u)
	}
	if n := r.graph.Requests(tenantA) - reads; n != 0 {
		t.Errorf("the notified change made %d Graph requests", n)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := jsonMarshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestForgedNotificationsChangeNothing: a wrong clientState, an unknown
// subscription, a certificate id the ring does not know, tampered data or
// signature, data about someone else, and a forged validation token are
// each answered 202 and change nothing; a body that is not a notification
// collection is 400; none is ever 5xx, and each kind is logged once per
// source.
func TestForgedNotificationsChangeNothing(t *testing.T) {
	alex, sam := person(1), person(2)
	r := newRig(t, rigOptions{people: []presence.UserID{alex, sam}})
	r.tick(t)
	r.graph.Hold()
	r.graph.SetPresence(alex, graphtest.Presence{Availability: "Busy", Activity: "InACall"})
	genuine := captureHeld(t, r)
	item := genuine["value"].([]any)[0].(map[string]any)
	key, err := r.keys.Current(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	samData := encrypt(t, key, strings.ReplaceAll(presenceJSON, "6f1c2a3b-1111-2222-3333-444455556666", string(sam)))
	withItem := func(change func(map[string]any)) map[string]any {
		it := cloneMap(item)
		change(it)
		return map[string]any{"value": []any{it}, "validationTokens": genuine["validationTokens"]}
	}
	enc := func(it map[string]any) map[string]any { return it["encryptedContent"].(map[string]any) }
	flip := func(s string) string {
		b := []byte(s)
		if b[10] == 'A' {
			b[10] = 'B'
		} else {
			b[10] = 'A'
		}
		return string(b)
	}
	cases := map[string]map[string]any{
		"wrong clientState":      withItem(func(it map[string]any) { it["clientState"] = "guessed" }),
		"no clientState":         withItem(func(it map[string]any) { delete(it, "clientState") }),
		"unknown subscription":   withItem(func(it map[string]any) { it["subscriptionId"] = "11111111-2222-3333-4444-555555555555" }),
		"unknown certificate id": withItem(func(it map[string]any) { enc(it)["encryptionCertificateId"] = "presence-poller-forged" }),
		"tampered data":          withItem(func(it map[string]any) { enc(it)["data"] = flip(enc(it)["data"].(string)) }),
		"tampered signature":     withItem(func(it map[string]any) { enc(it)["dataSignature"] = flip(enc(it)["dataSignature"].(string)) }),
		"tampered key":           withItem(func(it map[string]any) { enc(it)["dataKey"] = flip(enc(it)["dataKey"].(string)) }),
		"data about someone else": withItem(func(it map[string]any) {
			it["encryptedContent"] = map[string]any{"data": samData.Data, "dataSignature": samData.DataSignature, "dataKey": samData.DataKey, "encryptionCertificateId": key.ID}
		}),
		"forged validation token": {"value": []any{item}, "validationTokens": []any{r.entra.SignToken(map[string]any{"aud": clientID, "appid": "11111111-0000-0000-0000-000000000000", "tid": tenantA, "exp": 1 << 40, "iss": "https://sts.windows.net/" + tenantA + "/"})}},
		"token of another tenant": {"value": []any{item}, "validationTokens": []any{r.entra.ChangeNotificationToken("72f988bf-0000-0000-0000-00000000000b")}},
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			for range 2 {
				if code := r.post(t, body); code != http.StatusAccepted {
					t.Fatalf("answered %d, want 202", code)
				}
			}
		})
	}
	for _, body := range []string{`{`, `{"value":[]}`, `[]`, strings.Repeat(" ", 5<<20)} {
		resp, err := http.Post(r.srv.URL+"/notifications", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%.10q: %d, want 400", body, resp.StatusCode)
		}
	}
	r.settle()
	if rec, _, _ := r.store.Presence(t.Context(), alex); rec.Last.Availability == presence.AvailabilityBusy || len(r.pub.messages()) != 0 {
		t.Fatalf("a forged notification changed something: %+v, %d published", rec.Last, len(r.pub.messages()))
	}
	refusals := strings.Count(r.logs.String(), `msg="notification refused`) + strings.Count(r.logs.String(), `msg="received notification dropped`)
	if refusals == 0 || refusals > len(cases)+4 {
		t.Errorf("%d refusals logged for %d kinds sent twice each, want each logged once", refusals, len(cases)+4)
	}
	// The genuine one still goes through afterwards.
	if code := r.post(t, genuine); code != http.StatusAccepted {
		t.Fatalf("genuine: %d", code)
	}
	if u := r.pub.next(t); u.Availability != presence.AvailabilityBusy {
		t.Fatalf("published %+v", u)
	}
}

func cloneMap(m map[string]any) map[string]any {
	b, _ := jsonMarshal(m)
	var out map[string]any
	_ = jsonUnmarshal(b, &out)
	return out
}

// captureHeld releases what the fake held into a recording server and
// returns the one request body.
func captureHeld(t *testing.T, r *rig) map[string]any {
	t.Helper()
	got := make(chan []byte, 16)
	r.srvDivert(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		got <- b
		w.WriteHeader(http.StatusAccepted)
	}))
	r.graph.ReleaseHeld(t.Context(), graphtest.Release{OneBatch: true})
	r.srvDivert(nil)
	var body map[string]any
	if err := jsonUnmarshal(<-got, &body); err != nil {
		t.Fatal(err)
	}
	return body
}

// TestDuplicatesAndReordering: the fake delivers a person's three changes
// newest first, each twice, as separate requests and then as one batch:
// no presence is published twice or after a newer one, the newest is
// published last; in a batch the changes go out in Graph's order (by
// sequence number).
func TestDuplicatesAndReordering(t *testing.T) {
	alex := person(1)
	for _, oneBatch := range []bool{false, true} {
		name := map[bool]string{false: "separate requests", true: "one batch"}[oneBatch]
		t.Run(name, func(t *testing.T) {
			r := newRig(t, rigOptions{people: []presence.UserID{alex}})
			r.tick(t)
			r.graph.Hold()
			for _, p := range []string{"Busy", "Away", "DoNotDisturb"} {
				r.graph.SetPresence(alex, graphtest.Presence{Availability: p, Activity: p})
			}
			r.graph.ReleaseHeld(t.Context(), graphtest.Release{Reverse: true, Duplicate: true, OneBatch: oneBatch})
			r.settle()
			var got []string
			var last string
			for _, m := range r.pub.messages() {
				u, _ := presence.Decode(m.Body, presence.Meta{})
				if last != "" && presence.Compare(presence.Update{Sequence: last}, presence.Update{Sequence: u.Sequence}) <= 0 {
					t.Fatalf("%s (sequence %s) published after sequence %s", u.Availability, u.Sequence, last)
				}
				last = u.Sequence
				got = append(got, u.Availability.String())
			}
			// One at a time, what is opened together goes out in order and a
			// late older one is dropped: any increasing run ending on the
			// newest. In one batch, all three are opened together.
			if len(got) == 0 || got[len(got)-1] != "DoNotDisturb" || oneBatch && !slices.Equal(got, []string{"Busy", "Away", "DoNotDisturb"}) {
				t.Fatalf("published %v", got)
			}
			for _, d := range r.graph.Deliveries() {
				if d.Status != http.StatusAccepted {
					t.Errorf("a delivery was answered %d", d.Status)
				}
			}
		})
	}
}

// TestReauthorization: reauthorizationRequired reaches the webhook, which
// marks the subscription; the next pass renews it with the person's fresh
// token, which resumes the notifications the fake had paused.
func TestReauthorization(t *testing.T) {
	alex := person(1)
	r := newRig(t, rigOptions{people: []presence.UserID{alex}})
	r.tick(t)
	sub, _ := r.graph.SubscriptionOf(alex)
	if err := r.graph.RequireReauthorization(t.Context(), sub.ID); err != nil {
		t.Fatal(err)
	}
	if rec := r.subscription(t, alex); !rec.Reauthorize {
		t.Fatalf("record not marked: %+v", rec)
	}
	r.graph.SetPresence(alex, graphtest.Presence{Availability: "Away", Activity: "Away"})
	if r.graph.Dropped() != 1 {
		t.Fatalf("the fake dropped %d notifications while paused", r.graph.Dropped())
	}
	renews := r.graph.Writes("renew")
	if s := r.tick(t); s.Renewed != 1 {
		t.Fatalf("pass after reauthorizationRequired: %+v", s)
	}
	if r.graph.Writes("renew") != renews+1 {
		t.Error("no renewal reached Graph")
	}
	if got, _ := r.graph.SubscriptionOf(alex); got.Paused || got.ID != sub.ID {
		t.Fatalf("after reauthorization: %+v", got)
	}
	if rec := r.subscription(t, alex); rec.Reauthorize || !rec.Healthy(rec.ExpiresAt.Add(-1)) {
		t.Fatalf("record %+v", rec)
	}
	r.graph.SetPresence(alex, graphtest.Presence{Availability: "Busy", Activity: "Busy"})
	if u := r.pub.next(t); u.Availability != presence.AvailabilityBusy {
		t.Fatalf("published %+v", u)
	}
}

// TestFallbackToPollingWhenHandshakeFails: when Graph cannot validate the
// webhook, the person gets no subscription, the reason is kept for the
// accounts listing, they are not covered (so the cycle reads them every
// poll interval); once the webhook answers again a retry subscribes them.
func TestFallbackToPollingWhenHandshakeFails(t *testing.T) {
	alex := person(1)
	r := newRig(t, rigOptions{people: []presence.UserID{alex}})
	r.breakHandshake <- true
	if s := r.tick(t); s.Failed != 1 || s.Created != 0 {
		t.Fatalf("pass %+v", s)
	}
	rec := r.subscription(t, alex)
	if rec.ID != "" || !strings.Contains(rec.Failure, "could not validate") || rec.RetryAt.IsZero() {
		t.Fatalf("record %+v", rec)
	}
	if covered, _ := r.manager.Covered(t.Context()); covered[alex] {
		t.Fatal("a person without a subscription counts as covered")
	}
	list, err := poller.ListAccounts(t.Context(), r.store)
	if err != nil || len(list) != 1 || !strings.Contains(list[0].Notifications, "could not validate") {
		t.Fatalf("accounts listing %+v %v", list, err)
	}
	eng := poller.New(poller.Options{Store: r.store, Reader: readerOf(r), Publisher: r.pub, Tokens: r.tok, Covered: r.manager.Covered})
	if s, err := eng.Cycle(t.Context()); err != nil || s.Read != 1 || s.Covered != 0 {
		t.Fatalf("cycle %+v %v: the person must be read", s, err)
	}
	if s := r.tick(t); s.Created != 0 {
		t.Fatal("retried before the back-off")
	}
	r.breakHandshake <- false
	r.manager.Retry(t.Context(), alex)
	if s := r.tick(t); s.Created != 1 {
		t.Fatalf("retry %+v", s)
	}
	if rec := r.subscription(t, alex); rec.Failure != "" || rec.ID == "" {
		t.Fatalf("after the retry %+v", rec)
	}
	if list, _ := poller.ListAccounts(t.Context(), r.store); !strings.HasPrefix(list[0].Notifications, "subscribed") {
		t.Fatalf("accounts listing %+v", list)
	}
}

// TestRemoveDeletesAtGraph: removing a person deletes their subscription
// at Graph first.
func TestRemoveDeletesAtGraph(t *testing.T) {
	alex := person(1)
	r := newRig(t, rigOptions{people: []presence.UserID{alex}})
	r.tick(t)
	if err := r.manager.Remove(t.Context(), r.account(t, alex)); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.graph.SubscriptionOf(alex); ok {
		t.Fatal("the subscription survived its person")
	}
}
