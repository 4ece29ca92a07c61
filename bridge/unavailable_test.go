package bridge

import (
	"testing"
	"testing/synctest"

	"github.com/presence-bridge/presence-bridge/presence"
)

// TestMarkUnavailable: a user with a state goes offline keeping it, a user
// with none is published offline (so a retained state of an earlier run is
// not shown as current), marking twice publishes once, and the user's next
// newer update (a heartbeat with the same state included) brings them back.
func TestMarkUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mqtt := &fakeSink{}
		c, cancel, stopped := start(t, mqtt, nil)
		defer func() { cancel(); <-stopped }()
		var o outcomes
		c.Submit(update(alex, presence.AvailabilityBusy, 1), "graph", o.done(1))
		synctest.Wait()

		c.MarkUnavailable("graph", alex, upper(sam), "00000000-0000-0000-0000-000000000000")
		synctest.Wait()
		s, _ := mqtt.last(alex)
		if s.Online || s.Availability != presence.AvailabilityBusy {
			t.Errorf("alex: %+v, want offline with the last availability", s)
		}
		s, ok := mqtt.last(sam)
		if !ok || s.Online || s.Availability != presence.AvailabilityPresenceUnknown || s.Source != "graph" {
			t.Errorf("sam (no state yet): %+v %v, want published offline", s, ok)
		}
		n := len(mqtt.states())
		c.MarkUnavailable("graph", alex)
		synctest.Wait()
		if len(mqtt.states()) != n {
			t.Error("marking an unavailable user again published again")
		}

		c.Submit(update(alex, presence.AvailabilityBusy, 1), "graph", o.done(2))
		synctest.Wait()
		if o.of(2) != Stale {
			t.Errorf("the same update again: %v, want stale", o.of(2))
		}
		hb := update(alex, presence.AvailabilityBusy, 1)
		hb.ObservedAt = hb.ObservedAt.Add(1)
		c.Submit(hb, "graph", o.done(3))
		synctest.Wait()
		if s, _ := mqtt.last(alex); !s.Online {
			t.Error("a newer read of the same presence did not bring alex back")
		}
	})
}
