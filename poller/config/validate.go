package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/presence-bridge/presence-bridge/internal/yamlconf"
	"github.com/presence-bridge/presence-bridge/presence"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

type problems = yamlconf.Problems

// Validate reports every problem of c, each prefixed with its key path,
// joined.
func (c *Config) Validate() error {
	var p problems
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		p.Add("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if err := listenAddr(c.Listen); err != nil {
		p.Add("listen", "%v", err)
	}
	c.validatePublicURL(&p)
	if c.DataDir == "" && c.Storage.Tables == "" {
		p.Add("data_dir", "required (where the embedded store keeps its file) unless storage.tables is set")
	}
	if c.SecretKey == "" {
		p.Add("secret_key", "required: base64 of 32 random bytes (make one with: openssl rand -base64 32)")
	} else if _, err := decodeKey(c.SecretKey.Value()); err != nil {
		p.Add("secret_key", "%v", err)
	}
	if c.APIKey != "" && len(c.APIKey.Value()) < 16 {
		p.Add("api_key", "too short: at least 16 characters (make one with: openssl rand -base64 24)")
	}
	c.validateEntra(&p)
	c.validateGraph(&p)
	c.validateServiceBus(&p)
	if c.Storage.Tables != "" {
		if err := checkTablesConnectionString(c.Storage.Tables.Value()); err != nil {
			p.Add("storage.tables", "%v", err)
		}
	}
	return p.Err()
}

func (c *Config) validatePublicURL(p *problems) {
	if c.PublicURL == "" {
		p.Add("public_url", "required: the address people open to sign in (https://presence.example.com); the redirect URI is <public_url>/auth/end")
		return
	}
	if err := checkURL(c.PublicURL, true); err != nil {
		p.Add("public_url", "%v", err)
	}
}

// checkURL accepts an absolute https URL, or http for a loopback host
// (tests and the demo), without user info, query or fragment.
func checkURL(s string, allowPath bool) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL: %v", yamlconf.Cause(err))
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q must start with https://", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q has no host", s)
	case u.User != nil:
		return fmt.Errorf("%q must not hold a user name or password", s)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q must not have a query or fragment", s)
	case !allowPath && u.Path != "" && u.Path != "/":
		return fmt.Errorf("%q must not have a path", s)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return fmt.Errorf("%q must use https (plain http only for a loopback host such as 127.0.0.1)", s)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not a port number", port)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) validateEntra(p *problems) {
	e := c.Entra
	if e.Authority == "" {
		p.Add("entra.authority", "required (%s, or https://login.microsoftonline.com/<tenant id or domain>)", DefaultAuthority)
	} else if u, err := url.Parse(e.Authority); err != nil || u.Scheme != "https" || u.Host == "" {
		p.Add("entra.authority", "%q is not an https URL like %s", e.Authority, DefaultAuthority)
	} else if tenant := strings.Trim(u.Path, "/"); tenant == "" || strings.Contains(tenant, "/") {
		p.Add("entra.authority", "%q must end in one tenant: organizations, common, a tenant id or a domain", e.Authority)
	} else if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		p.Add("entra.authority", "%q must not have user info, a query or a fragment", e.Authority)
	}
	if e.ClientID == "" {
		p.Add("entra.client_id", "required: the app registration's Application (client) ID")
	} else if !presence.IsGUID(e.ClientID) {
		p.Add("entra.client_id", "%q is not a GUID (the Application (client) ID looks like 6f1c2a3b-1111-2222-3333-444455556666)", e.ClientID)
	}
	var given []string
	for _, k := range []struct {
		name string
		set  bool
	}{
		{"client_secret", e.ClientSecret != ""}, {"certificate_file", e.CertificateFile != ""},
		{"managed_identity", e.ManagedIdentity != ""}, {"client_assertion_file", e.ClientAssertionFile != ""},
	} {
		if k.set {
			given = append(given, k.name)
		}
	}
	switch {
	case len(given) > 1:
		p.Add("entra."+given[1], "give one credential (client_secret, certificate_file, managed_identity or client_assertion_file), not %s", strings.Join(given, " and "))
	case len(given) == 0:
		p.Add("entra.client_secret", "required: the app registration's client secret (or certificate_file, or a federated credential: managed_identity or client_assertion_file)")
	case e.CertificateFile != "":
		if _, err := os.Stat(e.CertificateFile); err != nil {
			p.Add("entra.certificate_file", "cannot read %s: %v", e.CertificateFile, yamlconf.Cause(err))
		}
	case e.ManagedIdentity != "":
		if !strings.EqualFold(e.ManagedIdentity, "system") && !presence.IsGUID(e.ManagedIdentity) {
			p.Add("entra.managed_identity", "%q is neither system nor the client id (a GUID) of a user-assigned identity", e.ManagedIdentity)
		}
	}
	if e.CertificatePassword != "" && e.CertificateFile == "" {
		p.Add("entra.certificate_password", "needs entra.certificate_file")
	}
	seen := map[string]int{}
	for i, t := range e.AppOnlyTenants {
		path := fmt.Sprintf("entra.app_only_tenants[%d]", i)
		if !presence.IsGUID(t) {
			p.Add(path, "%q is not a tenant id (a GUID)", t)
			continue
		}
		if j, dup := seen[strings.ToLower(t)]; dup {
			p.Add(path, "%s is also entra.app_only_tenants[%d]", t, j)
		}
		seen[strings.ToLower(t)] = i
	}
}

func (c *Config) validateGraph(p *problems) {
	g := c.Graph
	if g.Endpoint == "" {
		p.Add("graph.endpoint", "required (https://graph.microsoft.com)")
	} else if err := checkURL(g.Endpoint, false); err != nil {
		p.Add("graph.endpoint", "%v", err)
	}
	if g.PollInterval.Std() < time.Second {
		p.Add("graph.poll_interval", "%s is too short (at least 1s; 30s keeps a tenant of 700 people under Graph's limit)", g.PollInterval)
	}
	if g.ReconcileInterval.Std() < g.PollInterval.Std() {
		p.Add("graph.reconcile_interval", "%s is shorter than graph.poll_interval (%s)", g.ReconcileInterval, g.PollInterval)
	}
	if g.Heartbeat.Std() < 10*time.Second {
		p.Add("graph.heartbeat", "%s is too short (at least 10s)", g.Heartbeat)
	} else if g.Heartbeat.Std() < g.PollInterval.Std() {
		p.Add("graph.heartbeat", "%s is shorter than graph.poll_interval (%s): a heartbeat goes out at most once a cycle", g.Heartbeat, g.PollInterval)
	}
}

func (c *Config) validateServiceBus(p *problems) {
	sb := c.ServiceBus
	if len(sb.Namespaces) == 0 {
		p.Add("service_bus.namespaces", "at least one namespace is required (a connection string with Manage rights)")
	}
	hosts := map[string]int{}
	for i, ns := range sb.Namespaces {
		path := fmt.Sprintf("service_bus.namespaces[%d]", i)
		if ns.ConnectionString == "" {
			p.Add(path+".connection_string", "required (the namespace's RootManageSharedAccessKey connection string)")
		} else if cs, err := servicebus.ParseConnectionString(ns.ConnectionString.Value()); err != nil {
			p.Add(path+".connection_string", "%v", err)
		} else if cs.EntityPath != "" {
			p.Add(path+".connection_string", "is scoped to the entity %q; give the namespace's own connection string (Manage rights)", cs.EntityPath)
		} else {
			h := strings.ToLower(cs.Host)
			if j, dup := hosts[h]; dup {
				p.Add(path+".connection_string", "names the namespace %s like service_bus.namespaces[%d]", cs.Host, j)
			}
			hosts[h] = i
		}
		if ns.AdminEndpoint != "" {
			if err := checkURL(ns.AdminEndpoint, false); err != nil {
				p.Add(path+".admin_endpoint", "%v", err)
			} else if !strings.HasPrefix(ns.AdminEndpoint, "https://") {
				p.Add(path+".admin_endpoint", "%q must use https: the management API is only spoken over TLS", ns.AdminEndpoint)
			}
		}
	}
	subs := map[string]int{}
	for i, s := range sb.Subscriptions {
		path := fmt.Sprintf("service_bus.subscriptions[%d]", i)
		if !servicebus.ValidEntityName(s) || strings.Contains(s, "/") || len(s) > 50 {
			p.Add(path, "%q is not a subscription name (1–50 letters, digits, . - _)", s)
			continue
		}
		if j, dup := subs[strings.ToLower(s)]; dup {
			p.Add(path, "%q is also service_bus.subscriptions[%d]", s, j)
		}
		subs[strings.ToLower(s)] = i
	}
	if sb.WorkQueue != "" && (!servicebus.ValidEntityName(sb.WorkQueue) || strings.Contains(sb.WorkQueue, "/")) {
		p.Add("service_bus.work_queue", "%q is not a queue name (letters, digits, . - _)", sb.WorkQueue)
	}
}

func checkTablesConnectionString(s string) error {
	fields := map[string]string{}
	for part := range strings.SplitSeq(s, ";") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return fmt.Errorf("not a storage connection string (want DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…)")
		}
		fields[strings.ToLower(k)] = v
	}
	if fields["accountname"] == "" && fields["tableendpoint"] == "" {
		return fmt.Errorf("needs AccountName (or TableEndpoint)")
	}
	if fields["accountkey"] == "" && fields["sharedaccesssignature"] == "" {
		return fmt.Errorf("needs AccountKey (or SharedAccessSignature)")
	}
	return nil
}

// listenAddr checks the listen address: host:port, required.
func listenAddr(s string) error {
	if s == "" {
		return fmt.Errorf("required (host:port, for example 127.0.0.1:8080)")
	}
	return yamlconf.HostPort(s, true)
}
