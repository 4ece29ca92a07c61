package addon

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

const testToken = "test-supervisor-token"

// call is one request the fake Supervisor received.
type call struct {
	Method, Path string
	Body         map[string]string
}

// answer is a canned reply.
type answer struct {
	code int
	body string
}

// fakeSupervisor is an httptest Supervisor: it checks the token, answers
// canned replies by "METHOD /path" and records every call.
type fakeSupervisor struct {
	srv *httptest.Server

	mu      sync.Mutex
	answers map[string]answer
	calls   []call
	notify  chan call // every notification call, buffered
}

func newFakeSupervisor(t *testing.T, answers map[string]answer) *fakeSupervisor {
	t.Helper()
	f := &fakeSupervisor{answers: answers, notify: make(chan call, 64)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSupervisor) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"result":"error","message":"Invalid token"}`)
		return
	}
	c := call{Method: r.Method, Path: r.URL.Path}
	if r.Method == http.MethodPost {
		if r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want json", http.StatusUnsupportedMediaType)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&c.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	key := r.Method + " " + r.URL.Path
	f.mu.Lock()
	f.calls = append(f.calls, c)
	a, ok := f.answers[key]
	f.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/core/api/services/persistent_notification/") {
		f.notify <- c
		if !ok {
			a = answer{code: 200, body: `[]`}
			ok = true
		}
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"result":"error","message":"not found"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.code)
	io.WriteString(w, a.body)
}

func (f *fakeSupervisor) setAnswer(key string, a answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[key] = a
}

func (f *fakeSupervisor) paths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		out = append(out, c.Method+" "+c.Path)
	}
	return out
}

func TestParseMQTTService(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    MQTTService
		wantURL string
		wantErr string
	}{
		{
			name:    "port number",
			data:    `{"addon":"core_mosquitto","host":"core-mosquitto","port":1883,"ssl":false,"protocol":"3.1.1","username":"addons","password":"pw"}`,
			want:    MQTTService{Host: "core-mosquitto", Port: 1883, Username: "addons", Password: "pw", Protocol: "3.1.1", Provider: "core_mosquitto"},
			wantURL: "tcp://core-mosquitto:1883",
		},
		{
			name:    "port string, ssl, app provider",
			data:    `{"app":"core_mosquitto","host":"core-mosquitto","port":"8883","ssl":true,"protocol":"5","username":"u","password":"p"}`,
			want:    MQTTService{Host: "core-mosquitto", Port: 8883, SSL: true, Username: "u", Password: "p", Protocol: "5", Provider: "core_mosquitto"},
			wantURL: "ssl://core-mosquitto:8883",
		},
		{
			name:    "ipv6 host",
			data:    `{"host":"fd00::1","port":1883}`,
			want:    MQTTService{Host: "fd00::1", Port: 1883},
			wantURL: "tcp://[fd00::1]:1883",
		},
		{name: "no host", data: `{"port":1883}`, wantErr: "no host"},
		{name: "host with slash", data: `{"host":"a/b","port":1883}`, wantErr: "bad host"},
		{name: "no port", data: `{"host":"h"}`, wantErr: "no port"},
		{name: "null port", data: `{"host":"h","port":null}`, wantErr: "no port"},
		{name: "port zero", data: `{"host":"h","port":0}`, wantErr: "bad port"},
		{name: "port too big", data: `{"host":"h","port":"70000"}`, wantErr: "bad port"},
		{name: "port word", data: `{"host":"h","port":"mqtt"}`, wantErr: "bad port"},
		{name: "port float", data: `{"host":"h","port":1883.5}`, wantErr: "bad port"},
		{name: "port object", data: `{"host":"h","port":{}}`, wantErr: "bad port"},
		{name: "ssl as string", data: `{"host":"h","port":1,"ssl":"yes"}`, wantErr: "decode"},
		{name: "not an object", data: `[1]`, wantErr: "decode"},
		{name: "garbage", data: `{`, wantErr: "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMQTTService([]byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.URL() != tt.wantURL {
				t.Errorf("URL = %q, want %q", got.URL(), tt.wantURL)
			}
		})
	}
}

func FuzzParseMQTTService(f *testing.F) {
	f.Add([]byte(`{"addon":"core_mosquitto","host":"core-mosquitto","port":1883,"ssl":false}`))
	f.Add([]byte(`{"host":"h","port":"1883","ssl":true}`))
	f.Add([]byte(`{"host":"::1","port":" 1 "}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		svc, err := parseMQTTService(data)
		if err != nil {
			return
		}
		if svc.Host == "" || svc.Port < 1 || svc.Port > 65535 {
			t.Fatalf("accepted %+v", svc)
		}
		if u := svc.URL(); !strings.HasPrefix(u, "tcp://") && !strings.HasPrefix(u, "ssl://") {
			t.Fatalf("URL %q", u)
		}
	})
}

func TestErrorMessage(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"result":"error","message":"Service not enabled"}`, "Service not enabled"},
		{`plain text`, "plain text"},
		{"a\nb\x00c", "a b c"},
		{strings.Repeat("x", 300), strings.Repeat("x", 200)},
		{``, ``},
	}
	for _, tt := range tests {
		if got := errorMessage([]byte(tt.body)); got != tt.want {
			t.Errorf("errorMessage(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}
