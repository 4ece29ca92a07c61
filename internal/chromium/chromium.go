// Package chromium drives Debian's headless Chromium from tests through
// chromedp, the way a person's browser would meet our pages. Nothing is
// downloaded: the browser is the system's (`apt-get install chromium`, which
// .ci/run does). When it is missing a test fails under CI=true and skips
// otherwise, like the other real peers.
package chromium

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// Paths where Debian installs the browser.
var paths = []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"}

// Path returns the browser's path, or "" when there is none.
func Path() string {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return ""
}

// Require fails the test under CI=true, and skips it otherwise, when no
// browser is installed.
func Require(tb testing.TB) string {
	tb.Helper()
	p := Path()
	if p != "" {
		return p
	}
	const msg = "headless Chromium is not installed: apt-get install -y chromium"
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// New starts a headless browser for the test, with a profile of its own
// and no background traffic (the machine's network is closed), and returns
// a context for chromedp actions. It stops with the test.
func New(tb testing.TB) context.Context {
	tb.Helper()
	path := Require(tb)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return ctx
}
