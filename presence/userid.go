package presence

import (
	"fmt"
	"strings"
)

// UserID is an Entra object id in its one canonical form: the 36-character
// GUID text in lower case. Ids enter the program in any case (a
// configuration file, the add-on's options, a message body); each entry point
// normalises them with ParseUserID or CanonicalUserID, so that every map and
// topic keyed by a user agrees.
type UserID string

// ParseUserID validates s as a GUID and returns it in canonical form.
func ParseUserID(s string) (UserID, error) {
	if !IsGUID(s) {
		return "", fmt.Errorf("%q is not a GUID", truncate(s))
	}
	return UserID(lowerASCII(s)), nil
}

// CanonicalUserID lower-cases s without validating it (allocating only when
// it has upper-case letters). Configuration decoding uses it so that Validate
// can still report a malformed id with its key path.
func CanonicalUserID(s string) UserID { return UserID(lowerASCII(strings.TrimSpace(s))) }

// Valid reports whether id is a GUID.
func (id UserID) Valid() bool { return IsGUID(string(id)) }

// String returns the id's text.
func (id UserID) String() string { return string(id) }

// UnmarshalText normalises an id read from a configuration file or options
// (YAML, JSON). It never fails: validation is the configuration's job.
func (id *UserID) UnmarshalText(b []byte) error {
	*id = CanonicalUserID(string(b))
	return nil
}
