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
//   - Webhook: the http.Handler of POST /notifications.
package notify
