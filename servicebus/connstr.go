package servicebus

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ConnectionString is a Service Bus connection string taken apart. Its
// String never shows the key.
type ConnectionString struct {
	// Host is the namespace's host[:port] (contoso.servicebus.windows.net,
	// or 127.0.0.1:5672 for an emulator).
	Host string
	// KeyName and Key are the SAS rule and its key; SharedAccessSignature a
	// ready-made token instead.
	KeyName, Key          string
	SharedAccessSignature string
	// EntityPath scopes the string to one entity (a topic-level key).
	EntityPath string
	// Emulator is UseDevelopmentEmulator=true: plain AMQP, no TLS.
	Emulator bool
}

// ParseConnectionString reads Endpoint=sb://…;SharedAccessKeyName=…;
// SharedAccessKey=…[;EntityPath=…][;UseDevelopmentEmulator=true]. Its errors
// never repeat the string (it holds a key).
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	var endpoint string
	for part := range strings.SplitSeq(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return cs, errors.New("not a Service Bus connection string (want Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…)")
		}
		switch strings.ToLower(k) {
		case "endpoint":
			endpoint = v
		case "sharedaccesskeyname":
			cs.KeyName = v
		case "sharedaccesskey":
			cs.Key = v
		case "sharedaccesssignature":
			cs.SharedAccessSignature = v
		case "entitypath":
			cs.EntityPath = v
		case "usedevelopmentemulator":
			cs.Emulator = strings.EqualFold(v, "true")
		}
	}
	if endpoint == "" {
		return cs, errors.New("has no Endpoint=sb://<namespace>.servicebus.windows.net/")
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "sb" || u.Host == "" {
		return cs, errors.New("endpoint must look like sb://<namespace>.servicebus.windows.net/")
	}
	cs.Host = u.Host
	if cs.SharedAccessSignature == "" && (cs.KeyName == "" || cs.Key == "") {
		return cs, errors.New("needs SharedAccessKeyName and SharedAccessKey (or SharedAccessSignature)")
	}
	return cs, nil
}

// String describes the connection string without its key.
func (c ConnectionString) String() string {
	s := fmt.Sprintf("sb://%s/ key %s", c.Host, c.KeyName)
	if c.EntityPath != "" {
		s += " entity " + c.EntityPath
	}
	return s
}

// EntityConnectionString is the text of a connection string for one entity
// of this namespace with another SAS rule: what a household puts in the
// bridge's users[].connection_string. It keeps UseDevelopmentEmulator.
func (c ConnectionString) EntityConnectionString(entity, keyName, key string) string {
	s := fmt.Sprintf("Endpoint=sb://%s/;SharedAccessKeyName=%s;SharedAccessKey=%s;EntityPath=%s", c.Host, keyName, key, entity)
	if c.Emulator {
		s += ";UseDevelopmentEmulator=true"
	}
	return s
}

// ValidEntityName reports whether s can name a Service Bus entity (a topic,
// queue or subscription, or a <topic>/Subscriptions/<name> path): letters,
// digits and . - _ /, at most 260 characters.
func ValidEntityName(s string) bool {
	if s == "" || len(s) > 260 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(".-_/", r)) {
			return false
		}
	}
	return true
}
