package yamlconf

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// HostPort checks a host:port (with needPort) or host[:port] value: a host
// name or address, and a port number when there is one.
func HostPort(s string, needPort bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if needPort {
			return fmt.Errorf("%q is not host:port", s)
		}
		host, port = s, ""
	}
	if host == "" && !needPort {
		return fmt.Errorf("%q has no host", s)
	}
	if strings.ContainsAny(host, "/ ?#@") {
		return fmt.Errorf("%q is not a host name or address", s)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("port %q is not a port number", port)
		}
	}
	return nil
}

// Cause strips what the standard library wraps around a URL or file error
// (the operation and the value, which the key path already names), so that
// a message says only what is wrong.
func Cause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
