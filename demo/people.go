package demo

import (
	"context"
	"time"

	"github.com/presence-bridge/presence-bridge/app"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

// SourceName names the simulated source: its connectivity sensor on the
// bridge device and the "source" of its states.
const SourceName = "demo"

// Users returns the simulated people.
func Users() []config.User {
	return []config.User{
		{ID: "6f1c2a3b-1111-2222-3333-444455556666", Name: "Alex"},
		{ID: "0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff", Name: "Sam"},
	}
}

// step is one scripted presence change.
type step struct {
	user         int // index into Users
	availability presence.Availability
	activity     presence.Activity
	message      string
}

// script is a working day in fast motion; it repeats.
func script() []step {
	return []step{
		{0, presence.AvailabilityAvailable, presence.ActivityAvailable, ""},
		{1, presence.AvailabilityAway, presence.ActivityAway, "Lunch"},
		{0, presence.AvailabilityBusy, presence.ActivityInACall, ""},
		{1, presence.AvailabilityAvailable, presence.ActivityAvailable, ""},
		{0, presence.AvailabilityBusy, presence.ActivityInAMeeting, "Planning"},
		{1, presence.AvailabilityDoNotDisturb, presence.ActivityPresenting, ""},
		{0, presence.AvailabilityBeRightBack, presence.ActivityBeRightBack, "Back in 5"},
		{1, presence.AvailabilityBusy, presence.ActivityInAConferenceCall, ""},
		{0, presence.AvailabilityAvailableIdle, presence.ActivityAvailable, ""},
		{1, presence.AvailabilityOffline, presence.ActivityOffWork, ""},
	}
}

// people is the simulated source: the scripted day, one change per
// interval, each submitted to the core like a Service Bus message and
// waited for until the core has settled it.
type people struct {
	p        *printer
	status   bridge.StatusReporter
	interval time.Duration
	steps    int // 0: until ctx ends
	done     chan struct{}
	// first runs once the bridge is connected, before the first change.
	first func()
}

var _ app.Source = (*people)(nil)

func (s *people) Name() string { return SourceName }

func (s *people) Run(ctx context.Context, core bridge.Submitter) error {
	defer close(s.done)
	s.status.SetStatus(SourceName, true, "")
	users, day := Users(), script()
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for n := 0; s.steps == 0 || n < s.steps; n++ {
		if n > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		// Like a source, take nothing while Home Assistant's broker is
		// away.
		if err := core.WaitReady(ctx); err != nil {
			return nil
		}
		if n == 0 && s.first != nil {
			s.first()
		}
		st := day[n%len(day)]
		u := users[st.user]
		now := time.Now()
		upd := presence.Update{
			UserID: u.ID, Availability: st.availability, Activity: st.activity, StatusMessage: st.message,
			ObservedAt: now, ExpiresAt: now.Add(time.Hour),
		}
		s.p.linef("Teams      %-4s is now %s / %s%s", u.Name, st.availability, st.activity, quoted(st.message))
		settled := make(chan bridge.Outcome, 1)
		core.Submit(upd, SourceName, func(o bridge.Outcome) { settled <- o })
		select {
		case <-settled:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}
