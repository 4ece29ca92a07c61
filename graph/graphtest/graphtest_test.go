package graphtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func post(t *testing.T, s *Server, token string, ids int) *http.Response {
	t.Helper()
	var list []string
	for i := range ids {
		list = append(list, fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
	}
	body, _ := json.Marshal(map[string]any{"ids": list})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL()+"/v1.0/communications/getPresencesByUserId", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestLimits: 650 ids per batch, and the tenant's request limit answered
// with 429 and Retry-After, counted apart from scripted throttling; another
// tenant is not affected; an app token cannot read /me.
func TestLimits(t *testing.T) {
	s := New(Options{RateLimit: 3})
	defer s.Close()
	if r := post(t, s, "app.t1", 651); r.StatusCode != http.StatusBadRequest {
		t.Errorf("651 ids: HTTP %d, want 400", r.StatusCode)
	}
	for i := range 2 {
		if r := post(t, s, "app.t1", 650); r.StatusCode != http.StatusOK {
			t.Fatalf("batch %d: HTTP %d", i, r.StatusCode)
		}
	}
	r := post(t, s, "app.t1", 1)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Errorf("over the limit: HTTP %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := post(t, s, "app.t2", 1); r.StatusCode != http.StatusOK {
		t.Errorf("another tenant: HTTP %d", r.StatusCode)
	}
	s.Throttle("t2", 1, http.StatusTooManyRequests, 0)
	post(t, s, "app.t2", 1)
	if s.RateLimited("t1") != 1 || s.RateLimited("") != 1 || s.Batches("t1") != 2 || s.Batches("") != 3 || s.BatchIDs() != 1301 {
		t.Errorf("rate limited %d/%d, batches %d/%d, ids %d", s.RateLimited("t1"), s.RateLimited(""), s.Batches("t1"), s.Batches(""), s.BatchIDs())
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL()+"/v1.0/me/presence", nil)
	req.Header.Set("Authorization", "Bearer app.t3")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("/me with an app token: HTTP %d, want 400", resp.StatusCode)
	}
}
