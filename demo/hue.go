package demo

import (
	"fmt"
	"math"

	"github.com/presence-bridge/presence-bridge/config"
	"github.com/presence-bridge/presence-bridge/hue"
	"github.com/presence-bridge/presence-bridge/hue/huetest"
)

// hueKey is the simulated bridge's API key.
const hueKey = "demo-key"

// startHue starts a simulated Hue bridge (in-process HTTP, the same fake
// the tests use, with its one-command-per-second limit) and returns the
// configuration that drives it: Alex drives the Office, Sam the Kitchen,
// and both the Hallway zone, which shows the busier of the two. Mode auto:
// the lamps follow presence while no Home Assistant is on the broker.
func startHue() (*huetest.Bridge, config.Hue, error) {
	fake := huetest.New(huetest.Options{
		Username: hueKey,
		Groups: []huetest.Group{
			{ID: "1", Name: "Office", Type: "Room", Lights: []string{"1", "2"}},
			{ID: "2", Name: "Kitchen", Type: "Room", Lights: []string{"3"}},
			{ID: "3", Name: "Hallway", Type: "Zone", Lights: []string{"4"}},
		},
	})
	host, err := fake.Start()
	if err != nil {
		return nil, config.Hue{}, fmt.Errorf("demo: simulated hue bridge: %w", err)
	}
	users := Users()
	cfg := config.Default().Hue
	cfg.Bridges = []config.HueBridge{{Host: host, Username: hueKey, Groups: []config.HueGroup{
		{Group: "Office", Users: []string{users[0].Name}},
		{Group: "Kitchen", Users: []string{users[1].Name}},
		{Group: "Hallway", Users: []string{users[0].Name, users[1].Name}},
	}}}
	return fake, cfg, nil
}

// namedColors are the default colours of SPEC §5 as a person calls them.
var namedColors = []struct {
	name string
	hex  string
}{{"green", "#00ff00"}, {"amber", "#ffbf00"}, {"red", "#ff0000"}}

// describeLook names a look's colour (the nearest default) for the demo's
// readers, with the values sent.
func describeLook(l hue.Look) string {
	if !l.On {
		return "off"
	}
	if l.Effect == hue.EffectColorloop {
		return fmt.Sprintf("on, colour loop (bri %d)", l.Bri)
	}
	best, dist := "", math.Inf(1)
	for _, c := range namedColors {
		r, g, b, _ := hue.ParseHex(c.hex)
		xy := hue.XYFromRGB(r, g, b, hue.GamutC)
		if d := math.Hypot(xy[0]-l.XY[0], xy[1]-l.XY[1]); d < dist {
			best, dist = c.name, d
		}
	}
	return fmt.Sprintf("%s (xy %.3f,%.3f, bri %d)", best, l.XY[0], l.XY[1], l.Bri)
}
