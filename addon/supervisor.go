package addon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Supervisor API errors, wrapped by the errors Load and the Notifier return.
var (
	// ErrServiceNotEnabled: no add-on provides MQTT (HTTP 400 "Service not
	// enabled"): the Mosquitto broker add-on is not installed or not started.
	ErrServiceNotEnabled = errors.New("no MQTT broker in Home Assistant")
	// ErrForbidden: the Supervisor refused the token for this call (HTTP
	// 403): the add-on's manifest lacks the permission.
	ErrForbidden = errors.New("refused by the Supervisor")
	// ErrUnreachable: the Supervisor (or Home Assistant behind it) did not
	// answer.
	ErrUnreachable = errors.New("supervisor unreachable")
)

// maxAnswer bounds what is read of a Supervisor answer.
const maxAnswer = 1 << 20

// requestTimeout bounds one Supervisor call when ctx has no deadline.
const requestTimeout = 10 * time.Second

// supervisor is a minimal client of the Supervisor REST API.
type supervisor struct {
	url    string // without trailing slash
	token  string
	client *http.Client
}

func newSupervisor(url, token string, client *http.Client) *supervisor {
	if url == "" {
		url = DefaultSupervisorURL
	}
	if client == nil {
		// Supervisor calls never go through a proxy.
		client = &http.Client{Transport: &http.Transport{Proxy: nil}}
	}
	return &supervisor{url: strings.TrimRight(url, "/"), token: token, client: client}
}

// envelope is the Supervisor's answer wrapper.
type envelope struct {
	Result  string          `json:"result"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// statusError is a non-2xx answer.
type statusError struct {
	code    int
	message string
}

func (e *statusError) Error() string {
	if e.message != "" {
		return fmt.Sprintf("HTTP %d: %s", e.code, e.message)
	}
	return fmt.Sprintf("HTTP %d", e.code)
}

func (e *statusError) Unwrap() error {
	if e.code == http.StatusForbidden {
		return ErrForbidden
	}
	return nil
}

// do sends method path with an optional JSON body and returns the answer's
// body on a 2xx. A non-2xx is a *statusError carrying the Supervisor's
// message; a transport failure wraps ErrUnreachable.
func (s *supervisor) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, rd)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%w: read answer: %w", ErrUnreachable, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, &statusError{code: resp.StatusCode, message: errorMessage(data)}
	}
	return data, nil
}

// errorMessage extracts the Supervisor's error message from an answer body,
// or a short printable prefix of a body that is not an envelope.
func errorMessage(body []byte) string {
	var env envelope
	if json.Unmarshal(body, &env) == nil && env.Message != "" {
		return env.Message
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// getData GETs path and returns the envelope's data.
func (s *supervisor) getData(ctx context.Context, path string) (json.RawMessage, error) {
	body, err := s.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if env.Result != "ok" {
		return nil, fmt.Errorf("answer result %q: %s", env.Result, env.Message)
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return nil, errors.New("answer has no data")
	}
	return env.Data, nil
}

// MQTTService is the broker the Supervisor's MQTT service names.
type MQTTService struct {
	Host     string
	Port     int
	SSL      bool
	Username string
	Password string
	Protocol string
	// Provider is the slug of the add-on providing the broker.
	Provider string
}

// URL is the broker's URL in the form mqtt.url takes.
func (m MQTTService) URL() string {
	scheme := "tcp"
	if m.SSL {
		scheme = "ssl"
	}
	host := m.Host
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + ":" + strconv.Itoa(m.Port)
}

// mqttServiceJSON is the data of GET /services/mqtt. The port has been seen
// both as a number and as a string; the provider is "addon" (or "app" in
// newer Supervisors).
type mqttServiceJSON struct {
	Addon    string          `json:"addon"`
	App      string          `json:"app"`
	Host     string          `json:"host"`
	Port     json.RawMessage `json:"port"`
	SSL      bool            `json:"ssl"`
	Protocol string          `json:"protocol"`
	Username string          `json:"username"`
	Password string          `json:"password"`
}

// parseMQTTService decodes the data of GET /services/mqtt.
func parseMQTTService(data []byte) (MQTTService, error) {
	var raw mqttServiceJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return MQTTService{}, fmt.Errorf("decode mqtt service: %w", err)
	}
	if raw.Host == "" {
		return MQTTService{}, errors.New("mqtt service: no host")
	}
	if strings.ContainsAny(raw.Host, "/@?# \t\r\n") {
		return MQTTService{}, fmt.Errorf("mqtt service: bad host %q", raw.Host)
	}
	port, err := parsePort(raw.Port)
	if err != nil {
		return MQTTService{}, fmt.Errorf("mqtt service: %w", err)
	}
	svc := MQTTService{
		Host: raw.Host, Port: port, SSL: raw.SSL,
		Username: raw.Username, Password: raw.Password,
		Protocol: raw.Protocol, Provider: raw.Addon,
	}
	if svc.Provider == "" {
		svc.Provider = raw.App
	}
	return svc, nil
}

// parsePort accepts 1883 and "1883".
func parsePort(raw json.RawMessage) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, errors.New("no port")
	}
	text := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, fmt.Errorf("port %s: %w", raw, err)
		}
		text = strings.TrimSpace(text)
	}
	port, err := strconv.Atoi(text)
	if err != nil || port < 1 || port > 65535 {
		return 0, fmt.Errorf("bad port %s", raw)
	}
	return port, nil
}

// mqttService asks the Supervisor for the MQTT broker.
func (s *supervisor) mqttService(ctx context.Context) (MQTTService, error) {
	data, err := s.getData(ctx, "/services/mqtt")
	if err != nil {
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusBadRequest {
			return MQTTService{}, fmt.Errorf("%w (%w)", ErrServiceNotEnabled, err)
		}
		return MQTTService{}, err
	}
	return parseMQTTService(data)
}

// optionsConfig asks the Supervisor for the add-on's own validated options
// (the content of /data/options.json), for when that file is unreadable.
func (s *supervisor) optionsConfig(ctx context.Context) ([]byte, error) {
	return s.getData(ctx, "/addons/self/options/config")
}
