package graphsource

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/presence"
)

// SourceName is the source's name in submitted states, the health component
// and the connectivity sensor in Home Assistant.
const SourceName = "graph"

// Options configure a Source. Zero tuning values take the defaults.
type Options struct {
	Config config.Graph
	Users  []config.User
	// DataDir holds the store (see NewStore).
	DataDir string
	Logger  *slog.Logger
	// Status receives the source's health as component "graph".
	Status bridge.StatusReporter
	// OnPrompt learns every change of what the person must see: the code
	// of a waiting sign-in (Home Assistant's sensor) and the notification
	// text (the add-on). It is called from the source's goroutine and must
	// not block.
	OnPrompt func(Prompt)
	// AutoSignIn starts a sign-in by itself when an account's sign-in
	// expires, so that its code is shown at once (set when something shows
	// it: Home Assistant or the add-on).
	AutoSignIn bool
	// HTTPClient reaches Entra and Graph (tests: one that trusts the
	// fakes); default clients with a 30 s timeout.
	HTTPClient *http.Client
	// SlowDownStep: see SignInOptions.
	SlowDownStep time.Duration
	// StaleAfter: a user whose presence could not be read for this long is
	// shown unavailable; default 10 × poll_interval, at least 10 minutes
	// (longer than the 5-minute cap on a Retry-After).
	StaleAfter time.Duration
	// Concurrency bounds the Graph requests of a cycle in flight; default 8.
	Concurrency int
}

// Prompt is what a person should see about signing in.
type Prompt struct {
	// Waiting is the sign-in waiting for its code to be entered, nil when
	// none waits. Its Text is the graph_sign_in_code sensor's state.
	Waiting *DeviceCode
	// Notice is the add-on notification (Markdown); empty dismisses it.
	Notice string
	// LastResult is how the last sign-in ended: "signed_in" or an Outcome;
	// empty before any.
	LastResult string
}

// unavailableMarker is what the source needs of the core besides Submit:
// bridge.Core's MarkUnavailable.
type unavailableMarker interface {
	MarkUnavailable(source string, ids ...presence.UserID)
}

// account is a signed-in account in memory. The embedded Account is the
// loop's copy; revision and stale are shared with the token refreshes of a
// cycle.
type account struct {
	Account
	tok      *tokens
	revision atomic.Int64
	// stale: the file changed under a refresh (a new sign-in, a removal):
	// reload it.
	stale atomic.Bool
	// noBatch: Graph refused this account's batch reads (403); it reads
	// only its owner until signed in again.
	noBatch bool
	// missing: users its batch reads did not answer for (another tenant).
	missing map[presence.UserID]bool
}

// Source is the bridge's own Microsoft Graph source. Create it with New and
// run it with Run; StartSignIn may be called from any goroutine.
type Source struct {
	o      Options
	log    *slog.Logger
	store  *Store
	graph  *graph.Client
	users  []presence.UserID
	names  map[presence.UserID]string
	press  chan struct{}
	events chan signInEvent
	poke   chan struct{}

	// Everything below belongs to Run's goroutine.
	core       bridge.Submitter
	marker     unavailableMarker
	accounts   map[string]*account
	order      []*account
	sig        string
	badFiles   map[string]bool
	jobs       []job
	uncovered  map[presence.UserID]bool
	sent       map[presence.UserID]presence.Update // the last update submitted per user
	shownOff   map[presence.UserID]bool            // marked unavailable since
	lastRead   map[presence.UserID]time.Time
	outage     string // the transient failure of the last cycle, "" when none
	cycled     bool   // a cycle has completed
	signing    bool
	waiting    *DeviceCode
	lastResult string
	lastFail   string
	prompt     Prompt
	prompted   bool
	health     struct {
		ok     bool
		detail string
		set    bool
	}
}

type signInEvent struct {
	code *DeviceCode
	done bool
	acct Account
	err  error
}

// New builds the source; nothing is read until Run.
func New(o Options) (*Source, error) {
	if !o.Config.Enabled() {
		return nil, errors.New("graph: no client_id")
	}
	if len(o.Users) == 0 {
		return nil, errors.New("graph: no users")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Concurrency = cmp.Or(o.Concurrency, 8)
	if o.StaleAfter <= 0 {
		o.StaleAfter = max(10*o.Config.PollInterval.Std(), 10*time.Minute)
	}
	if o.Config.PollInterval.Std() <= 0 {
		o.Config.PollInterval = config.Duration(10 * time.Second)
	}
	s := &Source{
		o:      o,
		log:    o.Logger.With("component", SourceName),
		store:  NewStore(o.DataDir),
		names:  make(map[presence.UserID]string),
		press:  make(chan struct{}, 1),
		events: make(chan signInEvent, 4),
		poke:   make(chan struct{}, 1),
	}
	s.graph = graph.New(graph.Options{Endpoint: o.Config.Endpoint, HTTPClient: o.HTTPClient, Logger: s.log})
	for _, u := range o.Users {
		s.users = append(s.users, u.ID)
		s.names[u.ID] = u.Name
	}
	return s, nil
}

// Name is the source's health component.
func (s *Source) Name() string { return SourceName }

// StartSignIn asks for a device-code sign-in (Home Assistant's Sign in
// button); while one waits, it shows that one's code again. It never
// blocks.
func (s *Source) StartSignIn() {
	select {
	case s.press <- struct{}{}:
	default:
	}
}

// Run reads presence every poll_interval until ctx ends.
func (s *Source) Run(ctx context.Context, core bridge.Submitter) error {
	s.core = core
	s.marker, _ = core.(unavailableMarker)
	s.accounts = make(map[string]*account)
	s.uncovered = make(map[presence.UserID]bool)
	s.sent = make(map[presence.UserID]presence.Update)
	s.shownOff = make(map[presence.UserID]bool)
	s.lastRead = make(map[presence.UserID]time.Time)
	s.badFiles = make(map[string]bool)
	now := time.Now()
	for _, u := range s.users {
		s.lastRead[u] = now
	}
	s.setHealth(false, "starting")
	s.syncStore(true)
	s.reconcile()
	s.emitPrompt()

	var wg sync.WaitGroup
	defer wg.Wait()
	interval := s.o.Config.PollInterval.Std()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var results chan []jobResult
	var began time.Time
	again := false
	start := func() {
		s.syncStore(false)
		began = time.Now()
		jobs := slices.Clone(s.jobs)
		results = make(chan []jobResult, 1)
		out := results
		wg.Go(func() { out <- s.runCycle(ctx, jobs) })
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			if results != nil {
				again = true
				continue
			}
			start()
		case <-s.poke:
			if results != nil {
				again = true
				continue
			}
			timer.Stop()
			start()
		case rs := <-results:
			results = nil
			s.finishCycle(ctx, &wg, rs)
			if again {
				again = false
				start()
				continue
			}
			timer.Reset(max(time.Until(began.Add(interval)), 0))
		case <-s.press:
			s.beginSignIn(ctx, &wg, "requested")
		case ev := <-s.events:
			s.signInEvent(ev)
		}
	}
}

// pollNow starts a cycle as soon as possible (after a sign-in).
func (s *Source) pollNow() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// --- accounts ---

// syncStore loads the accounts when the store's files changed: at start, and
// after `presence-bridge login` or `accounts remove` in another process.
func (s *Source) syncStore(initial bool) {
	sig := s.store.Signature()
	stale := false
	for _, a := range s.order {
		stale = stale || a.stale.Load()
	}
	if sig == s.sig && !stale {
		return
	}
	s.sig = sig
	list, errs := s.store.List()
	for _, err := range errs {
		if !s.badFiles[err.Error()] {
			s.badFiles[err.Error()] = true
			s.log.Error("a stored sign-in cannot be read; sign in again or remove the file", "err", err)
		}
	}
	changed := false
	seen := make(map[string]bool)
	for _, a := range list {
		seen[a.HomeAccountID] = true
		cur := s.accounts[a.HomeAccountID]
		switch {
		case cur == nil:
			if !initial {
				s.log.Info("signed-in account added", "upn", a.UPN)
			}
		case cur.stale.Load() || a.Revision > cur.revision.Load():
			if !initial && a.State == StateActive && cur.State != StateActive {
				s.log.Info("account signed in again", "upn", a.UPN)
			}
		default:
			continue
		}
		s.addAccount(a)
		changed = true
	}
	for key, cur := range s.accounts {
		if !seen[key] {
			s.log.Info("signed-in account removed", "upn", cur.UPN)
			delete(s.accounts, key)
			changed = true
		}
	}
	if changed {
		s.rebuildOrder()
		if !initial {
			s.reconcile()
		}
	}
}

// addAccount puts a stored account in memory, replacing an earlier copy.
func (s *Source) addAccount(a Account) {
	acc := &account{Account: a, missing: make(map[presence.UserID]bool)}
	acc.revision.Store(a.Revision)
	key := a.HomeAccountID
	persist := func(cache []byte) error {
		saved, err := s.store.Update(key, acc.revision.Load(), func(x *Account) { x.Cache = cache })
		switch {
		case err == nil:
			acc.revision.Store(saved.Revision)
		case errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound):
			// Signed in again or removed meanwhile: that version wins.
			acc.stale.Store(true)
		default:
			s.log.Warn("refreshed tokens not saved; they are kept in memory", "upn", a.UPN, "err", err)
		}
		return nil
	}
	tok, err := newTokens(s.o.Config, a, s.o.HTTPClient, persist)
	if err != nil {
		acc.State, acc.Reason = StateSignInRequired, err.Error()
	}
	acc.tok = tok
	if a.State == StateActive && a.ClientID != s.o.Config.ClientID {
		acc.State = StateSignInRequired
		acc.Reason = "signed in to another app registration (graph.client_id changed)"
	}
	s.accounts[key] = acc
}

func (s *Source) rebuildOrder() {
	s.order = s.order[:0]
	for _, a := range s.accounts {
		s.order = append(s.order, a)
	}
	slices.SortFunc(s.order, func(a, b *account) int {
		if c := a.SignedInAt.Compare(b.SignedInAt); c != 0 {
			return c
		}
		return strings.Compare(a.HomeAccountID, b.HomeAccountID)
	})
}

// expire marks an account as needing a new sign-in: kept on disk (so a
// restart does not retry it), its users given to other accounts or shown
// unavailable, and a sign-in asked for. Nothing retries it.
func (s *Source) expire(ctx context.Context, wg *sync.WaitGroup, acc *account, why error) {
	if acc.State != StateActive || s.accounts[acc.HomeAccountID] != acc {
		return
	}
	reason := why.Error()
	acc.State, acc.Reason, acc.StateSince = StateSignInRequired, reason, time.Now().UTC()
	s.log.Warn("microsoft sign-in expired or was revoked; its users need another account or a new sign-in",
		"upn", acc.UPN, "reason", reason)
	saved, err := s.store.Update(acc.HomeAccountID, acc.revision.Load(), func(x *Account) {
		x.State, x.Reason, x.StateSince = acc.State, acc.Reason, acc.StateSince
	})
	switch {
	case err == nil:
		acc.revision.Store(saved.Revision)
	case errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound):
		acc.stale.Store(true)
	default:
		s.log.Warn("the expired sign-in could not be recorded", "upn", acc.UPN, "err", err)
	}
	s.reconcile()
	if s.o.AutoSignIn && !s.signing {
		s.beginSignIn(ctx, wg, "expired")
	}
}

// --- coverage ---

// reconcile plans the next cycles and shows every user no account covers
// unavailable, once per user and episode.
func (s *Source) reconcile() {
	jobs, unc := plan(s.users, s.order)
	s.jobs = jobs
	now := make(map[presence.UserID]bool, len(unc))
	var newly, again []presence.UserID
	for _, u := range unc {
		now[u] = true
		if !s.uncovered[u] {
			newly = append(newly, u)
		}
	}
	for _, u := range s.users {
		if s.uncovered[u] && !now[u] {
			again = append(again, u)
		}
	}
	s.uncovered = now
	if len(newly) > 0 {
		s.log.Warn("no signed-in account covers these users; they are shown unavailable until someone signs in (the Sign in button in Home Assistant, or presence-bridge login)",
			"users", s.nameList(newly))
		s.markUnavailable(newly)
	}
	if len(again) > 0 {
		s.log.Info("users covered by a signed-in account again", "users", s.nameList(again))
		for _, u := range again {
			s.lastRead[u] = time.Now()
		}
	}
	s.report()
}

func (s *Source) markUnavailable(ids []presence.UserID) {
	var mark []presence.UserID
	for _, u := range ids {
		if !s.shownOff[u] {
			s.shownOff[u] = true
			mark = append(mark, u)
		}
	}
	if len(mark) > 0 && s.marker != nil {
		s.marker.MarkUnavailable(SourceName, mark...)
	}
}

func (s *Source) nameList(ids []presence.UserID) string {
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = cmp.Or(s.names[id], string(id))
	}
	return strings.Join(names, ", ")
}

// --- cycles ---

type jobResult struct {
	job     job
	updates []presence.Update
	err     error
	at      time.Time
}

// runCycle makes the cycle's Graph requests, a few at a time.
func (s *Source) runCycle(ctx context.Context, jobs []job) []jobResult {
	out := make([]jobResult, len(jobs))
	sem := make(chan struct{}, s.o.Concurrency)
	var wg sync.WaitGroup
	for i, j := range jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i] = s.runJob(ctx, j)
		})
	}
	wg.Wait()
	return out
}

// errGraphRefusedTwice: Graph answered 401 to a token still valid locally,
// and again after one refresh (SPEC §3): the account counts as expired.
var errGraphRefusedTwice = &SignInRequiredError{Code: "graph_401", Description: "Microsoft Graph refused the account's token, also after a refresh"}

func (s *Source) runJob(ctx context.Context, j job) jobResult {
	read := func(force bool) ([]presence.Update, error) {
		tok, err := j.acct.tok.Token(ctx, force)
		if err != nil {
			return nil, err
		}
		if j.batch {
			return s.graph.ByUserIDs(ctx, j.acct.TenantID, tok, j.users)
		}
		u, err := s.graph.Me(ctx, j.acct.TenantID, tok)
		if err != nil {
			return nil, err
		}
		return []presence.Update{u}, nil
	}
	ups, err := read(false)
	if errors.Is(err, graph.ErrUnauthorized) {
		ups, err = read(true)
		if errors.Is(err, graph.ErrUnauthorized) {
			err = errGraphRefusedTwice
		}
	}
	return jobResult{job: j, updates: ups, err: err, at: time.Now().UTC()}
}

// finishCycle applies a cycle's results.
func (s *Source) finishCycle(ctx context.Context, wg *sync.WaitGroup, rs []jobResult) {
	s.cycled = true
	outage := ""
	replan := false
	var expired []expiry
	for _, r := range rs {
		acc := r.job.acct
		if s.accounts[acc.HomeAccountID] != acc {
			continue // removed or replaced meanwhile
		}
		var sr *SignInRequiredError
		switch {
		case r.err == nil:
			replan = s.apply(r) || replan
		case errors.As(r.err, &sr):
			expired = append(expired, expiry{acc, r.err})
		case errors.Is(r.err, graph.ErrForbidden) && r.job.batch:
			acc.noBatch = true
			s.log.Warn("microsoft graph refused to read colleagues' presence with this sign-in (it lacks Presence.Read.All); it now reads only its own",
				"upn", acc.UPN)
			replan = true
		case errors.Is(r.err, graph.ErrForbidden):
			expired = append(expired, expiry{acc, &SignInRequiredError{Code: "graph_403", Description: "Microsoft Graph refused to read the account's presence (it lacks Presence.Read)"}})
		case errors.Is(r.err, graph.ErrThrottled):
			// The client holds the tenant until its Retry-After (and says
			// so); presence stays as it was meanwhile.
		case errors.Is(r.err, context.Canceled):
		default:
			if outage == "" {
				outage = r.err.Error()
			}
		}
	}
	switch {
	case outage != "" && s.outage == "":
		s.log.Warn("microsoft graph cannot be read; retrying every poll interval", "err", outage)
	case outage == "" && s.outage != "":
		s.log.Info("microsoft graph can be read again")
	}
	s.outage = outage
	for _, e := range expired {
		s.expire(ctx, wg, e.acc, e.err)
	}
	if replan {
		s.reconcile()
	}
	s.markStale()
	s.report()
}

type expiry struct {
	acc *account
	err error
}

// apply submits a job's updates and reports whether the plan must change
// (a batch that did not answer for a user).
func (s *Source) apply(r jobResult) bool {
	want := make(map[presence.UserID]bool, len(r.job.users))
	for _, u := range r.job.users {
		want[u] = true
	}
	got := make(map[presence.UserID]bool, len(r.updates))
	for _, u := range r.updates {
		if !want[u.UserID] {
			continue
		}
		got[u.UserID] = true
		u.ObservedAt = r.at
		s.submit(u)
	}
	replan := false
	if r.job.batch {
		var missing []presence.UserID
		for _, u := range r.job.users {
			if !got[u] {
				missing = append(missing, u)
				r.job.acct.missing[u] = true
			}
		}
		if len(missing) > 0 {
			s.log.Info("microsoft graph did not answer for these users with this sign-in (another tenant?); trying other sign-ins",
				"upn", r.job.acct.UPN, "users", s.nameList(missing))
			replan = true
		}
	}
	return replan
}

// submit hands an update to the core unless it repeats the last one
// submitted (same sequence and state) while the user is shown available.
func (s *Source) submit(u presence.Update) {
	s.lastRead[u.UserID] = u.ObservedAt
	last, ok := s.sent[u.UserID]
	if ok && !s.shownOff[u.UserID] && last.Sequence == u.Sequence && last.SameState(u) {
		return
	}
	s.sent[u.UserID] = u
	s.shownOff[u.UserID] = false
	s.core.Submit(u, SourceName, func(bridge.Outcome) {})
}

// markStale shows unavailable the covered users whose presence could not
// be read for StaleAfter.
func (s *Source) markStale() {
	var stale []presence.UserID
	for _, u := range s.users {
		if !s.uncovered[u] && !s.shownOff[u] && time.Since(s.lastRead[u]) > s.o.StaleAfter {
			stale = append(stale, u)
		}
	}
	if len(stale) > 0 {
		s.log.Warn("presence not read for a long time; these users are shown unavailable", "users", s.nameList(stale), "after", s.o.StaleAfter)
		s.markUnavailable(stale)
	}
}

// --- sign-in ---

func (s *Source) beginSignIn(ctx context.Context, wg *sync.WaitGroup, why string) {
	if s.signing {
		s.prompted = false // show the waiting code again
		s.emitPrompt()
		return
	}
	s.signing = true
	s.lastFail = ""
	s.log.Info("sign-in started", "why", why)
	send := func(ev signInEvent) {
		select {
		case s.events <- ev:
		case <-ctx.Done():
		}
	}
	opts := SignInOptions{
		Config: s.o.Config, HTTPClient: s.o.HTTPClient, SlowDownStep: s.o.SlowDownStep,
		OnPollTrouble: func(err error) {
			s.log.Debug("sign-in poll failed; polling again", "err", err)
		},
	}
	wg.Go(func() {
		a, err := SignIn(ctx, opts, func(dc DeviceCode) { send(signInEvent{code: &dc}) })
		send(signInEvent{done: true, acct: a, err: err})
	})
}

func (s *Source) signInEvent(ev signInEvent) {
	if ev.code != nil {
		s.waiting = ev.code
		s.log.Info("sign-in waiting for its code to be entered on Microsoft's page; the code is shown in Home Assistant",
			"expires_at", ev.code.ExpiresAt.UTC().Format(time.RFC3339))
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("device code issued", "url", ev.code.URL, "user_code", ev.code.Code)
		}
		s.emitPrompt()
		return
	}
	if !ev.done {
		return
	}
	s.signing, s.waiting = false, nil
	var se *SignInError
	switch {
	case ev.err == nil:
	case errors.As(ev.err, &se) && se.Outcome == OutcomeCancelled:
		return
	case errors.As(ev.err, &se):
		s.lastResult, s.lastFail = string(se.Outcome), ev.err.Error()
		s.log.Warn("sign-in did not complete", "outcome", se.Outcome, "err", ev.err)
		s.emitPrompt()
		return
	default:
		s.lastResult, s.lastFail = string(OutcomeRefused), ev.err.Error()
		s.log.Warn("sign-in did not complete", "err", ev.err)
		s.emitPrompt()
		return
	}
	saved, err := s.store.Put(ev.acct)
	if err != nil {
		s.lastResult, s.lastFail = "failed", "the sign-in could not be saved: "+err.Error()
		s.log.Error("sign-in could not be saved", "upn", ev.acct.UPN, "err", err)
		s.emitPrompt()
		return
	}
	s.addAccount(saved)
	s.sig = "" // the store changed: read it again next cycle
	s.rebuildOrder()
	s.lastResult, s.lastFail = "signed_in", ""
	covers := Covers(saved, s.o.Users)
	s.log.Info("signed in", "upn", saved.UPN, "scopes", strings.Join(saved.Scopes, " "), "covers", len(covers))
	s.reconcile()
	s.emitPrompt()
	s.pollNow()
}

// Covers lists the configured users an account can read: every one with
// Presence.Read.All (as far as Graph answers for them), else its owner.
func Covers(a Account, users []config.User) []config.User {
	if a.ReadsAll() {
		return users
	}
	for _, u := range users {
		if u.ID == a.ObjectID {
			return []config.User{u}
		}
	}
	return nil
}

// --- what people see ---

// report sets the source's health.
func (s *Source) report() {
	ok, detail := true, ""
	switch {
	case len(s.uncovered) > 0:
		var ids []presence.UserID
		for _, u := range s.users {
			if s.uncovered[u] {
				ids = append(ids, u)
			}
		}
		ok, detail = false, "sign-in needed: no signed-in account covers "+s.nameList(ids)
	case s.outage != "":
		ok, detail = false, "microsoft graph cannot be read: "+s.outage
	case !s.cycled:
		ok, detail = false, "starting"
	}
	s.setHealth(ok, detail)
	s.emitPrompt()
}

func (s *Source) setHealth(ok bool, detail string) {
	if s.health.set && s.health.ok == ok && s.health.detail == detail {
		return
	}
	s.health.set, s.health.ok, s.health.detail = true, ok, detail
	if s.o.Status != nil {
		s.o.Status.SetStatus(SourceName, ok, detail)
	}
}

func (s *Source) emitPrompt() {
	p := Prompt{Waiting: s.waiting, Notice: s.notice(), LastResult: s.lastResult}
	if s.prompted && samePrompt(p, s.prompt) {
		return
	}
	s.prompt, s.prompted = p, true
	if s.o.OnPrompt != nil {
		s.o.OnPrompt(p)
	}
}

func samePrompt(a, b Prompt) bool {
	return a.Notice == b.Notice && a.LastResult == b.LastResult && (a.Waiting == nil) == (b.Waiting == nil) &&
		(a.Waiting == nil || *a.Waiting == *b.Waiting)
}

// notice is the add-on notification: the code while a sign-in waits, and
// whatever needs a sign-in (expired accounts, users no account covers, a
// failed attempt); empty when nothing does.
func (s *Source) notice() string {
	var parts []string
	if w := s.waiting; w != nil {
		parts = append(parts, fmt.Sprintf("To sign in to Microsoft for Presence Bridge, open **%s** and enter the code **%s** (before %s). "+
			"Sign in with the work or school account whose Teams presence should be shown.", w.URL, w.Code, w.ExpiresAt.Local().Format("15:04")))
	}
	for _, a := range s.order {
		if a.State == StateSignInRequired {
			parts = append(parts, fmt.Sprintf("The sign-in of %s needs renewing: %s.", cmp.Or(a.UPN, a.Name), a.Reason))
		}
	}
	if len(s.uncovered) > 0 {
		var ids []presence.UserID
		for _, u := range s.users {
			if s.uncovered[u] {
				ids = append(ids, u)
			}
		}
		parts = append(parts, fmt.Sprintf("No signed-in account reads the presence of %s, so Home Assistant shows them unavailable.", s.nameList(ids)))
	}
	if s.lastFail != "" && s.waiting == nil {
		parts = append(parts, "The last sign-in did not complete: "+s.lastFail+".")
	}
	if len(parts) == 0 {
		return ""
	}
	if s.waiting == nil {
		parts = append(parts, "Press **Sign in** on the Presence Bridge device in Home Assistant (Settings → Devices & services → MQTT) "+
			"for a code, or run `presence-bridge login` in the add-on's terminal.")
	}
	return strings.Join(parts, "\n\n")
}
