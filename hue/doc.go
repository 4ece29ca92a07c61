// Package hue drives Philips Hue groups (rooms, zones) from users' Teams
// presence over the bridge's local API v1 (SPEC §3 "hue", §5).
//
// # How it works
//
// Apply never waits for a Hue bridge: it records each group's desired Look
// (colour per SPEC §5, the busiest user of the group winning) and wakes the
// bridge's goroutine. One goroutine per bridge (Run) sends group actions:
//
//   - at most one command per min_interval per bridge, all groups together,
//     measured from the end of the previous command so that two commands
//     never reach the bridge closer than that; changes in between coalesce
//     and the last one wins; the group commanded least recently goes first;
//   - only what changed: nothing when the lamps already show the look,
//     colour fields only when they differ from the last ones the bridge
//     accepted, and "on" with every look that is on (a lamp shared with
//     another group, or switched off by hand, may be off);
//   - mode always drives, off never does, auto drives only while Home
//     Assistant is absent (no MQTT, or its last homeassistant/status was
//     offline, or none seen since connecting). Taking control sends every
//     group's current look once; handing back stops sending;
//   - group names resolve to ids at start and again whenever a command finds
//     its group gone (error type 3) or a name was not found; a name the
//     bridge does not have is reported with the list of the groups it has;
//   - failures back off exponentially with jitter, per bridge, capped at one
//     minute (429, 5xx, time-outs, connection errors) or ten minutes (the
//     key is rejected: error type 1, logged and reported once, fixed only by
//     `presence-bridge hue pair`). The "hue" health component carries the
//     problem. An error that retrying cannot fix (invalid value) is logged
//     and that look is not retried.
//
// # Why net/http and not huego
//
// The project's Hue library is github.com/amimof/huego v1.2.1 (its source:
// https://github.com/amimof/huego, bridge.go, group.go and light.go). Its
// defects, each demonstrated by huego_test.go, and how each is kept from
// users:
//
//   - It sends every request through http.DefaultClient and reads no HTTP
//     status code: a 429 or 503 cannot be told from a reply, no HTTP client
//     can be injected (tests under testing/synctest need an in-memory one)
//     and no transport time-out set except by changing process-wide state.
//     This holds for every endpoint, so this package calls all three it
//     uses (GET /groups and /lights, PUT /groups/<id>/action, POST /api)
//     with net/http through Client: an injected *http.Client, a time-out
//     through the context of every call, status codes checked
//     (TestHuegoIgnoresStatusCodes, TestClientTimesOut,
//     TestClientUsesInjectedHTTPClient).
//   - State.On has no omitempty, so State{Bri: 100} switches a group off,
//     and every command carries "on". Action has pointer fields: "on" is
//     sent only when meant (TestActionNeverSendsUnintendedOff).
//   - hue 0, sat 0 and transitiontime 0 cannot be sent (omitempty on
//     values). Action's pointers send zeros (TestActionSendsZeroValues).
//   - Group.On/Off panic on a group that was not fetched. Not used: Group
//     here is plain data (TestHuegoGroupOnPanicsWhenNotFetched).
//   - An error object without "address" panics the client (unchecked type
//     assertions). Error objects are decoded without assertions; table
//     tests, TestHuegoPanicsOnErrorWithoutAddress and FuzzParseReplies
//     prove no reply panics.
//   - A host without a scheme is rewritten in place (a data race when
//     shared). ParseHost builds an explicit http:// URL once and Client
//     never changes it (TestHuegoRewritesHostInPlace,
//     TestClientConcurrentUseNoRace under -race).
//   - Discovery calls an internet service. Not used: the host is configured.
//
// huego stays a test-only dependency: huego_test.go shows each defect
// against the fake bridge so the reasons above remain checked facts.
//
// Secrets: the API key is part of every URL; errors carry the URL with the
// key replaced by <redacted> (TestErrorsNeverCarryTheKey).
package hue
