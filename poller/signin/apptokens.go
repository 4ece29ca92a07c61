package signin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"

	"github.com/presence-bridge/presence-bridge/poller"
)

// GraphDefaultScope asks for the application permissions an admin granted
// the app on Microsoft Graph (Presence.Read.All for app-only tenants).
const GraphDefaultScope = "https://graph.microsoft.com/.default"

// AppTokensOptions configure AppTokens.
type AppTokensOptions struct {
	// Authority is the configured authority (https://<host>/<tenant>); the
	// app tokens of tenant T come from https://<host>/T.
	Authority  string
	ClientID   string
	Credential Credential
	// Scope defaults to GraphDefaultScope.
	Scope             string
	HTTPClient        *http.Client
	InstanceDiscovery bool
}

// AppTokens acquires the app's own Graph tokens (the client credentials
// grant), one MSAL client per tenant of entra.app_only_tenants, each
// keeping its token in memory until it nears expiry.
type AppTokens struct {
	o    AppTokensOptions
	host string
	cred confidential.Credential

	mu      sync.Mutex
	clients map[string]*appClient
}

type appClient struct {
	mu  sync.Mutex // one acquisition at a time per tenant
	app confidential.Client
}

var _ poller.AppTokenSource = (*AppTokens)(nil)

// NewAppTokens makes an AppTokens; nothing is fetched until the first use.
func NewAppTokens(o AppTokensOptions) (*AppTokens, error) {
	u, err := url.Parse(o.Authority)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("signin: authority %q is not an https URL", o.Authority)
	}
	if o.Scope == "" {
		o.Scope = GraphDefaultScope
	}
	cred, err := o.Credential.msal()
	if err != nil {
		return nil, fmt.Errorf("signin: credential: %w", err)
	}
	return &AppTokens{o: o, host: u.Scheme + "://" + u.Host, cred: cred, clients: map[string]*appClient{}}, nil
}

func (t *AppTokens) client(tenantID string) (*appClient, error) {
	key := strings.ToLower(tenantID)
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.clients[key]; c != nil {
		return c, nil
	}
	opts := []confidential.Option{confidential.WithInstanceDiscovery(t.o.InstanceDiscovery)}
	if t.o.HTTPClient != nil {
		opts = append(opts, confidential.WithHTTPClient(t.o.HTTPClient))
	}
	app, err := confidential.New(t.host+"/"+url.PathEscape(tenantID), t.o.ClientID, t.cred, opts...)
	if err != nil {
		return nil, fmt.Errorf("signin: msal client for tenant %s: %w", tenantID, err)
	}
	c := &appClient{app: app}
	t.clients[key] = c
	return c, nil
}

// AppToken returns the app's Graph token for the tenant, from memory while
// it is valid. A refusal (the admin has not consented, the credential is
// wrong) is an *EntraError without tokens or secrets in its text.
func (t *AppTokens) AppToken(ctx context.Context, tenantID string) (string, error) {
	c, err := t.client(tenantID)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := c.app.AcquireTokenByCredential(ctx, []string{t.o.Scope})
	if err != nil {
		return "", fmt.Errorf("signin: app token for tenant %s: %w", tenantID, classify(err))
	}
	return res.AccessToken, nil
}
