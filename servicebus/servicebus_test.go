package servicebus

import (
	"errors"
	"fmt"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/go-amqp"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want Failure
	}{
		{"amqp not found on attach", &amqp.Error{Condition: amqp.ErrCondNotFound}, FailNotFound},
		{"entity disabled", &amqp.Error{Condition: "com.microsoft:entity-disabled"}, FailNotFound},
		{"amqp unauthorized", fmt.Errorf("x: %w", &amqp.Error{Condition: amqp.ErrCondUnauthorizedAccess}), FailUnauthorized},
		{"sdk unauthorized", &azservicebus.Error{Code: azservicebus.CodeUnauthorizedAccess}, FailUnauthorized},
		{"sdk not found", &azservicebus.Error{Code: azservicebus.CodeNotFound}, FailNotFound},
		{"connection lost", &azservicebus.Error{Code: azservicebus.CodeConnectionLost}, FailConnection},
		{"anything else", errors.New("dial tcp: connection refused"), FailConnection},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.err); got != c.want {
				t.Errorf("Classify(%v) = %d, want %d", c.err, got, c.want)
			}
		})
	}
}
