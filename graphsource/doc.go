// Package graphsource is the bridge's own Microsoft Graph source (SPEC §3,
// §4, §6): people sign in with the device-code flow, and the bridge reads
// their Teams presence itself, with no Azure subscription and no cloud
// poller.
//
// # Sign-in
//
// A sign-in is MSAL Go's public client and the device-code flow: the bridge
// asks Entra for a code, shows it (Home Assistant's graph_sign_in_code
// sensor, the add-on notification, or `presence-bridge login`), and polls
// until the person has entered it on Microsoft's page. Every outcome is
// told apart: pending, slow_down (the interval grows by 5 s), declined,
// expired, Entra refusing the app, Entra unreachable (for the code itself;
// while polling a network error is retried until the code expires). MSAL's
// own polling ignores Entra's interval and slow_down, so the HTTP client it
// is handed paces the polls (oauth.go).
//
// Several people can sign in. Each account is one file in
// <data_dir>/graph-accounts (mode 0600, written whole and renamed, under a
// lock file): MSAL's public client reads its cache with a partition key
// but writes it with none, so one cache per account, each used by its own
// client under a mutex, keeps accounts apart. `presence-bridge login` and
// `accounts remove` work while the daemon runs: the daemon notices a
// changed folder on its next cycle, and a refresh that raced a removal (or
// a new sign-in) is dropped rather than written back (revisions).
//
// Tokens never reach a log line or an error: refusals are classified by
// Entra's OAuth error code, seen by the HTTP client, not by MSAL's text
// (which repeats response bodies). The user code is logged at debug level
// only when issued, while its sign-in waits; never once used.
//
// # Reading
//
// Every poll_interval, each configured user is read with a covering
// account: the first active account holding Presence.Read.All reads them
// in batches of up to 650 (getPresencesByUserId: one request per cycle for
// a household); a user its batches do not answer for (another tenant), or
// every user when no such account exists, is read with their own account
// (/me/presence). The graph package keeps Graph's limits per tenant
// (budget under 1,500 requests per 30 s, Retry-After on 429/503).
// sequenceNumber becomes the update's Sequence and the read time its
// ObservedAt, so the core's ordering (SPEC §2) lets this source and the
// Service Bus source run side by side: the same presence read twice is a
// duplicate, an older one is stale. An unchanged presence is not submitted
// again.
//
// # Unavailable users
//
// A user no active account covers is reported once per episode (a warning,
// the source's health, the add-on notification) and shown unavailable with
// the core's MarkUnavailable: a new state, so Home Assistant never keeps
// showing a presence nobody reads, including one retained by an earlier
// run. So is a covered user whose presence could not be read for
// StaleAfter (10 minutes by default; a Retry-After is capped at 5).
//
// An account whose refresh token Entra refuses (revoked, expired, consent
// withdrawn), or whose token Graph refuses again after one refresh (SPEC
// §3), is marked signin_required on disk and never retried; its users go
// to other accounts or are shown unavailable, and a new sign-in is asked
// for: with AutoSignIn a device code is requested at once, so Home
// Assistant's sensor and the notification show it. If that code expires
// unused, nothing asks again until someone presses Sign in.
//
// # Health
//
// Component "graph": healthy once every configured user is covered and
// the last cycle's requests succeeded (throttling is not a failure);
// otherwise the detail names the users without a sign-in, or the Graph
// failure, which is logged once per outage.
package graphsource
