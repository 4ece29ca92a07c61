package poller

import (
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// Subscription is what the store keeps of a person's Microsoft Graph
// change-notification subscription on their presence (poller/notify makes,
// renews and checks them). The clientState itself is never stored: Graph
// echoes it on every notification, and only its SHA-256 is needed to check
// it.
type Subscription struct {
	UserID   presence.UserID `json:"userId"`
	TenantID string          `json:"tenantId"`
	// ID is Graph's subscription id; empty while none exists (being
	// created, or creation failed).
	ID string `json:"id,omitempty"`
	// ClientStateHash is the base64url SHA-256 of the subscription's
	// clientState. It is written before Graph is asked to create the
	// subscription, so a notification that arrives before the id is
	// recorded can still be checked.
	ClientStateHash string `json:"clientStateHash,omitempty"`
	// CertificateID names the key the subscription's rich notifications are
	// encrypted to.
	CertificateID string    `json:"certificateId,omitempty"`
	ExpiresAt     time.Time `json:"expiresAt,omitzero"`
	// RenewedAt is when the subscription was last created or renewed.
	RenewedAt time.Time `json:"renewedAt,omitzero"`
	// Reauthorize is set when Graph asked for reauthorization
	// (reauthorizationRequired): the next pass renews it at once.
	Reauthorize bool `json:"reauthorize,omitempty"`
	// Failure says why the person has no working subscription and is
	// polled instead (the accounts listing shows it); empty when healthy.
	Failure string `json:"failure,omitempty"`
	// Failures counts the failed attempts in a row (the retry back-off).
	Failures int `json:"failures,omitempty"`
	// RetryAt is when a failed creation or renewal is tried again.
	RetryAt time.Time `json:"retryAt,omitzero"`
}

// Healthy tells whether the subscription delivers notifications at now: it
// exists, has not expired, has no failure outstanding and Graph did not
// ask for reauthorization (until which it may hold notifications back).
func (s Subscription) Healthy(now time.Time) bool {
	return s.ID != "" && s.Failure == "" && !s.Reauthorize && now.Before(s.ExpiresAt)
}

// Describe says, for the accounts listing, whether notifications cover the
// person, or why they are polled.
func (s Subscription) Describe(now time.Time) string {
	switch {
	case s.Healthy(now):
		return "subscribed until " + s.ExpiresAt.UTC().Format(time.RFC3339)
	case s.Failure != "":
		return "polled: " + s.Failure
	case s.Reauthorize && now.Before(s.ExpiresAt):
		return "polled: Graph asked to reauthorize the subscription; it is being renewed"
	case s.ID != "":
		return "polled: the subscription lapsed; it is being made again"
	}
	return "polled: the subscription is being made"
}
