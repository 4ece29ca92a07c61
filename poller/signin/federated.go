package signin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/managedidentity"
)

// TokenExchangeAudience is the audience Entra expects of a federated
// credential's token in Azure's public cloud.
const TokenExchangeAudience = "api://AzureADTokenExchange"

// ManagedIdentityAssertion is a federated credential backed by the Azure
// managed identity of the host (the Function App): it asks the identity
// endpoint the platform provides for a token with TokenExchangeAudience,
// which the app registration trusts through a federated identity
// credential naming that identity, so no secret or certificate exists
// anywhere. id is "system" for the system-assigned identity, or the client
// id of a user-assigned one. MSAL finds the endpoint in the environment the
// platform sets (IDENTITY_ENDPOINT and IDENTITY_HEADER on App Service and
// Functions, IMDS on a virtual machine) and keeps the token until it nears
// expiry.
func ManagedIdentityAssertion(id string, httpClient *http.Client) (func(context.Context) (string, error), error) {
	var mid managedidentity.ID = managedidentity.SystemAssigned()
	if !strings.EqualFold(id, "system") {
		mid = managedidentity.UserAssignedClientID(id)
	}
	var opts []managedidentity.ClientOption
	if httpClient != nil {
		opts = append(opts, managedidentity.WithHTTPClient(httpClient))
	}
	client, err := managedidentity.New(mid, opts...)
	if err != nil {
		return nil, fmt.Errorf("signin: managed identity: %w", err)
	}
	return func(ctx context.Context) (string, error) {
		res, err := client.AcquireToken(ctx, TokenExchangeAudience)
		if err != nil {
			// MSAL's text repeats the endpoint's reply, which holds no
			// token when it failed; keep only its first line.
			msg, _, _ := strings.Cut(err.Error(), "\n")
			return "", fmt.Errorf("signin: managed identity token: %s", msg)
		}
		return res.AccessToken, nil
	}, nil
}

// FileAssertion is a federated credential read from a file on every use
// (a token the platform rotates in place, as Kubernetes workload identity
// does with AZURE_FEDERATED_TOKEN_FILE).
func FileAssertion(path string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("signin: client assertion file: %w", err)
		}
		tok := string(bytes.TrimSpace(b))
		if tok == "" {
			return "", errors.New("signin: client assertion file is empty")
		}
		return tok, nil
	}
}
