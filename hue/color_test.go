package hue

import (
	"math"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

func near(a, b [2]float64, tol float64) bool {
	return math.Abs(a[0]-b[0]) <= tol && math.Abs(a[1]-b[1]) <= tol
}

func TestXYFromRGB(t *testing.T) {
	tests := []struct {
		name  string
		hex   string
		gamut Gamut
		want  [2]float64
		tol   float64
	}{
		// Pure sRGB red lies outside gamut C's red corner region: it lands on
		// the gamut's edge near its red vertex.
		{name: "red C", hex: "#ff0000", gamut: GamutC, want: [2]float64{0.6915, 0.3083}, tol: 0.01},
		{name: "green C", hex: "#00ff00", gamut: GamutC, want: [2]float64{0.17, 0.7}, tol: 0.02},
		{name: "blue C", hex: "#0000ff", gamut: GamutC, want: [2]float64{0.1532, 0.0475}, tol: 0.02},
		{name: "white", hex: "#ffffff", gamut: GamutC, want: [2]float64{0.3227, 0.329}, tol: 0.002},
		{name: "black is the white point", hex: "#000000", gamut: GamutC, want: [2]float64{0.3127, 0.329}, tol: 0.0001},
		// Gamut B's green corner is far from pure green: clamped onto it.
		{name: "green B clamped", hex: "#00ff00", gamut: GamutB, want: [2]float64{0.409, 0.518}, tol: 0.01},
		// Amber is (0.5265, 0.4468) before clamping, just past gamut C's red–green edge.
		{name: "amber C", hex: "#ffbf00", gamut: GamutC, want: [2]float64{0.52, 0.44}, tol: 0.01},
		{name: "short hex", hex: "#f00", gamut: GamutC, want: [2]float64{0.6915, 0.3083}, tol: 0.01},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, g, b, err := ParseHex(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			got := XYFromRGB(r, g, b, tt.gamut)
			if !near(got, tt.want, tt.tol) {
				t.Errorf("XYFromRGB(%s) = %v, want %v ± %v", tt.hex, got, tt.want, tt.tol)
			}
			if !tt.gamut.Contains(got) && !near(tt.gamut.Clamp(got), got, 1e-4) {
				t.Errorf("XYFromRGB(%s) = %v lies outside the gamut", tt.hex, got)
			}
		})
	}
}

// Every 8-bit colour on a coarse grid maps inside every gamut.
func TestXYFromRGBAlwaysInGamut(t *testing.T) {
	for _, gamut := range []Gamut{GamutA, GamutB, GamutC} {
		for r := 0; r < 256; r += 17 {
			for g := 0; g < 256; g += 17 {
				for b := 0; b < 256; b += 17 {
					xy := XYFromRGB(uint8(r), uint8(g), uint8(b), gamut)
					// Rounded to 4 decimals: allow that much outside.
					if !gamut.Contains(xy) && !near(gamut.Clamp(xy), xy, 1e-4) {
						t.Fatalf("rgb(%d,%d,%d) → %v outside gamut %v", r, g, b, xy, gamut)
					}
				}
			}
		}
	}
}

func TestParseHexBad(t *testing.T) {
	for _, s := range []string{"", "#", "#ff00", "#gg0000", "red", "#ff00001", "#-10000"} {
		if _, _, _, err := ParseHex(s); err == nil {
			t.Errorf("ParseHex(%q): no error", s)
		}
	}
}

func TestBriFromPercent(t *testing.T) {
	tests := []struct {
		pct  int
		want uint8
	}{{1, 3}, {10, 25}, {50, 127}, {99, 251}, {100, 254}, {0, 1}, {-5, 1}, {150, 254}}
	for _, tt := range tests {
		if got := BriFromPercent(tt.pct); got != tt.want {
			t.Errorf("BriFromPercent(%d) = %d, want %d", tt.pct, got, tt.want)
		}
	}
}

func xyHex(t *testing.T, hex string) [2]float64 {
	t.Helper()
	r, g, b, err := ParseHex(hex)
	if err != nil {
		t.Fatal(err)
	}
	return XYFromRGB(r, g, b, GamutC)
}

func TestPaletteLooks(t *testing.T) {
	green := Look{On: true, Bri: 254, XY: xyHex(t, "#00ff00"), Effect: EffectNone}
	amber := Look{On: true, Bri: 254, XY: xyHex(t, "#ffbf00"), Effect: EffectNone}
	red := Look{On: true, Bri: 254, XY: xyHex(t, "#ff0000"), Effect: EffectNone}
	off := Look{}
	overrides := []config.Color{
		{Status: "InACall", Color: "#ff00ff", Brightness: 50},
		{Status: "Presenting", Effect: "colorloop"},
		{Status: "Away", Brightness: 10},
		{Status: "offwork", Off: true},
		{Status: "BeRightBack", Color: "#0000ff"},
		{Status: "PresenceUnknown", Color: "#ffffff", Brightness: 1},
	}
	tests := []struct {
		name   string
		colors []config.Color
		av     presence.Availability
		ac     presence.Activity
		online bool
		want   Look
	}{
		{"Available", nil, presence.AvailabilityAvailable, presence.ActivityAvailable, true, green},
		{"AvailableIdle", nil, presence.AvailabilityAvailableIdle, presence.ActivityInactive, true, green},
		{"Away", nil, presence.AvailabilityAway, presence.ActivityAway, true, amber},
		{"BeRightBack", nil, presence.AvailabilityBeRightBack, presence.ActivityBeRightBack, true, amber},
		{"Busy", nil, presence.AvailabilityBusy, presence.ActivityBusy, true, red},
		{"BusyIdle", nil, presence.AvailabilityBusyIdle, presence.ActivityInactive, true, red},
		{"DoNotDisturb", nil, presence.AvailabilityDoNotDisturb, presence.ActivityPresenting, true, red},
		{"Offline", nil, presence.AvailabilityOffline, presence.ActivityOffWork, true, off},
		{"PresenceUnknown", nil, presence.AvailabilityPresenceUnknown, presence.ActivityPresenceUnknown, true, off},
		{"expired user is off", nil, presence.AvailabilityBusy, presence.ActivityInACall, false, off},
		{"every activity keeps the availability colour: InACall", nil, presence.AvailabilityBusy, presence.ActivityInACall, true, red},
		{"activity override wins", overrides, presence.AvailabilityBusy, presence.ActivityInACall, true,
			Look{On: true, Bri: 127, XY: xyHex(t, "#ff00ff"), Effect: EffectNone}},
		{"colorloop keeps brightness", overrides, presence.AvailabilityDoNotDisturb, presence.ActivityPresenting, true,
			Look{On: true, Bri: 254, Effect: EffectColorloop}},
		{"brightness only keeps the default colour", overrides, presence.AvailabilityAway, presence.ActivityAway, true,
			Look{On: true, Bri: 25, XY: xyHex(t, "#ffbf00"), Effect: EffectNone}},
		{"off by activity, case-insensitive", overrides, presence.AvailabilityAvailable, presence.ActivityOffWork, true, off},
		{"availability colour override", overrides, presence.AvailabilityBeRightBack, presence.ActivityBeRightBack, true,
			Look{On: true, Bri: 254, XY: xyHex(t, "#0000ff"), Effect: EffectNone}},
		{"expired user takes the PresenceUnknown override", overrides, presence.AvailabilityBusy, presence.ActivityBusy, false,
			Look{On: true, Bri: 3, XY: xyHex(t, "#ffffff"), Effect: EffectNone}},
		{"override of an off default without colour is white", []config.Color{{Status: "Offline", Brightness: 20}},
			presence.AvailabilityOffline, presence.ActivityOffline, true,
			Look{On: true, Bri: 51, XY: xyHex(t, "#ffffff"), Effect: EffectNone}},
		{"colour after a colorloop availability resets the effect",
			[]config.Color{{Status: "Busy", Effect: "colorloop"}, {Status: "InAMeeting", Color: "#00ffff"}},
			presence.AvailabilityBusy, presence.ActivityInAMeeting, true,
			Look{On: true, Bri: 254, XY: xyHex(t, "#00ffff"), Effect: EffectNone}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPalette(tt.colors)
			if err != nil {
				t.Fatal(err)
			}
			got := p.styleFor(bridge.State{Availability: tt.av, Activity: tt.ac, Online: tt.online}).look(GamutC.Area())
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("look (-want +got):\n%s", diff)
			}
		})
	}
}

// Every availability value has a default look (no value falls through).
func TestPaletteCoversEveryAvailability(t *testing.T) {
	p, err := NewPalette(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, av := range presence.Availabilities() {
		for _, ac := range presence.Activities() {
			l := p.styleFor(bridge.State{Availability: av, Activity: ac, Online: true}).look(GamutC.Area())
			wantOn := av != presence.AvailabilityOffline && av != presence.AvailabilityPresenceUnknown
			if l.On != wantOn {
				t.Errorf("%v/%v: on = %v, want %v", av, ac, l.On, wantOn)
			}
			if l.On && (l.Bri < 1 || l.Bri > 254) {
				t.Errorf("%v/%v: bri %d", av, ac, l.Bri)
			}
		}
	}
}

// DefaultColor is what the palette shows without colours configured, at
// full brightness: the blueprint's defaults are tested against it, so it
// must be the sink's real behaviour.
func TestDefaultColorIsTheDefaultLook(t *testing.T) {
	p, err := NewPalette(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, av := range presence.Availabilities() {
		want := Look{}
		if hex := DefaultColor(av); hex != "" {
			r, g, b, err := ParseHex(hex)
			if err != nil {
				t.Fatalf("%v: %v", av, err)
			}
			want = Look{On: true, Bri: 254, XY: XYFromRGB(r, g, b, GamutC), Effect: EffectNone}
		}
		got := p.styleFor(bridge.State{Availability: av, Activity: presence.ActivityPresenceUnknown, Online: true}).look(GamutC.Area())
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%v: look (-DefaultColor +palette):\n%s", av, diff)
		}
	}
}

func TestNewPaletteRejects(t *testing.T) {
	tests := []struct {
		name  string
		color config.Color
	}{
		{"unknown status", config.Color{Status: "Snoozing", Color: "#ff0000"}},
		{"bad hex", config.Color{Status: "Busy", Color: "#ff00"}},
		{"brightness over 100", config.Color{Status: "Busy", Brightness: 101}},
		{"negative brightness", config.Color{Status: "Busy", Brightness: -1}},
		{"unknown effect", config.Color{Status: "Busy", Effect: "strobe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewPalette([]config.Color{tt.color}); err == nil {
				t.Error("no error")
			}
		})
	}
}

// SPEC §5: DoNotDisturb > Presenting > InAConferenceCall, InACall,
// InAMeeting > Busy > BusyIdle > BeRightBack > Away > AvailableIdle >
// Available > Offline, OffWork > PresenceUnknown.
func TestRankFollowsSpecOrder(t *testing.T) {
	type s = bridge.State
	on := func(av presence.Availability, ac presence.Activity) s {
		return s{Availability: av, Activity: ac, Online: true}
	}
	tiers := [][]s{
		{on(presence.AvailabilityDoNotDisturb, presence.ActivityPresenceUnknown), on(presence.AvailabilityBusy, presence.ActivityDoNotDisturb)},
		{on(presence.AvailabilityBusy, presence.ActivityPresenting)},
		{on(presence.AvailabilityBusy, presence.ActivityInAConferenceCall), on(presence.AvailabilityBusy, presence.ActivityInACall), on(presence.AvailabilityBusy, presence.ActivityInAMeeting)},
		{on(presence.AvailabilityBusy, presence.ActivityBusy), on(presence.AvailabilityBusy, presence.ActivityPresenceUnknown)},
		{on(presence.AvailabilityBusyIdle, presence.ActivityInactive)},
		{on(presence.AvailabilityBeRightBack, presence.ActivityBeRightBack)},
		{on(presence.AvailabilityAway, presence.ActivityAway)},
		{on(presence.AvailabilityAvailableIdle, presence.ActivityInactive)},
		{on(presence.AvailabilityAvailable, presence.ActivityAvailable)},
		{on(presence.AvailabilityOffline, presence.ActivityOffline), on(presence.AvailabilityOffline, presence.ActivityOffWork), on(presence.AvailabilityPresenceUnknown, presence.ActivityOffWork)},
		{on(presence.AvailabilityPresenceUnknown, presence.ActivityPresenceUnknown), {Availability: presence.AvailabilityDoNotDisturb, Online: false}},
	}
	for i, tier := range tiers {
		for _, st := range tier {
			if Rank(st) != Rank(tier[0]) {
				t.Errorf("tier %d: %v/%v rank %d, want %d", i, st.Availability, st.Activity, Rank(st), Rank(tier[0]))
			}
			if i > 0 && Rank(st) >= Rank(tiers[i-1][0]) {
				t.Errorf("tier %d: %v/%v rank %d not below tier %d's %d", i, st.Availability, st.Activity, Rank(st), i-1, Rank(tiers[i-1][0]))
			}
		}
	}
}

func TestBusiestMerge(t *testing.T) {
	on := func(av presence.Availability, ac presence.Activity) bridge.State {
		return bridge.State{Availability: av, Activity: ac, Online: true}
	}
	tests := []struct {
		name   string
		states []bridge.State
		want   int
	}{
		{"call beats busy", []bridge.State{on(presence.AvailabilityBusy, presence.ActivityBusy), on(presence.AvailabilityBusy, presence.ActivityInACall)}, 1},
		{"dnd beats presenting", []bridge.State{on(presence.AvailabilityBusy, presence.ActivityPresenting), on(presence.AvailabilityDoNotDisturb, presence.ActivityDoNotDisturb)}, 1},
		{"available beats offline", []bridge.State{on(presence.AvailabilityOffline, presence.ActivityOffWork), on(presence.AvailabilityAvailable, presence.ActivityAvailable)}, 1},
		{"first wins a tie", []bridge.State{on(presence.AvailabilityBusy, presence.ActivityInAMeeting), on(presence.AvailabilityBusy, presence.ActivityInACall)}, 0},
		{"expired busy user counts for nothing", []bridge.State{{Availability: presence.AvailabilityBusy, Activity: presence.ActivityInACall}, on(presence.AvailabilityAway, presence.ActivityAway)}, 1},
		{"one user", []bridge.State{on(presence.AvailabilityAway, presence.ActivityAway)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := busiest(tt.states); got != tt.want {
				t.Errorf("busiest = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestGroupArea(t *testing.T) {
	gamuts := map[string]string{"1": "A", "2": "A", "3": "C", "4": "", "5": "other", "6": "b"}
	tests := []struct {
		name   string
		lights []string
		want   Area
	}{
		{"one gamut", []string{"1", "2"}, GamutA.Area()},
		{"white lamps do not count", []string{"3", "4"}, GamutC.Area()},
		{"unknown type is C", []string{"5"}, GamutC.Area()},
		{"no lamps", nil, GamutC.Area()},
	}
	for _, tt := range tests {
		if got := groupArea(tt.lights, gamuts); !slices.Equal(got, tt.want) {
			t.Errorf("%s: groupArea(%v) = %v, want %v", tt.name, tt.lights, got, tt.want)
		}
	}
}

// TestMixedGamutsShowColoursEveryLampCanShow: a Zone of gamut A and C lamps
// (and one of A, B and C) gets colours inside every lamp's gamut, and the
// default green is a green (diyHue showed gamut B's corner, xy 0.409,0.518,
// a yellow-green, for such a Zone).
func TestMixedGamutsShowColoursEveryLampCanShow(t *testing.T) {
	gamuts := map[string]string{"1": "A", "2": "C", "3": "B"}
	p, err := NewPalette(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, lights := range [][]string{{"1", "2"}, {"1", "2", "3"}, {"2", "3"}} {
		area := groupArea(lights, gamuts)
		for _, av := range presence.Availabilities() {
			l := p.styleFor(bridge.State{Availability: av, Online: true}).look(area)
			if !l.On {
				continue
			}
			for _, id := range lights {
				if g := gamutOf(gamuts[id]); !g.Area().Contains(l.XY) && dist2(g.Clamp(l.XY), l.XY) > 1e-8 {
					t.Errorf("lamps %v, %s: xy %v is outside lamp %s's gamut %s", lights, av, l.XY, id, gamuts[id])
				}
			}
		}
		green := p.styleFor(bridge.State{Availability: presence.AvailabilityAvailable, Online: true}).look(area).XY
		if hasB := slices.Contains(lights, "3"); !hasB && (green[0] > 0.3 || green[1] < 0.6) {
			t.Errorf("lamps %v: Available shows xy %v, not a green", lights, green)
		}
		red := p.styleFor(bridge.State{Availability: presence.AvailabilityBusy, Online: true}).look(area).XY
		if red[0] < 0.6 {
			t.Errorf("lamps %v: Busy shows xy %v, not a red", lights, red)
		}
	}
}

func TestAreaIntersect(t *testing.T) {
	square := Area{{0, 0}, {1, 0}, {1, 1}, {0, 1}}
	shifted := Area{{0.5, 0.5}, {1.5, 0.5}, {1.5, 1.5}, {0.5, 1.5}}
	got := square.Intersect(shifted)
	if len(got) != 4 || !got.Contains([2]float64{0.75, 0.75}) || got.Contains([2]float64{0.25, 0.25}) {
		t.Errorf("intersection %v", got)
	}
	far := Area{{5, 5}, {6, 5}, {6, 6}}
	if got := square.Intersect(far); len(got) != 0 {
		t.Errorf("disjoint areas intersect in %v", got)
	}
	if c := square.Clamp([2]float64{2, 0.5}); c != [2]float64{1, 0.5} {
		t.Errorf("clamp = %v", c)
	}
}
