// Package presence is the domain model of Presence Bridge: Teams availability
// and activity, the presence update, its Service Bus wire format (version 1
// and the legacy body of the original C# poller) and the ordering rule that
// decides whether an update is newer than the last one applied.
//
// The package has no dependencies beyond the standard library so that both
// programs (the cloud poller and the home bridge) and every adapter can use it.
package presence

import (
	"strings"
	"time"
)

// Availability is a user's Teams availability (Graph presence "availability").
type Availability uint8

// The availability values Graph reports. AvailabilityPresenceUnknown is also
// what an unrecognised value becomes.
const (
	AvailabilityPresenceUnknown Availability = iota
	AvailabilityAvailable
	AvailabilityAvailableIdle
	AvailabilityAway
	AvailabilityBeRightBack
	AvailabilityBusy
	AvailabilityBusyIdle
	AvailabilityDoNotDisturb
	AvailabilityOffline
	numAvailability
)

var availabilityNames = [numAvailability]string{
	AvailabilityPresenceUnknown: "PresenceUnknown",
	AvailabilityAvailable:       "Available",
	AvailabilityAvailableIdle:   "AvailableIdle",
	AvailabilityAway:            "Away",
	AvailabilityBeRightBack:     "BeRightBack",
	AvailabilityBusy:            "Busy",
	AvailabilityBusyIdle:        "BusyIdle",
	AvailabilityDoNotDisturb:    "DoNotDisturb",
	AvailabilityOffline:         "Offline",
}

// String returns the wire name of a ("Busy"), or "PresenceUnknown" for a value
// outside the set.
func (a Availability) String() string {
	if a >= numAvailability {
		return availabilityNames[AvailabilityPresenceUnknown]
	}
	return availabilityNames[a]
}

// Availabilities returns every availability value in declaration order; Home
// Assistant's enum options are built from it.
func Availabilities() []Availability {
	out := make([]Availability, numAvailability)
	for i := range out {
		out[i] = Availability(i)
	}
	return out
}

// ParseAvailability maps a wire value to an Availability, ignoring case. An
// unknown value yields AvailabilityPresenceUnknown and ok == false; it is not an
// error (Graph adds values from time to time).
func ParseAvailability(s string) (a Availability, ok bool) {
	for i, name := range availabilityNames {
		if strings.EqualFold(name, s) {
			return Availability(i), true
		}
	}
	return AvailabilityPresenceUnknown, false
}

// Activity is what a user is doing in Teams (Graph presence "activity").
type Activity uint8

// The activity values Graph reports. ActivityPresenceUnknown is also what an
// unrecognised value becomes.
const (
	ActivityPresenceUnknown Activity = iota
	ActivityAvailable
	ActivityAway
	ActivityBeRightBack
	ActivityBusy
	ActivityDoNotDisturb
	ActivityInACall
	ActivityInAConferenceCall
	ActivityInactive
	ActivityInAMeeting
	ActivityOffline
	ActivityOffWork
	ActivityOutOfOffice
	ActivityPresenting
	ActivityUrgentInterruptionsOnly
	numActivity
)

var activityNames = [numActivity]string{
	ActivityPresenceUnknown:         "PresenceUnknown",
	ActivityAvailable:               "Available",
	ActivityAway:                    "Away",
	ActivityBeRightBack:             "BeRightBack",
	ActivityBusy:                    "Busy",
	ActivityDoNotDisturb:            "DoNotDisturb",
	ActivityInACall:                 "InACall",
	ActivityInAConferenceCall:       "InAConferenceCall",
	ActivityInactive:                "Inactive",
	ActivityInAMeeting:              "InAMeeting",
	ActivityOffline:                 "Offline",
	ActivityOffWork:                 "OffWork",
	ActivityOutOfOffice:             "OutOfOffice",
	ActivityPresenting:              "Presenting",
	ActivityUrgentInterruptionsOnly: "UrgentInterruptionsOnly",
}

// String returns the wire name of a ("InACall"), or "PresenceUnknown" for a
// value outside the set.
func (a Activity) String() string {
	if a >= numActivity {
		return activityNames[ActivityPresenceUnknown]
	}
	return activityNames[a]
}

// Activities returns every activity value in declaration order.
func Activities() []Activity {
	out := make([]Activity, numActivity)
	for i := range out {
		out[i] = Activity(i)
	}
	return out
}

// ParseActivity maps a wire value to an Activity, ignoring case. An unknown
// value yields ActivityPresenceUnknown and ok == false.
func ParseActivity(s string) (a Activity, ok bool) {
	for i, name := range activityNames {
		if strings.EqualFold(name, s) {
			return Activity(i), true
		}
	}
	return ActivityPresenceUnknown, false
}

// InCall reports whether the activity means the user is in a call or meeting
// (Home Assistant's in_call binary sensor).
func (a Activity) InCall() bool {
	switch a {
	case ActivityInACall, ActivityInAConferenceCall, ActivityInAMeeting, ActivityPresenting:
		return true
	}
	return false
}

// Busy reports whether the availability means the user does not want to be
// disturbed (Home Assistant's busy binary sensor).
func (a Availability) Busy() bool {
	switch a {
	case AvailabilityBusy, AvailabilityBusyIdle, AvailabilityDoNotDisturb:
		return true
	}
	return false
}

// Update is one presence change of one user, as carried by a Service Bus
// message.
type Update struct {
	UserID        UserID // Entra object id, canonical (lower-case)
	TenantID      string
	UPN           string
	Availability  Availability
	Activity      Activity
	StatusMessage string
	OutOfOffice   bool
	// Sequence is Graph's sequenceNumber for the user, empty when unknown.
	Sequence string
	// ObservedAt is when the sender saw this presence; for a legacy body it is
	// the message's enqueued time.
	ObservedAt time.Time
	// ExpiresAt is the time by which the sender promises a refresh; zero when
	// the sender makes no promise.
	ExpiresAt time.Time
	// Legacy is true when the update was decoded from the legacy body.
	Legacy bool
	// UnknownAvailability and UnknownActivity keep a value the decoder did
	// not recognise (it decoded to PresenceUnknown), so that it can be logged.
	UnknownAvailability, UnknownActivity string
}

// SameState reports whether u and v describe the same presence (what Home
// Assistant and the lamps show), ignoring timestamps and identity.
func (u Update) SameState(v Update) bool {
	return u.Availability == v.Availability &&
		u.Activity == v.Activity &&
		u.StatusMessage == v.StatusMessage &&
		u.OutOfOffice == v.OutOfOffice
}
