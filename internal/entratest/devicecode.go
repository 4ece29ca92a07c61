package entratest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// The device-code flow (RFC 8628) as Entra runs it: the app asks
// /devicecode for a device code and a user code, shows the user code, and
// polls /token with grant_type device_code every interval seconds. Until the
// person has entered the code the poll answers authorization_pending; it
// answers slow_down when polled too often (or when the test says so),
// authorization_declined once the person declines, expired_token once the
// code's lifetime has passed, and tokens once the person signs in.

const deviceCodeGrant = "urn:ietf:params:oauth:grant-type:device_code"

type deviceState uint8

const (
	devicePending deviceState = iota
	deviceApproved
	deviceDeclined
	deviceExpired
	deviceRedeemed
)

type deviceCode struct {
	device, user string
	clientID     string
	scope        string
	expires      time.Time
	interval     time.Duration
	lastPoll     time.Time
	polls        int
	slowDowns    int // scripted slow_down answers still to give
	state        deviceState
	person       Person
}

// deviceCodes is the fake's device-code state (under Server.mu).
type deviceCodes struct {
	byDevice map[string]*deviceCode
	byUser   map[string]*deviceCode
	order    []string // user codes, in the order issued
	tooFast  int
}

// userCodeLetters are the letters Entra's user codes use (no vowels that
// could spell words, no look-alikes).
const userCodeLetters = "BCDFGHJKLMNPQRSTVWXZ"

func (s *Server) deviceAuthorization(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed body")
		return
	}
	f := r.PostForm
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenReqs["devicecode"]++
	if s.dropLocked(w) {
		return
	}
	clientID := f.Get("client_id")
	if clientID == "" || (s.opts.ClientID != "" && clientID != s.opts.ClientID) {
		oauthError(w, http.StatusBadRequest, "unauthorized_client", "AADSTS700016: Application not found in the directory.")
		return
	}
	if strings.TrimSpace(f.Get("scope")) == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: The request body must contain the following parameter: 'scope'.")
		return
	}
	interval := s.opts.DeviceCodeInterval
	if interval <= 0 {
		interval = 5
	}
	lifetime := s.opts.DeviceCodeLifetime
	if lifetime <= 0 {
		lifetime = 15 * time.Minute
	}
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = userCodeLetters[int(b[i])%len(userCodeLetters)]
	}
	dc := &deviceCode{
		device: s.mint("dc-"), user: string(b), clientID: clientID, scope: f.Get("scope"),
		expires: time.Now().Add(lifetime), interval: time.Duration(interval) * time.Second,
		lastPoll: time.Now(),
	}
	s.secrets = append(s.secrets, dc.user)
	d := &s.devices
	if d.byDevice == nil {
		d.byDevice, d.byUser = map[string]*deviceCode{}, map[string]*deviceCode{}
	}
	d.byDevice[dc.device], d.byUser[dc.user] = dc, dc
	d.order = append(d.order, dc.user)
	verify := s.srv.URL + "/devicelogin"
	writeJSON(w, http.StatusOK, map[string]any{
		"user_code": dc.user, "device_code": dc.device, "verification_uri": verify,
		"expires_in": int(lifetime.Seconds()), "interval": interval,
		"message": fmt.Sprintf("To sign in, use a web browser to open the page %s and enter the code %s to authenticate.", verify, dc.user),
	})
}

func (s *Server) pollDeviceCode(w http.ResponseWriter, f url.Values) {
	dc := s.devices.byDevice[f.Get("device_code")]
	if dc == nil || dc.clientID != f.Get("client_id") {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70000: The provided value for the 'device_code' parameter is not valid.")
		return
	}
	now := time.Now()
	early := now.Sub(dc.lastPoll) < dc.interval*9/10
	dc.lastPoll = now
	dc.polls++
	if dc.state == devicePending && now.After(dc.expires) {
		dc.state = deviceExpired
	}
	switch dc.state {
	case deviceExpired:
		oauthError(w, http.StatusBadRequest, "expired_token", "AADSTS70020: The provided value for the input parameter 'device_code' is not valid. This device code has expired.")
		return
	case deviceDeclined:
		oauthError(w, http.StatusBadRequest, "authorization_declined", "AADSTS70000: The user declined to authorize the application.")
		return
	case deviceRedeemed:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS54005: The device code was already redeemed.")
		return
	}
	if early {
		s.devices.tooFast++
		oauthError(w, http.StatusBadRequest, "slow_down", "AADSTS70016: Polling too often: slow down.")
		return
	}
	if dc.slowDowns > 0 {
		dc.slowDowns--
		oauthError(w, http.StatusBadRequest, "slow_down", "AADSTS70016: Polling too often: slow down.")
		return
	}
	if dc.state == devicePending {
		oauthError(w, http.StatusBadRequest, "authorization_pending", "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
		return
	}
	dc.state = deviceRedeemed
	s.issue(w, dc.person, "", echoScope(dc.scope, f.Get("scope")))
}

// dropLocked answers a request by closing its connection, as a network
// failure would, while requests are to be dropped (FailNext).
func (s *Server) dropLocked(w http.ResponseWriter) bool {
	if s.failNext <= 0 {
		return false
	}
	s.failNext--
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return true
		}
	}
	http.Error(w, "dropped", http.StatusServiceUnavailable)
	return true
}

// FailNext makes the next n requests to the token and device-code endpoints
// fail as a network failure does: the connection closes without an answer.
func (s *Server) FailNext(n int) {
	s.mu.Lock()
	s.failNext = n
	s.mu.Unlock()
}

// UserCodes returns the user codes issued so far, oldest first.
func (s *Server) UserCodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.devices.order)
}

func (s *Server) deviceCode(userCode string) (*deviceCode, error) {
	dc := s.devices.byUser[strings.ToUpper(strings.TrimSpace(userCode))]
	if dc == nil {
		return nil, fmt.Errorf("entratest: no device code with user code %q", userCode)
	}
	return dc, nil
}

// EnterCode is the person with id entering the user code and signing in:
// the app's next poll gets their tokens. A code that expired is refused.
func (s *Server) EnterCode(userCode string, id presence.UserID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dc, err := s.deviceCode(userCode)
	if err != nil {
		return err
	}
	if dc.state != devicePending || time.Now().After(dc.expires) {
		return errors.New("entratest: the code can no longer be entered")
	}
	i := slices.IndexFunc(s.people, func(p Person) bool { return p.ObjectID == presence.CanonicalUserID(string(id)) })
	if i < 0 {
		return fmt.Errorf("entratest: no simulated person %s", id)
	}
	dc.person, dc.state = s.people[i], deviceApproved
	return nil
}

// DeclineCode is the person entering the code and declining: the next poll
// answers authorization_declined.
func (s *Server) DeclineCode(userCode string) error {
	return s.setDeviceState(userCode, deviceDeclined)
}

// ExpireCode ends the code's lifetime now: the next poll answers
// expired_token.
func (s *Server) ExpireCode(userCode string) error {
	return s.setDeviceState(userCode, deviceExpired)
}

func (s *Server) setDeviceState(userCode string, st deviceState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dc, err := s.deviceCode(userCode)
	if err != nil {
		return err
	}
	dc.state = st
	return nil
}

// SlowDown makes the next n polls of the code answer slow_down.
func (s *Server) SlowDown(userCode string, n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dc, err := s.deviceCode(userCode)
	if err != nil {
		return err
	}
	dc.slowDowns = n
	return nil
}

// DevicePolls counts the token polls made with the code.
func (s *Server) DevicePolls(userCode string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	dc, err := s.deviceCode(userCode)
	if err != nil {
		return 0
	}
	return dc.polls
}

// TooFastPolls counts polls that came sooner than the interval after the
// previous one (each was answered slow_down).
func (s *Server) TooFastPolls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.devices.tooFast
}

// AccessTokenScopes returns the scopes an access token the fake issued was
// granted; false for a token it did not issue or that expired.
func (s *Server) AccessTokenScopes(tok string) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.access[tok]
	if !ok || time.Now().After(o.expires) {
		return nil, false
	}
	return strings.Fields(o.scope), true
}

// RevokeAccess makes the person's access tokens invalid at once (as
// continuous access evaluation does after a password reset), besides their
// refresh tokens (Revoke).
func (s *Server) RevokeAccess(id presence.UserID) {
	s.Revoke(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, o := range s.access {
		if o.user == id {
			delete(s.access, tok)
		}
	}
}
