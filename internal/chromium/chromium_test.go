package chromium

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The harness drives the system browser: it loads a page, clicks a button
// that posts a form, and reads the answer.
func TestBrowserClicksThrough(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.Method == http.MethodPost {
			_ = r.ParseForm()
			w.Write([]byte(`<p id="out">hello ` + r.PostForm.Get("who") + `</p>`))
			return
		}
		w.Write([]byte(`<form method="post"><input type="hidden" name="who" value="alex"><button id="go">go</button></form>`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(New(t), 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL), chromedp.Click(chromedp.CSS("#go"))); err != nil {
		t.Fatal(err)
	}
	out, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#out")))
	if err != nil {
		t.Fatal(err)
	}
	if out != "hello alex" {
		t.Errorf("page said %q", out)
	}
}
