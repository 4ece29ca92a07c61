package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/presence"
)

// AddRequest adds a person of an app-only tenant without a sign-in
// (`presence-poller accounts add`, POST /api/accounts).
type AddRequest struct {
	ObjectID presence.UserID `json:"objectId"`
	TenantID string          `json:"tenantId"`
	// Name is the bridge's name for them; default person-<first 8 of id>.
	Name string `json:"name,omitempty"`
}

// AddResult is what adding made.
type AddResult struct {
	Account poller.Account `json:"account"`
	// UsersEntry is the bridge's users: entry (YAML); it holds the Listen
	// key when one was made: show it once, never log it.
	UsersEntry string `json:"usersEntry"`
	// Manual says what to create by hand when the key may not manage
	// entities.
	Manual    string `json:"manual,omitempty"`
	Published bool   `json:"published"`
}

// ErrNotAppOnly: the tenant is not in entra.app_only_tenants, so the poller
// has no way to read the person without their sign-in.
var ErrNotAppOnly = errors.New("the tenant is not in entra.app_only_tenants: people of other tenants sign in themselves at /auth/start")

// ErrCannotAdd marks a request that cannot be done as asked (a bad id,
// another tenant); other errors are the store's or Service Bus's.
var ErrCannotAdd = errors.New("cannot add")

// AddAccount provisions the person's topic, subscriptions and Listen key,
// stores the account (active, no token cache: the app's token reads them)
// and publishes their current presence at once.
func (s *Server) AddAccount(ctx context.Context, req AddRequest) (AddResult, error) {
	id, err := presence.ParseUserID(string(req.ObjectID))
	if err != nil {
		return AddResult{}, fmt.Errorf("%w: %v (give the person's Entra object id)", ErrCannotAdd, err)
	}
	tenant := strings.TrimSpace(req.TenantID)
	if !s.appOnly(tenant) {
		return AddResult{}, fmt.Errorf("%w: %w (tenant %q)", ErrCannotAdd, ErrNotAppOnly, tenant)
	}
	acct := poller.Account{UserID: id, TenantID: strings.ToLower(tenant), Name: strings.TrimSpace(req.Name), State: poller.StateActive, SignedInAt: time.Now().UTC()}
	current := ""
	if prev, err := s.o.Store.Account(ctx, id); err == nil {
		if !strings.EqualFold(prev.TenantID, tenant) {
			return AddResult{}, fmt.Errorf("%w: %s is already here as a person of tenant %s", ErrCannotAdd, id, prev.TenantID)
		}
		current = prev.Namespace
		acct.UPN, acct.HomeAccountID = prev.UPN, prev.HomeAccountID
		if acct.Name == "" {
			acct.Name = prev.Name
		}
	} else if !errors.Is(err, poller.ErrNotFound) {
		return AddResult{}, err
	}
	if acct.Name == "" {
		acct.Name = "person-" + string(id)[:8]
	}
	ob, err := s.o.Onboarder.Onboard(ctx, id, current)
	if err != nil {
		return AddResult{}, err
	}
	acct.Namespace, acct.Topic = ob.Namespace, ob.Topic
	if err := s.o.Store.PutAccount(ctx, acct); err != nil {
		return AddResult{}, err
	}
	s.log.Info("person added", "user", id, "tenant", acct.TenantID, "namespace", ob.Namespace, "topic", ob.Topic, "manual_setup", ob.Manual != nil)
	out := AddResult{Account: acct, UsersEntry: doneView(acct, ob, false).Entry}
	if ob.Manual != nil {
		out.Manual = ob.Manual.Error()
		return out, nil
	}
	sum, err := s.o.Engine.RefreshNow(ctx, acct)
	if err != nil {
		s.log.Warn("first presence not published yet", "user", id, "err", err)
	}
	out.Published = sum.Published > 0
	return out, nil
}

func (s *Server) appOnly(tenant string) bool {
	for _, t := range s.o.AppOnlyTenants {
		if strings.EqualFold(t, tenant) {
			return true
		}
	}
	return false
}

// add is POST /api/accounts: AddAccount for `accounts add` beside a
// running serve.
func (s *Server) add(w http.ResponseWriter, r *http.Request) {
	var req AddRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the body is not {\"objectId\", \"tenantId\", \"name\"}"})
		return
	}
	res, err := s.AddAccount(r.Context(), req)
	if err != nil {
		status := http.StatusBadGateway // the store or Service Bus failed
		if errors.Is(err, ErrCannotAdd) {
			status = http.StatusBadRequest
		}
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, res)
}
