package graphsource

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

// DeviceCode is what a person does to sign in: open URL, enter Code.
type DeviceCode struct {
	URL       string
	Code      string
	ExpiresAt time.Time
}

// Text is the instruction shown in Home Assistant's sensor (well under its
// 255 characters).
func (d DeviceCode) Text() string {
	return "Open " + d.URL + " and enter the code " + d.Code
}

// Outcome classifies a sign-in that did not succeed.
type Outcome string

// Sign-in outcomes (besides success).
const (
	// OutcomeDeclined: the person entered the code and declined (or
	// cancelled) on Microsoft's page.
	OutcomeDeclined Outcome = "declined"
	// OutcomeExpired: the code was not entered before it expired.
	OutcomeExpired Outcome = "expired"
	// OutcomeUnreachable: Microsoft's sign-in service could not be reached
	// to get a code.
	OutcomeUnreachable Outcome = "unreachable"
	// OutcomeRefused: Entra refused the sign-in (the app registration does
	// not allow public client flows, consent is needed, a personal account).
	OutcomeRefused Outcome = "refused"
	// OutcomeCancelled: the bridge stopped while the sign-in waited.
	OutcomeCancelled Outcome = "cancelled"
)

// SignInError is a sign-in that did not succeed. Its text is safe to show
// and log: Entra's AADSTS description at most, never a code or token.
type SignInError struct {
	Outcome Outcome
	Detail  string
}

func (e *SignInError) Error() string {
	msg := map[Outcome]string{
		OutcomeDeclined:    "the sign-in was declined on Microsoft's page",
		OutcomeExpired:     "the code expired before it was entered",
		OutcomeUnreachable: "Microsoft's sign-in service could not be reached",
		OutcomeRefused:     "Microsoft refused the sign-in",
		OutcomeCancelled:   "the sign-in was cancelled",
	}[e.Outcome]
	if msg == "" {
		msg = "the sign-in failed"
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// SignInOptions configure a device-code sign-in.
type SignInOptions struct {
	Config config.Graph
	// HTTPClient reaches Entra (tests: one that trusts the fake); default
	// a client with a 30 s timeout.
	HTTPClient *http.Client
	// SlowDownStep is added to the polling interval on each slow_down;
	// default DefaultSlowDownStep.
	SlowDownStep time.Duration
	// OnPollTrouble learns each poll that met a network or server error
	// (the sign-in goes on). It must not block.
	OnPollTrouble func(error)
}

// SignIn runs one device-code sign-in: it asks Entra for a code, calls show
// with it, and waits until the person has entered it (or declined, or the
// code expired). It returns the new account, not yet stored. Every failure
// is a *SignInError.
func SignIn(ctx context.Context, o SignInOptions, show func(DeviceCode)) (Account, error) {
	box := &cacheBox{}
	h := newOAuthHTTP(o.HTTPClient)
	if o.SlowDownStep > 0 {
		h.slowDown = o.SlowDownStep
	}
	h.onPollTrouble = o.OnPollTrouble
	app, err := msalClient(o.Config, box, h)
	if err != nil {
		return Account{}, &SignInError{Outcome: OutcomeRefused, Detail: err.Error()}
	}
	dc, err := app.AcquireTokenByDeviceCode(ctx, o.Config.Scopes)
	if err != nil {
		return Account{}, signInFailure(ctx, err, h.lastError(), false)
	}
	show(DeviceCode{URL: dc.Result.VerificationURL, Code: dc.Result.UserCode, ExpiresAt: dc.Result.ExpiresOn})
	res, err := dc.AuthenticationResult(ctx)
	if err != nil {
		return Account{}, signInFailure(ctx, err, h.lastError(), true)
	}
	a := Account{
		Version:       fileVersion,
		HomeAccountID: strings.ToLower(res.Account.HomeAccountID),
		ObjectID:      presence.CanonicalUserID(res.IDToken.Oid),
		TenantID:      strings.ToLower(res.IDToken.TenantID),
		UPN:           clip(printable(res.Account.PreferredUsername), 256),
		Name:          clip(printable(res.IDToken.Name), 256),
		ClientID:      o.Config.ClientID,
		Scopes:        grantedScopes(res.GrantedScopes),
		SignedInAt:    time.Now().UTC(),
		State:         StateActive,
		StateSince:    time.Now().UTC(),
	}
	if a.ObjectID == "" {
		oid, _, _ := strings.Cut(a.HomeAccountID, ".")
		a.ObjectID = presence.CanonicalUserID(oid)
	}
	if a.TenantID == "" {
		_, a.TenantID, _ = strings.Cut(a.HomeAccountID, ".")
	}
	if !validHomeAccountID(a.HomeAccountID) || !strings.HasPrefix(a.HomeAccountID, string(a.ObjectID)+".") {
		return Account{}, &SignInError{Outcome: OutcomeRefused, Detail: "not a work or school account (Teams presence needs one)"}
	}
	cache, ok := box.changed()
	if !ok {
		return Account{}, &SignInError{Outcome: OutcomeRefused, Detail: "no tokens were stored"}
	}
	a.Cache = cache
	return a, nil
}

// grantedScopes keeps the resource scopes (without OpenID's).
func grantedScopes(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		for f := range strings.FieldsSeq(s) {
			switch strings.ToLower(f) {
			case "openid", "profile", "offline_access", "email":
				continue
			}
			out = append(out, clip(printable(f), 128))
		}
	}
	return out
}

// signInFailure classifies a failed sign-in. polling tells whether the code
// had been shown (then a deadline is the code's expiry).
func signInFailure(ctx context.Context, err error, last oauthError, polling bool) error {
	if ctx.Err() != nil {
		return &SignInError{Outcome: OutcomeCancelled}
	}
	switch last.Code {
	case "expired_token", "code_expired":
		return &SignInError{Outcome: OutcomeExpired}
	case "authorization_declined", "access_denied":
		return &SignInError{Outcome: OutcomeDeclined}
	}
	if polling && errors.Is(err, context.DeadlineExceeded) {
		// MSAL stops polling when the code's lifetime ends (the last
		// answer was then a pending or slow_down one).
		return &SignInError{Outcome: OutcomeExpired}
	}
	switch last.Code {
	case "", "authorization_pending", "slow_down":
	default:
		return &SignInError{Outcome: OutcomeRefused, Detail: describe(last)}
	}
	if last.Status != 0 {
		return &SignInError{Outcome: OutcomeUnreachable, Detail: last.Description}
	}
	var te *TransientError
	if c := classify(ctx, err, last); errors.As(c, &te) {
		return &SignInError{Outcome: OutcomeUnreachable, Detail: strings.TrimPrefix(te.Detail, "unreachable: ")}
	}
	return &SignInError{Outcome: OutcomeRefused}
}

func describe(e oauthError) string {
	if e.Description == "" {
		return e.Code
	}
	return fmt.Sprintf("%s (%s)", e.Description, e.Code)
}
