package hue

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// DeviceType is the name a new key gets on the bridge:
// presence-bridge#<device>, the device name cut to the 19 characters a Hue
// bridge allows (and its application name to 20).
func DeviceType(device string) string {
	const app = "presence-bridge" // 15 of the 20 characters allowed
	device = strings.TrimSpace(device)
	if len(device) > 19 {
		device = device[:19]
	}
	for !utf8.ValidString(device) {
		device = device[:len(device)-1]
	}
	if device == "" {
		return app
	}
	return app + "#" + device
}

// ErrPairTimeout: the link button was not pressed in time.
var ErrPairTimeout = errors.New("link button not pressed in time")

// PairOptions configure Pair.
type PairOptions struct {
	Host string
	// DeviceType names the new key on the bridge: see DeviceType.
	DeviceType string
	// Timeout is how long to wait for the link button (default 2 minutes).
	Timeout time.Duration
	// PollInterval is the time between attempts (default 1 second).
	PollInterval time.Duration
	// HTTPClient is optional.
	HTTPClient *http.Client
	// Waiting is called once, after the first attempt found the link button
	// not pressed, to prompt the user.
	Waiting func()
}

// Pair asks the bridge for a new API key until its link button is pressed,
// and returns the key. It gives up with ErrPairTimeout after the timeout.
func Pair(ctx context.Context, opts PairOptions) (string, error) {
	c, err := NewClient(ClientOptions{Host: opts.Host, HTTPClient: opts.HTTPClient})
	if err != nil {
		return "", err
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	interval := opts.PollInterval
	if interval <= 0 {
		interval = time.Second
	}
	dt := opts.DeviceType
	if dt == "" {
		dt = DeviceType("")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	prompted := false
	deadline, _ := ctx.Deadline()
	for {
		if !time.Now().Before(deadline) {
			// Checked here too: the poll timer and the deadline may fire together.
			return "", fmt.Errorf("hue: pair with %s: %w (waited %s)", c.Host(), ErrPairTimeout, timeout)
		}
		user, err := c.CreateUser(ctx, dt)
		if err == nil {
			return user, nil
		}
		switch {
		case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
			return "", fmt.Errorf("hue: pair with %s: %w (waited %s)", c.Host(), ErrPairTimeout, timeout)
		case ctx.Err() != nil:
			return "", ctx.Err()
		case errors.Is(err, ErrLinkButton):
			if !prompted && opts.Waiting != nil {
				opts.Waiting()
			}
			prompted = true
		case errors.Is(err, ErrRateLimited), isServerError(err):
			// A busy bridge: try again.
		default:
			return "", fmt.Errorf("hue: pair with %s: %w", c.Host(), err)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("hue: pair with %s: %w (waited %s)", c.Host(), ErrPairTimeout, timeout)
			}
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

func isServerError(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code >= 500
}

// ListGroups returns the groups of a bridge, sorted by id (`hue groups`).
func ListGroups(ctx context.Context, host, username string, hc *http.Client) ([]Group, error) {
	c, err := NewClient(ClientOptions{Host: host, Username: username, HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	return c.Groups(ctx)
}
