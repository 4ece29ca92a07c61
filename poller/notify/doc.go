// Package notify is presence-poller's side of Microsoft Graph change
// notifications on presence (issue 10, SPEC §9 POST /notifications): a
// change reaches Service Bus about a second after Teams shows it, instead
// of up to a poll interval later.
//
// Parts:
//
//   - KeyRing: the RSA keys (2,048 bits, self-signed certificates) rich
//     notifications are encrypted to, kept in the store sealed with
//     secret_key like the token caches, rotated every DefaultRotateEvery;
//     a superseded key stays until no subscription uses it and Graph's
//     retries of notifications encrypted to it are over (DefaultKeepFor).
//   - Key.Decrypt: RSA-OAEP (SHA-1) on dataKey, HMAC-SHA256 of the data
//     checked against dataSignature before anything is decrypted, then
//     AES-256-CBC with PKCS #7 and the key's first 16 bytes as IV.
//   - Parse: the notification collection, with bounds on everything.
//   - TokenValidator: the validationTokens of rich notifications (JWTs the
//     authority signed for this app, issued to Graph's publisher).
//   - Manager: one subscription per signed-in person, created after
//     sign-in and whenever one is missing, renewed before it expires,
//     recreated after it lapses, moved to the current key, deleted when
//     the person is removed; the reason a person has none is kept for the
//     accounts listing, and such a person is polled.
//   - Webhook: the http.Handler of POST /notifications. It answers Graph
//     once a notification passed the cheap checks (validation tokens,
//     subscription, clientState, certificate id) and is stored in the
//     person's record as received (poller.Engine.Receive); its workers
//     then decrypt, apply in sequenceNumber order and publish
//     (Engine.Process), so that answers stay fast at any rate: RSA
//     decryption is the costly part (1.6-1.9 ms per notification on a
//     small VM).
//
// Decisions where Graph's documentation or the specification is silent:
// validation tokens are checked only when a batch carries them (clientState
// and the HMAC under our own key protect the rest); the issuer's host is
// not pinned, its tenant must match (the signature by the authority's keys
// proves the origin); a reauthorizationRequired is answered with a renewal
// (PATCH), which Graph documents as reauthorizing too and which pushes the
// next renewal back; a notification without a sequenceNumber, or without
// resource data, makes the person be read instead of being trusted.
package notify
