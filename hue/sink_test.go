package hue

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
	"github.com/presence-bridge/presence-bridge/presence"
)

func bodies(cmds []huetest.Command) []string {
	var out []string
	for _, c := range cmds {
		out = append(out, c.Raw)
	}
	return out
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// One change: the look is sent in full; the same look again, or a state
// with the same look, sends nothing; a new colour sends only the colour.
func TestSinkSendsOnlyChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		h := startHarness(t, fake, oneGroup(), nil)
		synctest.Wait()

		red := lookOf(t, nil, presence.AvailabilityBusy, presence.ActivityBusy)
		green := lookOf(t, nil, presence.AvailabilityAvailable, presence.ActivityAvailable)
		steps := []struct {
			av   presence.Availability
			ac   presence.Activity
			want string // body of the new command; "" = none
		}{
			// The fake's groups start off (all_on false): "on" is sent.
			{presence.AvailabilityBusy, presence.ActivityBusy, mustJSON(t, Action{On: ptr(true), Bri: ptr(red.Bri), XY: &red.XY, Effect: EffectNone})},
			{presence.AvailabilityBusy, presence.ActivityBusy, ""},
			{presence.AvailabilityBusy, presence.ActivityInACall, ""}, // same look
			{presence.AvailabilityAvailable, presence.ActivityAvailable, mustJSON(t, Action{On: ptr(true), XY: &green.XY})},
			{presence.AvailabilityOffline, presence.ActivityOffWork, `{"on":false}`},
			{presence.AvailabilityPresenceUnknown, presence.ActivityPresenceUnknown, ""}, // off again
			{presence.AvailabilityAvailable, presence.ActivityAvailable, `{"on":true}`},  // the lamps kept green
		}
		for i, st := range steps {
			before := len(fake.Commands())
			h.apply(t, alexID, st.av, st.ac)
			time.Sleep(2 * time.Second) // fake time: past min_interval
			synctest.Wait()
			got := bodies(fake.Commands()[before:])
			var want []string
			if st.want != "" {
				want = []string{st.want}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("step %d (%v/%v): commands (-want +got):\n%s", i, st.av, st.ac, diff)
			}
		}
		if n := fake.RateLimited(); n != 0 {
			t.Errorf("%d commands rejected for rate", n)
		}
	})
}

// Apply returns at once even when the bridge hangs.
func TestApplyNeverWaitsForTheBridge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		fake.SetDelay(time.Hour)
		h := startHarness(t, fake, oneGroup(), nil)
		start := time.Now()
		for i := range 50 {
			av := presence.AvailabilityBusy
			if i%2 == 1 {
				av = presence.AvailabilityAvailable
			}
			h.apply(t, alexID, av, presence.ActivityPresenceUnknown)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Apply took %v of fake time, want 0", d)
		}
	})
}

// 100 changes in 10 s give at most 11 commands for the group, none refused
// for rate, and the last command carries the final state.
func TestRateLimitCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		cfg := oneGroup(
			config.HueGroup{Group: "Office", Users: []string{"Alex"}},
			config.HueGroup{Group: "Kitchen", Users: []string{"Blake"}},
		)
		h := startHarness(t, fake, cfg, nil)
		synctest.Wait()
		all0 := time.Now()
		cycle := []presence.Availability{presence.AvailabilityBusy, presence.AvailabilityAvailable, presence.AvailabilityAway, presence.AvailabilityDoNotDisturb}
		// Changes every 97 ms, out of step with the bridge's turns (one a
		// second): a change and a turn at the same instant of the bubble
		// run in either order, and with a 100 ms step every turn met a
		// change, so that the outcome depended on the scheduler.
		for i := range 100 {
			h.apply(t, alexID, cycle[i%len(cycle)], presence.ActivityPresenceUnknown)
			h.apply(t, blakeID, cycle[(i+1)%len(cycle)], presence.ActivityPresenceUnknown)
			time.Sleep(97 * time.Millisecond)
		}
		h.apply(t, alexID, presence.AvailabilityBeRightBack, presence.ActivityBeRightBack) // the final state
		synctest.Wait()
		time.Sleep(5 * time.Second)
		synctest.Wait()

		if n := fake.RateLimited(); n != 0 {
			t.Errorf("%d commands rejected for rate", n)
		}
		for _, g := range []string{"1", "2"} {
			cmds := accepted(fake, g)
			if len(cmds) > 11 {
				t.Errorf("group %s: %d commands for 100 changes in 10 s, want ≤ 11", g, len(cmds))
			}
			if len(cmds) < 3 {
				t.Errorf("group %s: only %d commands: not coalescing but dropping", g, len(cmds))
				for _, c := range fake.Commands() {
					t.Logf("%v %s %s %d", c.At.Sub(all0), c.Group, c.Raw, c.Status)
				}
			}
		}
		// Two groups share the bridge's budget: no two commands closer than 1 s.
		all := fake.Commands()
		for i := 1; i < len(all); i++ {
			if gap := all[i].At.Sub(all[i-1].At); gap < time.Second {
				t.Errorf("commands %d and %d %v apart", i-1, i, gap)
			}
		}
		// The lamps end on the final state: amber (BeRightBack) for Office.
		want := lookOf(t, nil, presence.AvailabilityBeRightBack, presence.ActivityBeRightBack)
		act, _ := fake.GroupAction("1")
		xy, _ := xyOf(act)
		if act["on"] != true || xy != want.XY {
			t.Errorf("office shows on=%v xy=%v, want on xy=%v", act["on"], xy, want.XY)
		}
		office := accepted(fake, "1")
		if lastXY, ok := xyOf(office[len(office)-1].Body); !ok || lastXY != want.XY {
			t.Errorf("last office command %s does not carry the final state", office[len(office)-1].Raw)
		}
	})
}

func TestBackoffAndRecovery(t *testing.T) {
	tests := []struct {
		name   string
		fault  func(*huetest.Bridge)
		heal   func(*huetest.Bridge)
		detail string // in the status while failing; "" = status stays ok
	}{
		{
			name:   "503",
			fault:  func(b *huetest.Bridge) { b.FailCommands(503, 503, 503, 503) },
			heal:   func(*huetest.Bridge) {},
			detail: "503",
		},
		{
			name:  "429",
			fault: func(b *huetest.Bridge) { b.FailCommands(429, 429, 429, 429) },
			heal:  func(*huetest.Bridge) {},
		},
		{
			name:   "error array",
			fault:  func(b *huetest.Bridge) { b.SetIntercept(errorArray(901)) },
			heal:   func(b *huetest.Bridge) { b.SetIntercept(nil) },
			detail: "hue error 901",
		},
		{
			name:   "timeout",
			fault:  func(b *huetest.Bridge) { b.SetDelay(time.Hour) },
			heal:   func(b *huetest.Bridge) { b.SetDelay(0) },
			detail: "deadline exceeded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := huetest.New(huetest.Options{})
				h := startHarness(t, fake, oneGroup(), nil)
				synctest.Wait()
				tt.fault(fake)
				start := time.Now()
				h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
				synctest.Wait()
				time.Sleep(7 * time.Second) // ≥ 3 failures: 1 s, then 1–2 s, then 2–4 s back-off
				synctest.Wait()
				if tt.detail != "" {
					st, _ := h.status.last()
					if st.OK || !strings.Contains(st.Detail, tt.detail) {
						t.Errorf("status while failing = %+v, want not ok with %q", st, tt.detail)
					}
				}
				tt.heal(fake)
				time.Sleep(2 * time.Minute)
				synctest.Wait()

				cmds := fake.Commands()
				if len(accepted(fake, "1")) != 1 {
					t.Fatalf("accepted %d commands after recovery, want 1: %v", len(accepted(fake, "1")), bodies(cmds))
				}
				// Attempts spread out: each gap at least as long as min_interval,
				// and the back-off grows.
				var at []time.Time
				for _, c := range cmds {
					at = append(at, c.At)
				}
				// Intercepted and timed-out requests are not recorded by the fake.
				if (tt.name == "503" || tt.name == "429") && len(at) < 5 {
					t.Errorf("%d attempts, want the faults then success", len(at))
				}
				for i := 1; i < len(at); i++ {
					if at[i].Sub(at[i-1]) < time.Second {
						t.Errorf("attempts %d and %d %v apart", i-1, i, at[i].Sub(at[i-1]))
					}
				}
				if len(at) >= 4 && at[3].Sub(at[2]) < at[1].Sub(at[0])/2 {
					t.Errorf("back-off does not grow: gaps %v then %v", at[1].Sub(at[0]), at[3].Sub(at[2]))
				}
				if last := at[len(at)-1]; last.Sub(start) > 90*time.Second {
					t.Errorf("recovered only after %v", last.Sub(start))
				}
				if st, _ := h.status.last(); !st.OK {
					t.Errorf("status after recovery = %+v, want ok", st)
				}
				if n := fake.RateLimited(); n != 0 {
					t.Errorf("%d commands rejected for rate", n)
				}
			})
		})
	}
}

func errorArray(typ int) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut {
			return false
		}
		w.Write([]byte(`[{"error":{"type":` + strconv.Itoa(typ) + `,"address":"/groups/1/action","description":"internal error"}}]`))
		return true
	}
}

// A rejected key is logged and reported once, retried rarely, and the
// recovery is noticed.
func TestUnauthorizedReportedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		cfg := oneGroup()
		cfg.Bridges[0].Username = "revoked-key"
		h := startHarness(t, fake, cfg, nil)
		for i := range 60 { // 30 minutes of changes
			av := presence.AvailabilityBusy
			if i%2 == 1 {
				av = presence.AvailabilityAvailable
			}
			h.apply(t, alexID, av, presence.ActivityPresenceUnknown)
			time.Sleep(30 * time.Second)
		}
		synctest.Wait()
		if n := h.logs.count("rejected the api key"); n != 1 {
			t.Errorf("logged %d times, want once:\n%s", n, h.logs.text())
		}
		var bad []statusCall
		for _, c := range h.status.all() {
			if !c.OK {
				bad = append(bad, c)
			}
		}
		if len(bad) != 1 || !strings.Contains(bad[0].Detail, "presence-bridge hue pair") || bad[0].Component != "hue" {
			t.Errorf("not-ok reports = %+v, want one naming `presence-bridge hue pair`", bad)
		}
		if strings.Contains(bad[0].Detail, "revoked-key") || strings.Contains(h.logs.text(), "revoked-key") {
			t.Error("the key appears in the status or logs")
		}
		// Back-off to ten minutes: 30 minutes cost ~12 requests, not 1,800.
		if n := fake.Requests(); n > 15 {
			t.Errorf("%d requests in 30 minutes of a rejected key", n)
		}
		fake.AddUser("revoked-key") // paired again
		time.Sleep(11 * time.Minute)
		synctest.Wait()
		if st, _ := h.status.last(); !st.OK {
			t.Errorf("status after re-pairing = %+v", st)
		}
		if len(accepted(fake, "1")) != 1 {
			t.Errorf("accepted %d commands after recovery, want 1", len(accepted(fake, "1")))
		}
	})
}

// A group deleted and created again under the same name (new id) is
// found again by name.
func TestRenamedGroupReresolved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		h := startHarness(t, fake, oneGroup(), nil)
		h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if len(accepted(fake, "1")) != 1 {
			t.Fatalf("first command not sent: %v", bodies(fake.Commands()))
		}
		fake.DeleteGroup("1")
		fake.AddGroup(huetest.Group{ID: "7", Name: "Office", Type: "Room", Lights: []string{"1", "2"}})
		h.apply(t, alexID, presence.AvailabilityAvailable, presence.ActivityAvailable)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		got := accepted(fake, "7")
		if len(got) != 1 {
			t.Fatalf("group 7 got %d commands: %v", len(got), bodies(fake.Commands()))
		}
		// The new group's lamps are unknown: the whole look is sent.
		if got[0].Body["on"] != true || got[0].Body["bri"] == nil {
			t.Errorf("command to the new group %s, want the full look", got[0].Raw)
		}
		if st, _ := h.status.last(); !st.OK {
			t.Errorf("status %+v", st)
		}
	})
}

// An unknown name is an error naming the groups that exist; the other
// groups keep working, and the name is found once it appears.
func TestUnknownGroupNamesExistingGroups(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		cfg := oneGroup(
			config.HueGroup{Group: "Ofice", Users: []string{"Alex"}},
			config.HueGroup{Group: "2", Users: []string{"Alex"}}, // by id
		)
		h := startHarness(t, fake, cfg, nil)
		h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
		synctest.Wait()
		st, _ := h.status.last()
		for _, want := range []string{`no group "Ofice"`, `"Office" (id 1, Room)`, `"Kitchen" (id 2, Room)`} {
			if st.OK || !strings.Contains(st.Detail, want) {
				t.Errorf("status = %+v, want not ok containing %s", st, want)
			}
		}
		if len(accepted(fake, "2")) != 1 {
			t.Errorf("the group found (id 2) got %d commands, want 1", len(accepted(fake, "2")))
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if n := h.logs.count("hue group not found"); n != 1 {
			t.Errorf("logged %d times, want once", n)
		}
		fake.AddGroup(huetest.Group{ID: "5", Name: "Ofice", Type: "Zone", Lights: []string{"4"}})
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if len(accepted(fake, "5")) != 1 {
			t.Errorf("the group added later got %d commands, want 1", len(accepted(fake, "5")))
		}
		if st, _ := h.status.last(); !st.OK {
			t.Errorf("status %+v, want ok", st)
		}
	})
}

// Modes follow a scripted homeassistant/status sequence and hue_mode
// select changes.
func TestModesFollowHomeAssistant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		cfg := oneGroup()
		cfg.Mode = config.HueModeAuto
		h := startHarness(t, fake, cfg, func(o *Options) { o.HomeAssistant = true })
		synctest.Wait()
		red := lookOf(t, nil, presence.AvailabilityBusy, presence.ActivityBusy)
		green := lookOf(t, nil, presence.AvailabilityAvailable, presence.ActivityAvailable)
		full := func(l Look) string {
			return mustJSON(t, Action{On: ptr(true), Bri: ptr(l.Bri), XY: &l.XY, Effect: EffectNone})
		}
		type step struct {
			name   string
			do     func()
			mode   string
			active bool
			want   []string // new commands
		}
		ha := func(online bool) func() { return func() { h.sink.SetHomeAssistantOnline(online) } }
		mode := func(m string) func() {
			return func() {
				if err := h.sink.SetMode(m); err != nil {
					t.Fatal(err)
				}
			}
		}
		avail := func(av presence.Availability) func() {
			return func() { h.apply(t, alexID, av, presence.ActivityPresenceUnknown) }
		}
		steps := []step{
			// SPEC §5: before Home Assistant says anything it counts as
			// present (its birth message is not retained).
			{"nothing seen yet: home assistant is present", avail(presence.AvailabilityBusy), "auto", false, nil},
			{"home assistant offline: take control", ha(false), "auto", true, []string{full(red)}},
			{"home assistant online: hand back", ha(true), "auto", false, nil},
			{"changes are not sent", avail(presence.AvailabilityAvailable), "auto", false, nil},
			{"online again: nothing", ha(true), "auto", false, nil},
			{"offline: take control, send the current look once", ha(false), "auto", true, []string{full(green)}},
			{"offline again: nothing more", ha(false), "auto", true, nil},
			{"online", ha(true), "auto", false, nil},
			{"select always: send once", mode("always"), "always", true, []string{full(green)}},
			{"always ignores online", ha(true), "always", true, nil},
			{"always drives", avail(presence.AvailabilityBusy), "always", true, []string{mustJSON(t, Action{On: ptr(true), XY: &red.XY})}},
			{"select off", mode("off"), "off", false, nil},
			{"off never touches the lamps", avail(presence.AvailabilityAvailable), "off", false, nil},
			{"off ignores offline", ha(false), "off", false, nil},
			{"select auto while HA offline: take control", mode("auto"), "auto", true, []string{full(green)}},
		}
		for _, s := range steps {
			before := len(fake.Commands())
			s.do()
			time.Sleep(3 * time.Second)
			synctest.Wait()
			if got := h.sink.Mode(); got != s.mode {
				t.Errorf("%s: Mode() = %q, want %q", s.name, got, s.mode)
			}
			if got := h.sink.Active(); got != s.active {
				t.Errorf("%s: Active() = %v, want %v", s.name, got, s.active)
			}
			if diff := cmp.Diff(s.want, bodies(fake.Commands()[before:])); diff != "" {
				t.Errorf("%s: commands (-want +got):\n%s", s.name, diff)
			}
		}
		if err := h.sink.SetMode("sometimes"); err == nil {
			t.Error("SetMode(sometimes): no error")
		}
	})
}

// Without MQTT, auto drives the lamps whatever SetHomeAssistantOnline says.
func TestAutoWithoutHomeAssistantDrives(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		cfg := oneGroup()
		cfg.Mode = ""
		h := startHarness(t, fake, cfg, nil)
		h.sink.SetHomeAssistantOnline(true)
		h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
		synctest.Wait()
		if h.sink.Mode() != "auto" || len(accepted(fake, "1")) != 1 {
			t.Errorf("mode %q, %d commands", h.sink.Mode(), len(accepted(fake, "1")))
		}
	})
}

// Several users drive one group: the busiest wins, an expired user drops
// out.
func TestGroupShowsBusiestUser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		colors := []config.Color{{Status: "InACall", Color: "#0000ff"}}
		cfg := oneGroup(config.HueGroup{Group: "Office", Users: []string{"Alex", blakeID}})
		cfg.Colors = colors
		h := startHarness(t, fake, cfg, nil)
		blue := lookOf(t, colors, presence.AvailabilityBusy, presence.ActivityInACall)
		amber := lookOf(t, colors, presence.AvailabilityAway, presence.ActivityAway)
		green := lookOf(t, colors, presence.AvailabilityAvailable, presence.ActivityAvailable)

		lastXY := func() [2]float64 {
			act, _ := fake.GroupAction("1")
			xy, _ := xyOf(act)
			return xy
		}
		h.apply(t, alexID, presence.AvailabilityAway, presence.ActivityAway)
		h.apply(t, blakeID, presence.AvailabilityBusy, presence.ActivityInACall)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := lastXY(); got != blue.XY {
			t.Errorf("xy %v, want blue %v (Blake in a call)", got, blue.XY)
		}
		// Blake's state expires: Alex (Away) shows.
		h.ver++
		h.sink.Apply(context.Background(), []bridge.State{{UserID: blakeID, Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall, Online: false, Version: h.ver}})
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := lastXY(); got != amber.XY {
			t.Errorf("xy %v, want amber %v", got, amber.XY)
		}
		h.apply(t, blakeID, presence.AvailabilityAvailable, presence.ActivityAvailable)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := lastXY(); got != amber.XY { // Away is busier than Available
			t.Errorf("xy %v, want amber %v (not green %v)", got, amber.XY, green.XY)
		}
	})
}

// A look the bridge refuses for good (invalid value) is logged and not
// retried until the look changes.
func TestRefusedLookNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		refuse := errorArray(ErrorTypeInvalidValue)
		var puts atomic.Int32
		fake.SetIntercept(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPut {
				puts.Add(1)
			}
			return refuse(w, r)
		})
		h := startHarness(t, fake, oneGroup(), nil)
		h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := puts.Load(); n != 1 {
			t.Errorf("%d attempts of a refused look, want 1", n)
		}
		if n := h.logs.count("refused"); n != 1 {
			t.Errorf("logged %d times", n)
		}
		fake.SetIntercept(nil)
		h.apply(t, alexID, presence.AvailabilityAvailable, presence.ActivityAvailable)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := accepted(fake, "1"); len(got) != 1 || got[0].Body["on"] != true {
			t.Errorf("after a new look: %v", bodies(fake.Commands()))
		}
	})
}

// Replies a real bridge would never send are errors, never panics, and
// the sink keeps going.
func TestSinkSurvivesBadReplies(t *testing.T) {
	replies := []string{
		`[{"error":{"type":1}}]`, // no address (huego panicked)
		`[{"error":{}}]`,
		`[{"error":null}]`,
		`[{"success":null}]`,
		`{}`,
		`not json`,
		``,
		`[{"error":{"type":"1","address":5}}]`,
	}
	for _, reply := range replies {
		t.Run(reply, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := huetest.New(huetest.Options{})
				fake.SetIntercept(func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method != http.MethodPut {
						return false
					}
					w.Write([]byte(reply))
					return true
				})
				h := startHarness(t, fake, oneGroup(), nil)
				h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
				time.Sleep(3 * time.Second)
				synctest.Wait()
				if st, _ := h.status.last(); st.OK && !strings.Contains(reply, `"type":1`) {
					// type 1 without address is still unauthorized: reported too
					t.Errorf("status ok after reply %q", reply)
				}
				fake.SetIntercept(nil)
				time.Sleep(15 * time.Minute)
				synctest.Wait()
				if len(accepted(fake, "1")) != 1 {
					t.Errorf("no recovery after bad reply %q: %v", reply, bodies(fake.Commands()))
				}
			})
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		cfg  config.Hue
	}{
		{"bad mode", config.Hue{Mode: "sometimes"}},
		{"https host", config.Hue{Bridges: []config.HueBridge{{Host: "https://x"}}}},
		{"unknown user", config.Hue{Bridges: []config.HueBridge{{Host: "x", Groups: []config.HueGroup{{Group: "a", Users: []string{"Alx"}}}}}}},
		{"bad colour", config.Hue{Colors: []config.Color{{Status: "Busy", Color: "red"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(Options{Config: tt.cfg, Users: testUsers}); err == nil {
				t.Error("no error")
			}
		})
	}
}

// OnCommand sees every accepted command with the group's name and look.
func TestOnCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		got := make(chan Command, 4)
		h := startHarness(t, fake, oneGroup(), func(o *Options) { o.OnCommand = func(c Command) { got <- c } })
		h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
		synctest.Wait()
		select {
		case c := <-got:
			if c.Group != "Office" || c.GroupID != "1" || c.Bridge != "192.0.2.10" || !c.Look.On || !strings.HasPrefix(c.Look.String(), "on xy=") {
				t.Errorf("command %+v", c)
			}
		default:
			t.Fatal("OnCommand not called")
		}
	})
}

// An outage is logged once, with one line when the bridge answers again.
func TestOutageLoggedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{})
		fake.FailCommands(503, 503, 503, 503, 503, 503)
		h := startHarness(t, fake, oneGroup(), nil)
		h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if n := h.logs.count("hue bridge call failed; retrying"); n != 1 {
			t.Errorf("outage logged %d times at warn level, want once", n)
		}
		if n := h.logs.count("hue bridge answers again"); n != 1 {
			t.Errorf("recovery logged %d times, want once", n)
		}
		if len(accepted(fake, "1")) != 1 {
			t.Errorf("not recovered: %v", bodies(fake.Commands()))
		}
	})
}

// TestLampInRoomAndZoneStaysLit: a lamp in a Room and in a Zone (the usual
// Hue set-up) is switched off with the Room; the Zone, which should still
// be lit, is sent its whole look again, with on:true (diyHue showed the
// shared lamp staying dark: the Zone's next command carried only xy).
func TestLampInRoomAndZoneStaysLit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := huetest.New(huetest.Options{Groups: []huetest.Group{
			{ID: "1", Name: "Office", Type: "Room", Lights: []string{"1", "2"}},
			{ID: "2", Name: "Hallway", Type: "Zone", Lights: []string{"2", "3"}},
		}})
		h := startHarness(t, fake, oneGroup(
			config.HueGroup{Group: "Office", Users: []string{"Alex"}},
			config.HueGroup{Group: "Hallway", Users: []string{"Blake"}},
		), nil)
		synctest.Wait()
		h.apply(t, alexID, presence.AvailabilityBusy, presence.ActivityBusy)
		h.apply(t, blakeID, presence.AvailabilityAvailable, presence.ActivityAvailable)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		before := len(fake.Commands())
		h.apply(t, alexID, presence.AvailabilityOffline, presence.ActivityOffWork)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		green := lookOf(t, nil, presence.AvailabilityAvailable, presence.ActivityAvailable)
		var got []string
		for _, c := range fake.Commands()[before:] {
			got = append(got, c.Group+" "+c.Raw)
		}
		want := []string{
			`1 {"on":false}`,
			"2 " + mustJSON(t, Action{On: ptr(true), Bri: ptr(green.Bri), XY: &green.XY, Effect: EffectNone}),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("commands after the Room went off (-want +got):\n%s", diff)
		}
	})
}
