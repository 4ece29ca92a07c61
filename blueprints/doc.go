// Package blueprints holds no code: its folder is where the Home Assistant
// blueprints shipped with Presence Bridge live, laid out as Home Assistant's
// own blueprints folder (automation/presence_bridge/presence_light.yaml), so
// that each is importable from its raw URL. The package's tests check them.
//
// # What the tests cover
//
// Without anything external (go test -short):
//
//   - the file parses with Home Assistant's custom tag (!input) and nothing
//     else; every !input names a declared input and every input is used;
//     plain YAML 1.1 booleans (off, on, yes, no) are quoted;
//   - the blueprint metadata (name, domain automation, source_url equal to
//     the raw URL DOCS.md's import link carries, min_version), input
//     sections, unique input names, and each selector: a Home Assistant
//     selector type, with the options that selector accepts, and a default
//     the selector would accept;
//   - the people selector finds the sensors the bridge announces (checked
//     against discovery's golden payload), and the facts the templates rely
//     on hold there: the activity sensor is the device's only sensor whose
//     options include Presenting, and the availability sensor's attributes
//     carry observed_at, so a change of activity alone still triggers;
//   - the trigger fires on any change of the people's sensors, to
//     unavailable included; the mode is restart;
//   - the decision table that is data in the blueprint: the rank of every
//     availability and activity equals the Hue sink's hue.Rank (and the
//     higher-of-the-two rule reproduces hue.Rank for all 135 pairs), the look
//     of every availability and its default colour equal hue.DefaultColor
//     (off where the sink turns lamps off), and the in-call activities are
//     presence.Activity.InCall's.
//
// With Jinja2 (Debian's python3-jinja2; skipped in -short mode, required
// under CI=true): testdata/render_blueprint.py runs the blueprint's real
// templates and actions as an automation would — inputs substituted,
// variables rendered in order in Jinja2's immutable sandbox, results parsed
// as Home Assistant parses them, choose evaluated, the light call recorded —
// over fake states and a fake device registry. The tests compare the call
// with what a Go model built on hue.Rank and hue.DefaultColor expects, for
// every availability × activity of one person (plus unavailable and
// unknown), every pair of 26 representative states on one light with every
// look given its own colour, three people, the three offline choices, the
// in-call colour, renamed entities, a person without a device, and the
// two-people example of DOCS.md with the story told under it.
//
// Not covered: Home Assistant itself (its schema validation beyond the
// rules above, the trigger machinery, the light integration), which cannot
// run here.
package blueprints
