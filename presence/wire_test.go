package presence

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const alex = "6f1c2a3b-1111-2222-3333-444455556666"

var enqueued = time.Date(2026, 11, 26, 20, 0, 5, 0, time.UTC)

func TestDecodeV1(t *testing.T) {
	body := `{
  "version": 1,
  "userId": "6F1C2A3B-1111-2222-3333-444455556666",
  "tenantId": "72f988bf-0000-0000-0000-000000000000",
  "upn": "alex@contoso.com",
  "availability": "Busy",
  "activity": "InACall",
  "statusMessage": "Back at 3",
  "outOfOffice": true,
  "sequence": "638680000000000000",
  "observedAt": "2026-11-26T20:00:00.123Z",
  "expiresAt": "2026-11-26T21:15:00+01:00",
  "somethingNew": {"ignored": true}
}`
	got, err := Decode([]byte(body), Meta{EnqueuedTime: enqueued})
	if err != nil {
		t.Fatal(err)
	}
	want := Update{
		UserID:        alex,
		TenantID:      "72f988bf-0000-0000-0000-000000000000",
		UPN:           "alex@contoso.com",
		Availability:  AvailabilityBusy,
		Activity:      ActivityInACall,
		StatusMessage: "Back at 3",
		OutOfOffice:   true,
		Sequence:      "638680000000000000",
		ObservedAt:    time.Date(2026, 11, 26, 20, 0, 0, 123e6, time.UTC),
		ExpiresAt:     time.Date(2026, 11, 26, 20, 15, 0, 0, time.UTC),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}
}

func TestDecodeMinimalAndCaseInsensitive(t *testing.T) {
	body := `{"userId":"` + alex + `","availability":"doNotDisturb","activity":"PRESENTING","observedAt":"2026-11-26T20:00:00Z"}`
	got, err := Decode([]byte(body), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Availability != AvailabilityDoNotDisturb || got.Activity != ActivityPresenting {
		t.Errorf("got %v/%v, want DoNotDisturb/Presenting", got.Availability, got.Activity)
	}
	if !got.ExpiresAt.IsZero() || got.Sequence != "" || got.Legacy {
		t.Errorf("optional fields set: %+v", got)
	}
}

func TestDecodeUnknownValuesAreNotErrors(t *testing.T) {
	body := `{"userId":"` + alex + `","availability":"Sleeping","activity":"Dreaming","observedAt":"2026-11-26T20:00:00Z"}`
	got, err := Decode([]byte(body), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Availability != AvailabilityPresenceUnknown || got.Activity != ActivityPresenceUnknown {
		t.Errorf("got %v/%v, want PresenceUnknown twice", got.Availability, got.Activity)
	}
	if got.UnknownAvailability != "Sleeping" || got.UnknownActivity != "Dreaming" {
		t.Errorf("raw values not kept: %q %q", got.UnknownAvailability, got.UnknownActivity)
	}
}

func TestDecodeLegacy(t *testing.T) {
	body := `{"PartitionKey":"p","RowKey":"r","Timestamp":"2020-01-01T00:00:00Z","ETag":"W/x",
"ObjectId":"` + alex + `","Upn":"alex@contoso.com","Availability":"Away","Activity":"Away"}`
	got, err := Decode([]byte(body), Meta{EnqueuedTime: enqueued})
	if err != nil {
		t.Fatal(err)
	}
	want := Update{UserID: alex, UPN: "alex@contoso.com", Availability: AvailabilityAway, Activity: ActivityAway, ObservedAt: enqueued, Legacy: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("legacy (-want +got):\n%s", diff)
	}
}

func TestDecodeRejects(t *testing.T) {
	v1 := func(fields string) string {
		return `{"userId":"` + alex + `","availability":"Busy","observedAt":"2026-11-26T20:00:00Z"` + fields + `}`
	}
	tests := []struct {
		name   string
		body   string
		meta   Meta
		reason Reason
		field  string
	}{
		{"empty", ``, Meta{}, ReasonInvalidJSON, ""},
		{"not json", `hello`, Meta{}, ReasonInvalidJSON, ""},
		{"truncated", `{"userId":"` + alex, Meta{}, ReasonInvalidJSON, ""},
		{"array", `[1,2]`, Meta{}, ReasonInvalidJSON, ""},
		{"string", `"Busy"`, Meta{}, ReasonInvalidJSON, ""},
		{"trailing garbage", v1(``) + `x`, Meta{}, ReasonInvalidJSON, ""},
		{"invalid utf8", "{\"userId\":\"\xff\"}", Meta{}, ReasonInvalidJSON, ""},
		{"null", `null`, Meta{}, ReasonMissingField, "userId"},
		{"empty object", `{}`, Meta{}, ReasonMissingField, "userId"},
		{"no availability", `{"userId":"` + alex + `","observedAt":"2026-11-26T20:00:00Z"}`, Meta{}, ReasonMissingField, "availability"},
		{"empty availability", `{"userId":"` + alex + `","availability":"","observedAt":"2026-11-26T20:00:00Z"}`, Meta{}, ReasonMissingField, "availability"},
		{"no observedAt", `{"userId":"` + alex + `","availability":"Busy"}`, Meta{}, ReasonMissingField, "observedAt"},
		{"user id not a guid", `{"userId":"alex@contoso.com","availability":"Busy","observedAt":"2026-11-26T20:00:00Z"}`, Meta{}, ReasonInvalidField, "userId"},
		{"user id a number", `{"userId":42,"availability":"Busy","observedAt":"2026-11-26T20:00:00Z"}`, Meta{}, ReasonInvalidField, "userId"},
		{"availability a number", `{"userId":"` + alex + `","availability":3,"observedAt":"2026-11-26T20:00:00Z"}`, Meta{}, ReasonInvalidField, "availability"},
		{"bad observedAt", `{"userId":"` + alex + `","availability":"Busy","observedAt":"yesterday"}`, Meta{}, ReasonInvalidField, "observedAt"},
		{"observedAt without zone", `{"userId":"` + alex + `","availability":"Busy","observedAt":"2026-11-26T20:00:00"}`, Meta{}, ReasonInvalidField, "observedAt"},
		{"bad expiresAt", v1(`,"expiresAt":"soon"`), Meta{}, ReasonInvalidField, "expiresAt"},
		{"outOfOffice a string", v1(`,"outOfOffice":"yes"`), Meta{}, ReasonInvalidField, "outOfOffice"},
		{"sequence a number", v1(`,"sequence":12`), Meta{}, ReasonInvalidField, "sequence"},
		{"version 2", v1(`,"version":2`), Meta{}, ReasonInvalidField, "version"},
		{"version a string", v1(`,"version":"1"`), Meta{}, ReasonInvalidField, "version"},
		{"version fraction", v1(`,"version":1.5`), Meta{}, ReasonInvalidField, "version"},
		{"too large", v1(`,"statusMessage":"` + strings.Repeat("a", MaxBodySize) + `"`), Meta{}, ReasonTooLarge, ""},
		{"legacy without enqueued time", `{"ObjectId":"` + alex + `","Availability":"Busy"}`, Meta{}, ReasonMissingField, "enqueuedTime"},
		{"legacy bad object id", `{"ObjectId":"nope","Availability":"Busy"}`, Meta{EnqueuedTime: enqueued}, ReasonInvalidField, "ObjectId"},
		{"legacy no availability", `{"ObjectId":"` + alex + `"}`, Meta{EnqueuedTime: enqueued}, ReasonMissingField, "Availability"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body), tt.meta)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a *DecodeError", err)
			}
			if de.Reason != tt.reason || de.Field != tt.field {
				t.Errorf("got %s/%q (%v), want %s/%q", de.Reason, de.Field, err, tt.reason, tt.field)
			}
			if ReasonOf(err) != tt.reason {
				t.Errorf("ReasonOf = %q", ReasonOf(err))
			}
			if len(err.Error()) > 300 {
				t.Errorf("error text is %d bytes; it must describe, not repeat, the body", len(err.Error()))
			}
		})
	}
}

func TestCheckUser(t *testing.T) {
	u := Update{UserID: alex}
	if err := CheckUser(u, UserID(strings.ToUpper(string(alex)))); err != nil {
		t.Errorf("same user, other case: %v", err)
	}
	err := CheckUser(u, "00000000-1111-2222-3333-444455556666")
	if ReasonOf(err) != ReasonUserMismatch {
		t.Errorf("other user: %v, want UserMismatch", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	u := Update{
		UserID: alex, TenantID: "t", UPN: "alex@contoso.com",
		Availability: AvailabilityBusy, Activity: ActivityInAConferenceCall,
		StatusMessage: "¡hola! \"quoted\"", OutOfOffice: true, Sequence: "42",
		ObservedAt: time.Date(2026, 11, 26, 20, 0, 0, 123456789, time.UTC),
		ExpiresAt:  time.Date(2026, 11, 26, 20, 15, 0, 0, time.UTC),
	}
	b, err := Encode(u)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b, Meta{})
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for _, bad := range []Update{{UserID: "x", ObservedAt: enqueued}, {UserID: alex}} {
		if _, err := Encode(bad); err == nil {
			t.Errorf("Encode(%+v) accepted an update Decode would reject", bad)
		}
	}
}

func TestCompare(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)
	at := func(seq string, d time.Duration) Update { return Update{Sequence: seq, ObservedAt: t0.Add(d)} }
	tests := []struct {
		name       string
		last, next Update
		want       int
	}{
		{"higher sequence wins over older time", at("5", 0), at("6", -time.Minute), 1},
		{"lower sequence is stale despite newer time", at("6", 0), at("5", time.Minute), -1},
		{"equal sequence, newer time: heartbeat", at("6", 0), at("6", time.Second), 1},
		{"equal sequence, same time: duplicate", at("6", 0), at("6", 0), 0},
		{"equal sequence, older time: duplicate", at("6", 0), at("6", -time.Second), 0},
		{"numeric sequences of different length", at("9", 0), at("10", 0), 1},
		{"lexicographic sequences", at("C4", 0), at("C5", 0), 1},
		{"one without sequence: by time, newer", at("", 0), at("7", time.Second), 1},
		{"one without sequence: by time, older", at("7", 0), at("", -time.Second), -1},
		{"no sequence, equal time: ignored", at("", 0), at("", 0), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compare(tt.last, tt.next)
			if sign(got) != tt.want {
				t.Errorf("Compare = %d, want sign %d", got, tt.want)
			}
		})
	}
}

func sign(n int) int {
	switch {
	case n > 0:
		return 1
	case n < 0:
		return -1
	}
	return 0
}

func TestParseValues(t *testing.T) {
	for _, a := range Availabilities() {
		for _, s := range []string{a.String(), strings.ToLower(a.String()), strings.ToUpper(a.String())} {
			if got, ok := ParseAvailability(s); !ok || got != a {
				t.Errorf("ParseAvailability(%q) = %v, %v", s, got, ok)
			}
		}
	}
	for _, a := range Activities() {
		if got, ok := ParseActivity(strings.ToLower(a.String())); !ok || got != a {
			t.Errorf("ParseActivity(%q) = %v, %v", a, got, ok)
		}
	}
	if len(Availabilities()) != 9 || len(Activities()) != 15 {
		t.Errorf("value sets: %d availabilities, %d activities; SPEC §2 lists 9 and 15", len(Availabilities()), len(Activities()))
	}
	if Availability(200).String() != "PresenceUnknown" || Activity(200).String() != "PresenceUnknown" {
		t.Error("out-of-range values must print PresenceUnknown")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"userId":"`+alex+`","availability":"Busy","activity":"InACall","sequence":"1","observedAt":"2026-11-26T20:00:00.123Z","expiresAt":"2026-11-26T20:15:00Z"}`), int64(0))
	f.Add([]byte(`{"ObjectId":"`+alex+`","Upn":"a@b","Availability":"Away","Activity":"Away"}`), enqueued.UnixNano())
	f.Add([]byte(`{"userId":null}`), int64(0))
	f.Add([]byte(`[]`), int64(1))
	f.Fuzz(func(t *testing.T, body []byte, enq int64) {
		meta := Meta{}
		if enq != 0 {
			meta.EnqueuedTime = time.Unix(0, enq).UTC()
		}
		u, err := Decode(body, meta)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error %v is not a DecodeError", err)
			}
			return
		}
		if !IsGUID(string(u.UserID)) || u.ObservedAt.IsZero() {
			t.Fatalf("accepted an update without identity or time: %+v", u)
		}
		// What is accepted survives an encode/decode round trip.
		b, err := Encode(u)
		if err != nil {
			if strings.Contains(err.Error(), "limit") {
				return
			}
			t.Fatalf("Encode(%+v): %v", u, err)
		}
		back, err := Decode(b, Meta{})
		if err != nil {
			t.Fatalf("decode of encoded %s: %v", b, err)
		}
		u.Legacy, u.UnknownAvailability, u.UnknownActivity = false, "", ""
		if !back.ObservedAt.Equal(u.ObservedAt) || !back.ExpiresAt.Equal(u.ExpiresAt) {
			t.Fatalf("times changed: %+v -> %+v", u, back)
		}
		back.ObservedAt, back.ExpiresAt, u.ObservedAt, u.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if diff := cmp.Diff(u, back); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	body := []byte(`{"version":1,"userId":"` + alex + `","tenantId":"72f988bf-0000-0000-0000-000000000000","upn":"alex@contoso.com","availability":"Busy","activity":"InACall","statusMessage":"Back at 3","outOfOffice":false,"sequence":"638680000000000000","observedAt":"2026-11-26T20:00:00.123Z","expiresAt":"2026-11-26T20:15:00Z"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := Decode(body, Meta{}); err != nil {
			b.Fatal(err)
		}
	}
}
