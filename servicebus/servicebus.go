// Package servicebus holds what both programs need of Azure Service Bus: the
// classification of its failures and the SDK client options. The bridge's
// source lives in sbsource and the poller's publisher and management client
// on the poller's side, so that neither program pulls in the other's core.
// sbtest is the AMQP 1.0 stand-in broker the tests of both run against.
package servicebus

import (
	"errors"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/go-amqp"
)

// Failure is what kind of failure a Service Bus error is; each kind has its
// own log text, status detail and retry policy.
type Failure uint8

// Failure kinds.
const (
	// FailConnection: the namespace cannot be reached or the link broke;
	// retried with exponential back-off.
	FailConnection Failure = iota + 1
	// FailNotFound: the entity does not exist or is disabled; a
	// configuration problem, retried slowly.
	FailNotFound
	// FailUnauthorized: the key is wrong or lacks the rights; a
	// configuration problem, retried slowly.
	FailUnauthorized
)

// Classify tells what kind of failure err is.
func Classify(err error) Failure {
	var sbErr *azservicebus.Error
	if errors.As(err, &sbErr) {
		switch sbErr.Code {
		case azservicebus.CodeUnauthorizedAccess:
			return FailUnauthorized
		case azservicebus.CodeNotFound:
			return FailNotFound
		}
	}
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) {
		switch amqpErr.Condition {
		case amqp.ErrCondNotFound, "com.microsoft:entity-disabled":
			return FailNotFound
		case amqp.ErrCondUnauthorizedAccess:
			return FailUnauthorized
		}
	}
	return FailConnection
}

// ClientOptions are the SDK client options both programs use: short SDK
// retries, because each program retries on its own with back-off and
// reports the outage.
func ClientOptions() *azservicebus.ClientOptions {
	return &azservicebus.ClientOptions{
		RetryOptions: azservicebus.RetryOptions{MaxRetries: 2, RetryDelay: 500 * time.Millisecond, MaxRetryDelay: 5 * time.Second},
	}
}
