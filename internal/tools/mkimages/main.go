// Command mkimages draws the add-on's icon.png (128×128) and logo.png
// (250×100) with the standard library only. Run it from the repository root
// after changing the artwork:
//
//	go run ./internal/tools/mkimages
package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
)

// ss is the supersampling factor per axis (anti-aliasing).
const ss = 4

var (
	purple = color.RGBA{0x4b, 0x4f, 0xb5, 0xff} // background
	deep   = color.RGBA{0x33, 0x36, 0x8a, 0xff} // background, lower edge
	white  = color.RGBA{0xff, 0xff, 0xff, 0xff}
	green  = color.RGBA{0x6b, 0xb7, 0x00, 0xff} // "Available"
	red    = color.RGBA{0xd7, 0x3b, 0x3b, 0xff} // "Busy"
	ink    = color.RGBA{0x2b, 0x2d, 0x6e, 0xff} // logo text
)

// shape reports whether the point (x, y), in the image's own pixel units,
// is inside, and the colour there.
type shape func(x, y float64) (color.RGBA, bool)

// render draws shapes (later ones on top) on a transparent w×h canvas,
// averaging ss×ss samples per pixel.
func render(w, h int, shapes ...shape) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for py := 0; py < h; py++ {
		for px := 0; px < w; px++ {
			var r, g, b, a float64
			for sy := 0; sy < ss; sy++ {
				for sx := 0; sx < ss; sx++ {
					x := float64(px) + (float64(sx)+0.5)/ss
					y := float64(py) + (float64(sy)+0.5)/ss
					for i := len(shapes) - 1; i >= 0; i-- {
						if c, ok := shapes[i](x, y); ok {
							r += float64(c.R)
							g += float64(c.G)
							b += float64(c.B)
							a++
							break
						}
					}
				}
			}
			if a == 0 {
				continue
			}
			img.SetNRGBA(px, py, color.NRGBA{
				R: uint8(r / a), G: uint8(g / a), B: uint8(b / a),
				A: uint8(math.Round(255 * a / (ss * ss))),
			})
		}
	}
	return img
}

func circle(cx, cy, radius float64, c color.RGBA) shape {
	return func(x, y float64) (color.RGBA, bool) {
		return c, (x-cx)*(x-cx)+(y-cy)*(y-cy) <= radius*radius
	}
}

// roundedSquare is the icon's background with a vertical gradient.
func roundedSquare(x0, y0, size, radius float64) shape {
	return func(x, y float64) (color.RGBA, bool) {
		dx := math.Max(math.Max(x0+radius-x, x-(x0+size-radius)), 0)
		dy := math.Max(math.Max(y0+radius-y, y-(y0+size-radius)), 0)
		if x < x0 || y < y0 || x > x0+size || y > y0+size || dx*dx+dy*dy > radius*radius {
			return color.RGBA{}, false
		}
		t := (y - y0) / size
		return mix(purple, deep, t), true
	}
}

// person is a head and shoulders centred on cx, scaled to s (icon units).
func person(cx, top, s float64, c color.RGBA) shape {
	head := circle(cx, top+0.17*s, 0.15*s, c)
	return func(x, y float64) (color.RGBA, bool) {
		if c, ok := head(x, y); ok {
			return c, true
		}
		// Shoulders: the upper half of an ellipse, cut flat at the bottom.
		ey := top + 0.62*s
		rx, ry := 0.3*s, 0.26*s
		if y > ey || y < ey-ry {
			return color.RGBA{}, false
		}
		nx, ny := (x-cx)/rx, (y-ey)/ry
		return c, nx*nx+ny*ny <= 1
	}
}

// badge is the presence dot with a ring of the background colour.
func badge(cx, cy, radius float64, c color.RGBA) []shape {
	return []shape{circle(cx, cy, radius*1.3, purple), circle(cx, cy, radius, c)}
}

func mix(a, b color.RGBA, t float64) color.RGBA {
	l := func(p, q uint8) uint8 { return uint8(float64(p) + (float64(q)-float64(p))*t) }
	return color.RGBA{l(a.R, b.R), l(a.G, b.G), l(a.B, b.B), 0xff}
}

// iconShapes draws the icon in a size×size box at (x0, y0).
func iconShapes(x0, y0, size float64) []shape {
	s := []shape{
		roundedSquare(x0, y0, size, 0.22*size),
		person(x0+0.44*size, y0+0.16*size, 0.8*size, white),
	}
	s = append(s, badge(x0+0.72*size, y0+0.7*size, 0.12*size, green)...)
	return s
}

// glyphs is a 5×7 bitmap font for the logo's letters.
var glyphs = map[rune][7]string{
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'S': {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'N': {"#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"},
	'C': {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'B': {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'I': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "#####"},
	'D': {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."},
	'G': {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".###."},
}

// text draws s with its top-left corner at (x0, y0), each font pixel px wide.
func text(s string, x0, y0, px float64, c color.RGBA) shape {
	return func(x, y float64) (color.RGBA, bool) {
		row := int(math.Floor((y - y0) / px))
		if y < y0 || row >= 7 {
			return color.RGBA{}, false
		}
		col := int(math.Floor((x - x0) / px))
		if x < x0 || col/6 >= len([]rune(s)) {
			return color.RGBA{}, false
		}
		ch := []rune(s)[col/6]
		g, ok := glyphs[ch]
		if !ok || col%6 == 5 {
			return color.RGBA{}, false
		}
		return c, g[row][col%6] == '#'
	}
}

func write(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return f.Close()
}

func main() {
	icon := render(128, 128, iconShapes(4, 4, 120)...)
	logoShapes := append(iconShapes(4, 10, 80),
		text("PRESENCE", 98, 26, 3, ink),
		text("BRIDGE", 98, 52, 3, ink),
	)
	// A small busy dot after BRIDGE echoes the two presence colours.
	logoShapes = append(logoShapes, circle(98+6*6*3+6, 52+3.5*3, 5, red))
	logo := render(250, 100, logoShapes...)
	for _, out := range []struct {
		path string
		img  image.Image
	}{{"icon.png", icon}, {"logo.png", logo}} {
		if err := write(out.path, out.img); err != nil {
			fmt.Fprintln(os.Stderr, "mkimages:", err)
			os.Exit(1)
		}
	}
}
