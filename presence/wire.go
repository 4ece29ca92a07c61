package presence

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxBodySize is the largest message body accepted (64 KiB).
const MaxBodySize = 64 << 10

// Version is the wire format version this package writes.
const Version = 1

// Reason classifies why a message was rejected; it is the dead-letter reason.
type Reason string

// Rejection reasons, used verbatim as Service Bus dead-letter reasons.
const (
	ReasonInvalidJSON  Reason = "InvalidJSON"
	ReasonMissingField Reason = "MissingField"
	ReasonInvalidField Reason = "InvalidField"
	ReasonTooLarge     Reason = "TooLarge"
	ReasonUserMismatch Reason = "UserMismatch"
)

// DecodeError is a rejected message. Its text names the field and the problem
// but never repeats the body.
type DecodeError struct {
	Reason Reason
	Field  string // the offending field, when there is one
	Detail string
}

func (e *DecodeError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.Reason, e.Detail)
	}
	return fmt.Sprintf("%s: %s: %s", e.Reason, e.Field, e.Detail)
}

// ReasonOf returns the rejection reason of err, or "" when err is not a
// DecodeError.
func ReasonOf(err error) Reason {
	var de *DecodeError
	if errors.As(err, &de) {
		return de.Reason
	}
	return ""
}

// Meta is what the transport knows about a message besides its body.
type Meta struct {
	// EnqueuedTime orders legacy bodies, which carry no timestamp.
	EnqueuedTime time.Time
}

// wireBody holds both body shapes. encoding/json matches keys without regard
// to case, so "ObjectId" and "availability" from either shape land here.
type wireBody struct {
	Version       int    `json:"version"` // -1 when absent
	UserID        string `json:"userId"`
	ObjectID      string `json:"ObjectId"` // legacy
	TenantID      string `json:"tenantId"`
	UPN           string `json:"upn"`
	Availability  string `json:"availability"`
	Activity      string `json:"activity"`
	StatusMessage string `json:"statusMessage"`
	OutOfOffice   bool   `json:"outOfOffice"`
	Sequence      string `json:"sequence"`
	ObservedAt    string `json:"observedAt"`
	ExpiresAt     string `json:"expiresAt"`
}

// Decode parses a message body in the version 1 wire format, or in the legacy
// body of the original poller ({"ObjectId","Upn","Availability","Activity"},
// ordered by meta.EnqueuedTime). Unknown availability or activity values
// decode to PresenceUnknown, with the raw text kept in UnknownAvailability or
// UnknownActivity. Failures are *DecodeError.
func Decode(body []byte, meta Meta) (Update, error) {
	if len(body) > MaxBodySize {
		return Update{}, &DecodeError{Reason: ReasonTooLarge, Detail: fmt.Sprintf("body is %d bytes, the limit is %d", len(body), MaxBodySize)}
	}
	if !utf8.Valid(body) {
		return Update{}, &DecodeError{Reason: ReasonInvalidJSON, Detail: "body is not valid UTF-8"}
	}
	w := wireBody{Version: -1}
	if err := json.Unmarshal(body, &w); err != nil {
		return Update{}, jsonError(err)
	}
	if w.UserID == "" && w.ObjectID != "" {
		return decodeLegacy(&w, meta)
	}
	return decodeV1(&w)
}

func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return &DecodeError{Reason: ReasonInvalidField, Field: te.Field, Detail: "want a JSON " + jsonKind(te.Type.Kind().String()) + ", got " + te.Value}
	}
	if errors.As(err, &te) {
		return &DecodeError{Reason: ReasonInvalidJSON, Detail: "body is not a JSON object"}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &DecodeError{Reason: ReasonInvalidJSON, Detail: fmt.Sprintf("%v (at byte %d)", se, se.Offset)}
	}
	return &DecodeError{Reason: ReasonInvalidJSON, Detail: err.Error()}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "ptr", "string":
		return "string"
	case "bool":
		return "boolean"
	case "int":
		return "integer"
	}
	return goKind
}

func decodeV1(w *wireBody) (Update, error) {
	if w.Version != -1 && w.Version != Version {
		return Update{}, &DecodeError{Reason: ReasonInvalidField, Field: "version", Detail: fmt.Sprintf("unsupported version %d, want %d", w.Version, Version)}
	}
	id, err := userID("userId", w.UserID)
	if err != nil {
		return Update{}, err
	}
	u := Update{
		UserID:        id,
		TenantID:      w.TenantID,
		UPN:           w.UPN,
		StatusMessage: w.StatusMessage,
		OutOfOffice:   w.OutOfOffice,
		Sequence:      w.Sequence,
	}
	if err := u.setPresence("availability", w.Availability, w.Activity); err != nil {
		return Update{}, err
	}
	if w.ObservedAt == "" {
		return Update{}, &DecodeError{Reason: ReasonMissingField, Field: "observedAt", Detail: "required"}
	}
	if u.ObservedAt, err = parseTime("observedAt", w.ObservedAt); err != nil {
		return Update{}, err
	}
	if w.ExpiresAt != "" {
		if u.ExpiresAt, err = parseTime("expiresAt", w.ExpiresAt); err != nil {
			return Update{}, err
		}
	}
	return u, nil
}

func decodeLegacy(w *wireBody, meta Meta) (Update, error) {
	id, err := userID("ObjectId", w.ObjectID)
	if err != nil {
		return Update{}, err
	}
	if meta.EnqueuedTime.IsZero() {
		return Update{}, &DecodeError{Reason: ReasonMissingField, Field: "enqueuedTime", Detail: "a legacy body is ordered by the message's enqueued time, which is missing"}
	}
	u := Update{UserID: id, UPN: w.UPN, ObservedAt: meta.EnqueuedTime.UTC(), Legacy: true}
	if err := u.setPresence("Availability", w.Availability, w.Activity); err != nil {
		return Update{}, err
	}
	return u, nil
}

func (u *Update) setPresence(availKey, avail, act string) error {
	if avail == "" {
		return &DecodeError{Reason: ReasonMissingField, Field: availKey, Detail: "required"}
	}
	var ok bool
	if u.Availability, ok = ParseAvailability(avail); !ok {
		u.UnknownAvailability = truncate(avail)
	}
	if act != "" {
		if u.Activity, ok = ParseActivity(act); !ok {
			u.UnknownActivity = truncate(act)
		}
	}
	return nil
}

// truncate keeps an unknown value short enough to log.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

func userID(key, v string) (UserID, error) {
	if v == "" {
		return "", &DecodeError{Reason: ReasonMissingField, Field: key, Detail: "required"}
	}
	id, err := ParseUserID(v)
	if err != nil {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: key, Detail: err.Error()}
	}
	return id, nil
}

func parseTime(key, v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, &DecodeError{Reason: ReasonInvalidField, Field: key, Detail: fmt.Sprintf("%q is not an RFC 3339 time", truncate(v))}
	}
	return t.UTC(), nil
}

// IsGUID reports whether s is a GUID in its 36-character text form
// (8-4-4-4-12 hexadecimal digits), as Entra object ids are.
func IsGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// lowerASCII lower-cases s, allocating only when it has upper-case letters.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// CheckUser rejects an update that belongs to another user than the one
// whose topic carried it (ReasonUserMismatch).
func CheckUser(u Update, userID UserID) error {
	if CanonicalUserID(string(u.UserID)) == CanonicalUserID(string(userID)) {
		return nil
	}
	return &DecodeError{Reason: ReasonUserMismatch, Field: "userId", Detail: fmt.Sprintf("message is for user %s but came through the topic of user %s", u.UserID, userID)}
}

type wireOut struct {
	Version       int    `json:"version"`
	UserID        string `json:"userId"`
	TenantID      string `json:"tenantId,omitempty"`
	UPN           string `json:"upn,omitempty"`
	Availability  string `json:"availability"`
	Activity      string `json:"activity,omitempty"`
	StatusMessage string `json:"statusMessage,omitempty"`
	OutOfOffice   bool   `json:"outOfOffice,omitempty"`
	Sequence      string `json:"sequence,omitempty"`
	ObservedAt    string `json:"observedAt"`
	ExpiresAt     string `json:"expiresAt,omitempty"`
}

// Encode writes u in the version 1 wire format. It refuses an update that
// Decode would reject.
func Encode(u Update) ([]byte, error) {
	if !u.UserID.Valid() {
		return nil, fmt.Errorf("presence: encode: user id %q is not a GUID", u.UserID)
	}
	if u.ObservedAt.IsZero() {
		return nil, errors.New("presence: encode: observedAt is required")
	}
	out := wireOut{
		Version:       Version,
		UserID:        string(CanonicalUserID(string(u.UserID))),
		TenantID:      u.TenantID,
		UPN:           u.UPN,
		Availability:  u.Availability.String(),
		Activity:      u.Activity.String(),
		StatusMessage: u.StatusMessage,
		OutOfOffice:   u.OutOfOffice,
		Sequence:      u.Sequence,
		ObservedAt:    u.ObservedAt.UTC().Format(time.RFC3339Nano),
	}
	if !u.ExpiresAt.IsZero() {
		out.ExpiresAt = u.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("presence: encode: %w", err)
	}
	if len(b) > MaxBodySize {
		return nil, fmt.Errorf("presence: encode: body is %d bytes, the limit is %d", len(b), MaxBodySize)
	}
	return b, nil
}

// Compare orders next against last, the last update applied for the same
// user: it returns a positive number when next is newer and must be applied,
// zero for a duplicate, and a negative number when next is stale.
//
// When both carry a sequence, the sequence decides; equal sequences are the
// same presence version, and a newer observedAt then makes next a heartbeat
// (positive). Otherwise observedAt (a legacy body's enqueued time) decides.
func Compare(last, next Update) int {
	if last.Sequence != "" && next.Sequence != "" {
		if c := compareSequence(last.Sequence, next.Sequence); c != 0 {
			return -c
		}
		if next.ObservedAt.After(last.ObservedAt) {
			return 1
		}
		return 0
	}
	return next.ObservedAt.Compare(last.ObservedAt)
}

// compareSequence compares Graph sequence numbers. They are documented as
// sortable strings; when both are decimal digits of different lengths the
// shorter one is the smaller number, which plain string order would get wrong.
func compareSequence(a, b string) int {
	if len(a) != len(b) && allDigits(a) && allDigits(b) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
