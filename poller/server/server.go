// Package server is presence-poller's HTTP side (SPEC §9 "Endpoints"): the
// sign-in pages (/auth/start, /auth/end), /healthz and the API protected by
// api_key (/api/presence/{objectId}, /api/refresh, /api/accounts, and
// DELETE /api/accounts/{objectId} and POST /api/accounts, which `accounts
// remove` and `accounts add` use while serve holds the store), and POST
// /notifications, Graph's change-notification webhook (poller/notify's
// Webhook, mounted as it is; 501 when graph.notifications is off).
//
// Pages are html/template, so everything they show (a display name from the
// id token, an error text from Entra) is escaped. No page, log line or
// error carries a code, token, cookie or key, except the topic-scoped
// Listen connection string shown once to the person who just signed in.
package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/signin"
	"github.com/presence-bridge/presence-bridge/presence"
)

// Options configure the handler.
type Options struct {
	Flow      *signin.Flow
	Tokens    *signin.Tokens
	Store     poller.Store
	Engine    *poller.Engine
	Onboarder *poller.Onboarder
	// APIKey protects /api; empty turns /api off.
	APIKey string
	// AppOnlyTenants are the tenants whose people may be added without a
	// sign-in (entra.app_only_tenants).
	AppOnlyTenants []string
	// Checks are what /healthz asks (store, service_bus), each bounded by
	// a short timeout.
	Checks map[string]func(context.Context) error
	Logger *slog.Logger
	// Notifications serves /notifications (poller/notify's Webhook); nil
	// when change notifications are off.
	Notifications http.Handler
	// Subscriptions learns of sign-ins (to subscribe the person at once)
	// and removals (to delete their subscription first); nil when change
	// notifications are off.
	Subscriptions Subscriptions
}

// Subscriptions is what the server tells the change-notification side
// (poller/notify's Manager).
type Subscriptions interface {
	Retry(ctx context.Context, id presence.UserID)
	Remove(ctx context.Context, a poller.Account) error
}

// Server is the poller's HTTP handler.
type Server struct {
	o   Options
	log *slog.Logger
	mux *http.ServeMux
}

// New builds the handler.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, log: o.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /{$}", s.home)
	s.mux.HandleFunc("GET /auth/start", s.start)
	s.mux.HandleFunc("POST /auth/end", s.end)
	s.mux.HandleFunc("GET /healthz", s.health)
	if o.Notifications != nil {
		s.mux.Handle("/notifications", o.Notifications)
	} else {
		s.mux.HandleFunc("/notifications", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "change notifications are off (graph.notifications: false)", http.StatusNotImplemented)
		})
	}
	s.mux.HandleFunc("GET /api/presence/{objectId}", s.api(s.presence))
	s.mux.HandleFunc("POST /api/refresh", s.api(s.refresh))
	s.mux.HandleFunc("GET /api/accounts", s.api(s.accounts))
	s.mux.HandleFunc("POST /api/accounts", s.api(s.add))
	s.mux.HandleFunc("DELETE /api/accounts/{objectId}", s.api(s.remove))
	return s
}

// ServeHTTP serves every endpoint with security headers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https:")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	render(w, http.StatusOK, homePage, nil)
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	hint := r.URL.Query().Get("login_hint")
	if len(hint) > 256 {
		hint = ""
	}
	target, cookie, err := s.o.Flow.Start(r.Context(), hint)
	if err != nil {
		s.log.Warn("sign-in not started", "err", err)
		render(w, http.StatusServiceUnavailable, failPage, failView(&signin.Error{Failure: signin.FailUnavailable}))
		return
	}
	http.SetCookie(w, cookie)
	http.Redirect(w, r, target, http.StatusFound)
}

func (s *Server) end(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, s.o.Flow.ClearCookie())
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		render(w, http.StatusBadRequest, failPage, failView(&signin.Error{Failure: signin.FailNoCode}))
		return
	}
	cookie, _ := r.Cookie(signin.CookieName)
	id, err := s.o.Flow.Finish(r.Context(), r.PostForm, cookie)
	if err != nil {
		var se *signin.Error
		if !errors.As(err, &se) {
			se = &signin.Error{Failure: signin.FailUnknownError}
		}
		s.log.Warn("sign-in refused", "reason", string(se.Failure), "detail", se.Detail)
		status := http.StatusBadRequest
		if se.Failure == signin.FailUnavailable {
			status = http.StatusBadGateway
		}
		render(w, status, failPage, failView(se))
		return
	}
	ctx := r.Context()
	current := ""
	if prev, err := s.o.Store.Account(ctx, id.UserID); err == nil {
		current = prev.Namespace
	}
	ob, err := s.o.Onboarder.Onboard(ctx, id.UserID, current)
	if err != nil {
		s.log.Error("topic not provisioned", "user", id.UserID, "err", err)
		render(w, http.StatusBadGateway, failPage, failView(&signin.Error{Failure: signin.FailUnavailable, Detail: "Service Bus could not be reached to set up your topic"}))
		return
	}
	acct := poller.Account{
		UserID: id.UserID, TenantID: id.TenantID, UPN: id.UPN, Name: id.Name, HomeAccountID: id.HomeAccountID,
		Namespace: ob.Namespace, Topic: ob.Topic, State: poller.StateActive, SignedInAt: time.Now().UTC(),
	}
	if err := s.o.Tokens.SaveCache(ctx, id.UserID, id.Cache); err != nil {
		s.log.Error("sign-in not stored", "user", id.UserID, "err", err)
		render(w, http.StatusInternalServerError, failPage, failView(&signin.Error{Failure: signin.FailUnknownError}))
		return
	}
	if err := s.o.Store.PutAccount(ctx, acct); err != nil {
		s.log.Error("sign-in not stored", "user", id.UserID, "err", err)
		render(w, http.StatusInternalServerError, failPage, failView(&signin.Error{Failure: signin.FailUnknownError}))
		return
	}
	s.log.Info("signed in", "user", id.UserID, "tenant", id.TenantID, "namespace", ob.Namespace, "topic", ob.Topic, "manual_setup", ob.Manual != nil)
	if s.o.Subscriptions != nil {
		s.o.Subscriptions.Retry(ctx, id.UserID)
	}
	published := false
	if ob.Manual == nil {
		sum, err := s.o.Engine.RefreshNow(ctx, acct)
		if err != nil {
			s.log.Warn("first presence not published yet", "user", id.UserID, "err", err)
		}
		published = sum.Published > 0
	}
	render(w, http.StatusOK, donePage, doneView(acct, ob, published))
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"status": "ok"}
	status := http.StatusOK
	for name, check := range s.o.Checks {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		err := check(ctx)
		cancel()
		if err != nil {
			out[name] = "unreachable"
			out["status"] = "unavailable"
			status = http.StatusServiceUnavailable
			s.log.Warn("health check failed", "check", name, "err", err)
		} else {
			out[name] = "ok"
		}
	}
	writeJSON(w, status, out)
}

// api wraps an /api handler with the api_key check.
func (s *Server) api(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.o.APIKey == "" {
			http.NotFound(w, r)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.APIKey)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="presence-poller"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized: send Authorization: Bearer <api_key>"})
			return
		}
		h(w, r)
	}
}

func (s *Server) presence(w http.ResponseWriter, r *http.Request) {
	id, err := presence.ParseUserID(r.PathValue("objectId"))
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not an object id"})
		return
	}
	rec, tag, err := s.o.Store.Presence(r.Context(), id)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "store unavailable"})
		return
	}
	if tag == "" || rec.Last.UserID == "" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no presence known for that person"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"userId": rec.Last.UserID, "availability": rec.Last.Availability.String(), "activity": rec.Last.Activity.String(),
		"sequence": rec.Last.Sequence, "observedAt": rec.Last.ObservedAt.UTC().Format(time.RFC3339Nano),
	})
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	sum, err := s.o.Engine.Cycle(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "the cycle did not complete", "summary": sum})
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

func (s *Server) accounts(w http.ResponseWriter, r *http.Request) {
	list, err := poller.ListAccounts(r.Context(), s.o.Store)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "store unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	id, err := presence.ParseUserID(r.PathValue("objectId"))
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not an object id"})
		return
	}
	if a, err := s.o.Store.Account(r.Context(), id); err == nil && s.o.Subscriptions != nil {
		if err := s.o.Subscriptions.Remove(r.Context(), a); err != nil {
			s.log.Warn("subscription not deleted at Graph; it lapses within the hour", "user", id, "err", err)
		}
	}
	switch err := s.o.Store.DeleteAccount(r.Context(), id); {
	case errors.Is(err, poller.ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such person"})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "store unavailable"})
	default:
		s.o.Tokens.Forget(id)
		s.log.Info("account removed", "user", id)
		writeJSON(w, http.StatusOK, map[string]string{"removed": string(id)})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
