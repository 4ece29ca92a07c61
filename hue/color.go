package hue

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/presence-bridge/presence-bridge/bridge"
	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/presence"
)

// Effects a Look can carry.
const (
	EffectNone      = "none"
	EffectColorloop = "colorloop"
)

// Look is what a group's lamps should show.
type Look struct {
	On bool
	// Bri is the Hue brightness 1–254 (when On).
	Bri uint8
	// XY is the CIE colour (when On and Effect is not colorloop).
	XY [2]float64
	// Effect is EffectNone or EffectColorloop (when On).
	Effect string
}

// String describes the look for people: "off", "on xy=[0.6915,0.3083] bri=254",
// "on colorloop bri=254".
func (l Look) String() string {
	if !l.On {
		return "off"
	}
	if l.Effect == EffectColorloop {
		return fmt.Sprintf("on colorloop bri=%d", l.Bri)
	}
	return fmt.Sprintf("on xy=[%.4f,%.4f] bri=%d", l.XY[0], l.XY[1], l.Bri)
}

// Gamut is the triangle of CIE xy colours a lamp can show.
type Gamut struct {
	R, G, B [2]float64
}

// The gamuts of Hue lamps (Hue developer documentation).
var (
	GamutA = Gamut{R: [2]float64{0.704, 0.296}, G: [2]float64{0.2151, 0.7106}, B: [2]float64{0.138, 0.08}}
	GamutB = Gamut{R: [2]float64{0.675, 0.322}, G: [2]float64{0.409, 0.518}, B: [2]float64{0.167, 0.04}}
	GamutC = Gamut{R: [2]float64{0.6915, 0.3083}, G: [2]float64{0.17, 0.7}, B: [2]float64{0.1532, 0.0475}}
)

// gamutOf maps a light's colorgamuttype to its gamut; unknown types get C,
// the gamut of every colour lamp sold since 2016.
func gamutOf(t string) Gamut {
	switch strings.ToUpper(t) {
	case "A":
		return GamutA
	case "B":
		return GamutB
	}
	return GamutC
}

// Area is a convex region of CIE xy colours, its corners counter-clockwise:
// a lamp's gamut triangle, or the colours every lamp of a group can show.
type Area [][2]float64

// Area returns the gamut's triangle.
func (g Gamut) Area() Area { return Area{g.R, g.G, g.B} }

// Intersect returns the colours both areas hold (Sutherland–Hodgman
// clipping of a by b; both convex and counter-clockwise). It is empty when
// they do not overlap.
func (a Area) Intersect(b Area) Area {
	out := slices.Clone(a)
	for i := range b {
		if len(out) == 0 {
			break
		}
		e0, e1 := b[i], b[(i+1)%len(b)]
		in := out
		out = nil
		for j := range in {
			cur, prev := in[j], in[(j+len(in)-1)%len(in)]
			curIn, prevIn := cross(e0, e1, cur) >= 0, cross(e0, e1, prev) >= 0
			if curIn != prevIn {
				out = append(out, lineIntersection(prev, cur, e0, e1))
			}
			if curIn {
				out = append(out, cur)
			}
		}
	}
	return out
}

func lineIntersection(p1, p2, q1, q2 [2]float64) [2]float64 {
	d := (p1[0]-p2[0])*(q1[1]-q2[1]) - (p1[1]-p2[1])*(q1[0]-q2[0])
	if d == 0 {
		return p2
	}
	t := ((p1[0]-q1[0])*(q1[1]-q2[1]) - (p1[1]-q1[1])*(q1[0]-q2[0])) / d
	return [2]float64{p1[0] + t*(p2[0]-p1[0]), p1[1] + t*(p2[1]-p1[1])}
}

// Contains reports whether p lies inside the area (edges included, with a
// small tolerance for rounding).
func (a Area) Contains(p [2]float64) bool {
	const eps = 1e-9
	for i := range a {
		if cross(a[i], a[(i+1)%len(a)], p) < -eps {
			return false
		}
	}
	return len(a) > 0
}

// Clamp returns p when inside the area, else the closest point on its
// edges.
func (a Area) Clamp(p [2]float64) [2]float64 {
	if len(a) == 0 || a.Contains(p) {
		return p
	}
	best, bestD := a[0], math.Inf(1)
	for i := range a {
		c := closestOnSegment(a[i], a[(i+1)%len(a)], p)
		if d := dist2(c, p); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// groupArea is the colours every colour lamp of a group can show: the
// intersection of their gamuts (a Zone of gamut A and C lamps gets a green
// and a red both show, not gamut B's yellowish corners). Lamps without a
// gamut (white-only) do not restrict it; a group without colour lamps, or
// lamps of unknown types, gets gamut C, that of every colour lamp sold since
// 2016.
func groupArea(lights []string, gamuts map[string]string) Area {
	var area Area
	seen := map[string]bool{}
	for _, l := range lights {
		t, ok := gamuts[l]
		if !ok || t == "" {
			continue // not a colour light
		}
		t = strings.ToUpper(t)
		if seen[t] {
			continue
		}
		seen[t] = true
		g := gamutOf(t).Area()
		if area == nil {
			area = g
			continue
		}
		if both := area.Intersect(g); len(both) >= 3 {
			area = both
		}
	}
	if area == nil {
		return GamutC.Area()
	}
	return area
}

// ParseHex returns the components of a "#rrggbb" (or "#rgb") colour, as
// config.ParseHexColor reads it: one parser for the configuration's check
// and the lamps.
func ParseHex(s string) (r, g, b uint8, err error) {
	c, err := config.ParseHexColor(s)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("hue: colour: %w", err)
	}
	return c.R, c.G, c.B, nil
}

// XYFromRGB converts an sRGB colour to CIE xy (the conversion Philips
// documents: gamma expansion, wide-gamut D65 matrix) and moves it into the
// gamut when it lies outside. Black maps to the white point.
func XYFromRGB(r, g, b uint8, gamut Gamut) [2]float64 {
	return xyIn(r, g, b, gamut.Area())
}

// xyIn is XYFromRGB for any area.
func xyIn(r, g, b uint8, area Area) [2]float64 {
	lin := func(c uint8) float64 {
		v := float64(c) / 255
		if v > 0.04045 {
			return math.Pow((v+0.055)/1.055, 2.4)
		}
		return v / 12.92
	}
	rl, gl, bl := lin(r), lin(g), lin(b)
	X := rl*0.664511 + gl*0.154324 + bl*0.162028
	Y := rl*0.283881 + gl*0.668433 + bl*0.047685
	Z := rl*0.000088 + gl*0.072310 + bl*0.986039
	sum := X + Y + Z
	if sum == 0 {
		return roundXY(area.Clamp([2]float64{0.3127, 0.3290}))
	}
	return roundXY(area.Clamp([2]float64{X / sum, Y / sum}))
}

func roundXY(p [2]float64) [2]float64 {
	return [2]float64{math.Round(p[0]*1e4) / 1e4, math.Round(p[1]*1e4) / 1e4}
}

// Contains reports whether p lies inside the gamut triangle.
func (g Gamut) Contains(p [2]float64) bool { return g.Area().Contains(p) }

// Clamp returns p when inside the gamut, else the closest point on its
// edges.
func (g Gamut) Clamp(p [2]float64) [2]float64 { return g.Area().Clamp(p) }

func cross(a, b, p [2]float64) float64 {
	return (b[0]-a[0])*(p[1]-a[1]) - (b[1]-a[1])*(p[0]-a[0])
}

func closestOnSegment(a, b, p [2]float64) [2]float64 {
	dx, dy := b[0]-a[0], b[1]-a[1]
	t := ((p[0]-a[0])*dx + (p[1]-a[1])*dy) / (dx*dx + dy*dy)
	t = math.Max(0, math.Min(1, t))
	return [2]float64{a[0] + t*dx, a[1] + t*dy}
}

func dist2(a, b [2]float64) float64 {
	dx, dy := a[0]-b[0], a[1]-b[1]
	return dx*dx + dy*dy
}

// BriFromPercent maps 1–100 % to Hue's 1–254 (values outside are clamped).
func BriFromPercent(pct int) uint8 {
	v := math.Round(float64(pct) * 254 / 100)
	return uint8(math.Max(1, math.Min(254, v)))
}

// Default colours (SPEC §5).
const (
	hexGreen = "#00ff00"
	hexAmber = "#ffbf00"
	hexRed   = "#ff0000"
)

// style is a resolved colours entry: the look before the gamut is known.
type style struct {
	off    bool
	rgb    [3]uint8
	hasRGB bool
	bri    uint8
	effect string
}

func (s style) look(area Area) Look {
	if s.off {
		return Look{}
	}
	l := Look{On: true, Bri: s.bri, Effect: s.effect}
	if l.Bri == 0 {
		l.Bri = 254
	}
	if l.Effect == "" {
		l.Effect = EffectNone
	}
	if l.Effect != EffectColorloop {
		l.XY = xyIn(s.rgb[0], s.rgb[1], s.rgb[2], area)
	}
	return l
}

// Palette maps a user's presence to a style: SPEC §5 defaults, then the
// configured colours by availability, then by activity.
type Palette struct {
	byAvailability map[presence.Availability]style
	byActivity     map[presence.Activity]style
}

// DefaultColor is SPEC §5's default for an availability, shown at full
// brightness: the colour as "#rrggbb", or "" when the lamps go off. It is
// the one source of the defaults: the palette below and the Home Assistant
// blueprint's tests (blueprints/) both read it.
func DefaultColor(a presence.Availability) string {
	switch a {
	case presence.AvailabilityAvailable, presence.AvailabilityAvailableIdle:
		return hexGreen
	case presence.AvailabilityAway, presence.AvailabilityBeRightBack:
		return hexAmber
	case presence.AvailabilityBusy, presence.AvailabilityBusyIdle, presence.AvailabilityDoNotDisturb:
		return hexRed
	case presence.AvailabilityOffline, presence.AvailabilityPresenceUnknown:
		return ""
	}
	return ""
}

func defaultStyle(a presence.Availability) style {
	hex := DefaultColor(a)
	if hex == "" {
		return style{off: true}
	}
	r, g, b, _ := ParseHex(hex)
	return style{rgb: [3]uint8{r, g, b}, hasRGB: true}
}

// NewPalette builds the palette from the configured colours. A status may
// name an availability, an activity, or both (Busy is both).
func NewPalette(colors []config.Color) (*Palette, error) {
	p := &Palette{byAvailability: map[presence.Availability]style{}, byActivity: map[presence.Activity]style{}}
	for i, c := range colors {
		av, okAv := presence.ParseAvailability(c.Status)
		ac, okAc := presence.ParseActivity(c.Status)
		if !okAv && !okAc {
			return nil, fmt.Errorf("hue: colors[%d].status: unknown status %q", i, c.Status)
		}
		s := style{off: c.Off}
		if !c.Off {
			if c.Color != "" {
				r, g, b, err := ParseHex(c.Color)
				if err != nil {
					return nil, fmt.Errorf("hue: colors[%d].color: %w", i, err)
				}
				s.rgb, s.hasRGB = [3]uint8{r, g, b}, true
			}
			if c.Brightness != 0 {
				if c.Brightness < 1 || c.Brightness > 100 {
					return nil, fmt.Errorf("hue: colors[%d].brightness: %d is not 1–100", i, c.Brightness)
				}
				s.bri = BriFromPercent(c.Brightness)
			}
			switch strings.ToLower(c.Effect) {
			case "", EffectNone:
			case EffectColorloop:
				s.effect = EffectColorloop
			default:
				return nil, fmt.Errorf("hue: colors[%d].effect: unknown effect %q (want colorloop)", i, c.Effect)
			}
		}
		if okAv {
			p.byAvailability[av] = s
		}
		if okAc {
			p.byActivity[ac] = s
		}
	}
	return p, nil
}

// styleFor resolves one user's state. An entry that gives only a
// brightness or an effect keeps the colour it overrides; a user whose
// state expired (Online false) shows as PresenceUnknown.
func (p *Palette) styleFor(st bridge.State) style {
	av, ac := st.Availability, st.Activity
	if !st.Online {
		av, ac = presence.AvailabilityPresenceUnknown, presence.ActivityPresenceUnknown
	}
	s := defaultStyle(av)
	if o, ok := p.byAvailability[av]; ok {
		s = merge(s, o)
	}
	if o, ok := p.byActivity[ac]; ok {
		s = merge(s, o)
	}
	return s
}

// merge lays an override over a base style.
func merge(base, o style) style {
	if o.off {
		return style{off: true}
	}
	out := base
	out.off = false
	if o.hasRGB {
		out.rgb, out.hasRGB = o.rgb, true
	}
	if !out.hasRGB && o.effect != EffectColorloop {
		// An override of an "off" default that names no colour: white.
		out.rgb, out.hasRGB = [3]uint8{255, 255, 255}, true
	}
	if o.bri != 0 {
		out.bri = o.bri
	}
	if o.effect != "" {
		out.effect = o.effect
	} else if o.hasRGB {
		out.effect = ""
	}
	return out
}

// Rank orders states by how busy they are (SPEC §5): higher is busier.
func Rank(st bridge.State) int {
	if !st.Online {
		return 0
	}
	r := 0
	switch st.Availability {
	case presence.AvailabilityDoNotDisturb:
		r = 10
	case presence.AvailabilityBusy:
		r = 7
	case presence.AvailabilityBusyIdle:
		r = 6
	case presence.AvailabilityBeRightBack:
		r = 5
	case presence.AvailabilityAway:
		r = 4
	case presence.AvailabilityAvailableIdle:
		r = 3
	case presence.AvailabilityAvailable:
		r = 2
	case presence.AvailabilityOffline:
		r = 1
	case presence.AvailabilityPresenceUnknown:
		r = 0
	}
	a := 0
	switch st.Activity {
	case presence.ActivityDoNotDisturb:
		a = 10
	case presence.ActivityPresenting:
		a = 9
	case presence.ActivityInAConferenceCall, presence.ActivityInACall, presence.ActivityInAMeeting:
		a = 8
	case presence.ActivityBusy:
		a = 7
	case presence.ActivityBeRightBack:
		a = 5
	case presence.ActivityAway:
		a = 4
	case presence.ActivityAvailable:
		a = 2
	case presence.ActivityOffline, presence.ActivityOffWork:
		a = 1
	case presence.ActivityPresenceUnknown, presence.ActivityInactive, presence.ActivityOutOfOffice,
		presence.ActivityUrgentInterruptionsOnly:
		a = 0
	}
	return max(r, a)
}

// busiest returns the index of the busiest state; the first wins a tie.
func busiest(states []bridge.State) int {
	best, bestRank := 0, -1
	for i, st := range states {
		if r := Rank(st); r > bestRank {
			best, bestRank = i, r
		}
	}
	return best
}
