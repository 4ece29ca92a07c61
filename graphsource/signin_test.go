package graphsource

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/internal/entratest"
	"github.com/presence-bridge/presence-bridge/presence"
)

const (
	clientID = "7d8e9f00-1111-2222-3333-444455556666"
	tenantID = "72f988bf-0000-0000-0000-000000000000"
	alexID   = presence.UserID("6f1c2a3b-1111-2222-3333-444455556666")
	samID    = presence.UserID("0a1b2c3d-1111-2222-3333-444455556666")
	kimID    = presence.UserID("1b2c3d4e-1111-2222-3333-444455556666")
)

var (
	alex = entratest.Person{ObjectID: alexID, TenantID: tenantID, Name: "Alex", UPN: "alex@contoso.com"}
	sam  = entratest.Person{ObjectID: samID, TenantID: tenantID, Name: "Sam", UPN: "sam@contoso.com"}
	kim  = entratest.Person{ObjectID: kimID, TenantID: tenantID, Name: "Kim", UPN: "kim@contoso.com"}
)

func fakeEntra(t *testing.T, o entratest.Options) *entratest.Server {
	t.Helper()
	o.ClientID = clientID
	if o.People == nil {
		o.People = []entratest.Person{alex, sam, kim}
	}
	if o.DeviceCodeInterval == 0 {
		o.DeviceCodeInterval = 1
	}
	e := entratest.New(o)
	t.Cleanup(e.Close)
	return e
}

func graphConfig(e *entratest.Server, scopes ...string) config.Graph {
	if len(scopes) == 0 {
		scopes = []string{"Presence.Read.All"}
	}
	return config.Graph{ClientID: clientID, Tenant: "organizations", Authority: e.Authority("organizations"),
		PollInterval: config.Duration(2 * time.Second), Scopes: scopes}
}

// signIn runs SignIn in the background and returns the code it shows and
// a channel with its result.
func signIn(t *testing.T, ctx context.Context, o SignInOptions) (DeviceCode, <-chan signInResult) {
	t.Helper()
	codes := make(chan DeviceCode, 1)
	done := make(chan signInResult, 1)
	go func() {
		a, err := SignIn(ctx, o, func(dc DeviceCode) { codes <- dc })
		done <- signInResult{a, err}
	}()
	select {
	case dc := <-codes:
		return dc, done
	case r := <-done:
		t.Fatalf("sign-in ended before showing a code: %v", r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("no code shown")
	}
	return DeviceCode{}, nil
}

type signInResult struct {
	account Account
	err     error
}

func wait(t *testing.T, done <-chan signInResult) signInResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("sign-in never ended")
		return signInResult{}
	}
}

// TestSignInOutcomes covers every outcome of the device-code flow against
// the fake Entra: success after authorization_pending, slow_down (the
// interval grows), declined, expired, network errors while polling (the
// sign-in goes on), and Entra unreachable for the code itself. No poll ever
// comes sooner than the interval Entra asked for.
func TestSignInOutcomes(t *testing.T) {
	if testing.Short() {
		t.Skip("the device-code interval is a whole second: seconds per case")
	}
	t.Run("success after pending", func(t *testing.T) {
		e := fakeEntra(t, entratest.Options{})
		o := SignInOptions{Config: graphConfig(e), HTTPClient: e.Client()}
		dc, done := signIn(t, t.Context(), o)
		if dc.URL == "" || dc.Code == "" || time.Until(dc.ExpiresAt) < 10*time.Minute {
			t.Errorf("code %+v", dc)
		}
		eventually(t, "a pending poll", func() bool { return e.DevicePolls(dc.Code) >= 2 })
		if err := e.EnterCode(dc.Code, alexID); err != nil {
			t.Fatal(err)
		}
		r := wait(t, done)
		if r.err != nil {
			t.Fatal(r.err)
		}
		a := r.account
		if a.HomeAccountID != string(alexID)+"."+tenantID || a.UPN != "alex@contoso.com" || a.ObjectID != alexID || !a.ReadsAll() || a.State != StateActive {
			t.Errorf("account %+v", a)
		}
		if _, err := ParseAccount(mustJSON(t, a)); err != nil {
			t.Errorf("the new account does not parse back: %v", err)
		}
		if e.TooFastPolls() != 0 {
			t.Errorf("%d polls sooner than the interval", e.TooFastPolls())
		}
	})
	t.Run("slow_down", func(t *testing.T) {
		e := fakeEntra(t, entratest.Options{})
		o := SignInOptions{Config: graphConfig(e), HTTPClient: e.Client(), SlowDownStep: time.Second}
		dc, done := signIn(t, t.Context(), o)
		_ = e.SlowDown(dc.Code, 2)
		eventually(t, "two slow_down answers", func() bool { return e.DevicePolls(dc.Code) >= 3 })
		_ = e.EnterCode(dc.Code, sam.ObjectID)
		if r := wait(t, done); r.err != nil || r.account.ObjectID != samID {
			t.Fatalf("%+v %v", r.account, r.err)
		}
		if e.TooFastPolls() != 0 {
			t.Errorf("%d polls sooner than the (grown) interval", e.TooFastPolls())
		}
	})
	for _, tc := range []struct {
		name string
		act  func(e *entratest.Server, code string) error
		want Outcome
	}{
		{"declined", (*entratest.Server).DeclineCode, OutcomeDeclined},
		{"expired", (*entratest.Server).ExpireCode, OutcomeExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fakeEntra(t, entratest.Options{})
			dc, done := signIn(t, t.Context(), SignInOptions{Config: graphConfig(e), HTTPClient: e.Client()})
			if err := tc.act(e, dc.Code); err != nil {
				t.Fatal(err)
			}
			var se *SignInError
			if r := wait(t, done); !errors.As(r.err, &se) || se.Outcome != tc.want {
				t.Fatalf("err %v, want %s", r.err, tc.want)
			}
		})
	}
	t.Run("code lifetime ends", func(t *testing.T) {
		e := fakeEntra(t, entratest.Options{DeviceCodeLifetime: 2 * time.Second})
		_, done := signIn(t, t.Context(), SignInOptions{Config: graphConfig(e), HTTPClient: e.Client()})
		var se *SignInError
		if r := wait(t, done); !errors.As(r.err, &se) || se.Outcome != OutcomeExpired {
			t.Fatalf("err %v, want expired", r.err)
		}
	})
	t.Run("network errors while polling", func(t *testing.T) {
		e := fakeEntra(t, entratest.Options{})
		troubles := make(chan error, 10)
		o := SignInOptions{Config: graphConfig(e), HTTPClient: e.Client(), OnPollTrouble: func(err error) { troubles <- err }}
		dc, done := signIn(t, t.Context(), o)
		e.FailNext(2)
		for range 2 {
			select {
			case <-troubles:
			case <-time.After(20 * time.Second):
				t.Fatal("the dropped polls were not reported")
			}
		}
		_ = e.EnterCode(dc.Code, alexID)
		if r := wait(t, done); r.err != nil {
			t.Fatalf("a flaky connection ended the sign-in: %v", r.err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		e := fakeEntra(t, entratest.Options{})
		e.FailNext(100)
		_, err := SignIn(t.Context(), SignInOptions{Config: graphConfig(e), HTTPClient: e.Client()}, func(DeviceCode) { t.Error("a code was shown") })
		var se *SignInError
		if !errors.As(err, &se) || se.Outcome != OutcomeUnreachable {
			t.Fatalf("err %v, want unreachable", err)
		}
	})
	t.Run("app refused", func(t *testing.T) {
		e := fakeEntra(t, entratest.Options{})
		cfg := graphConfig(e)
		cfg.ClientID = "00000000-0000-0000-0000-000000000000"
		_, err := SignIn(t.Context(), SignInOptions{Config: cfg, HTTPClient: e.Client()}, func(DeviceCode) {})
		var se *SignInError
		if !errors.As(err, &se) || se.Outcome != OutcomeRefused || se.Detail == "" {
			t.Fatalf("err %v, want refused with Entra's reason", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		e := fakeEntra(t, entratest.Options{})
		ctx, cancel := context.WithCancel(t.Context())
		_, done := signIn(t, ctx, SignInOptions{Config: graphConfig(e), HTTPClient: e.Client()})
		cancel()
		var se *SignInError
		if r := wait(t, done); !errors.As(r.err, &se) || se.Outcome != OutcomeCancelled {
			t.Fatalf("err %v, want cancelled", r.err)
		}
	})
}
