// Package testnet holds the network helpers tests share.
package testnet

import (
	"net"
	"strconv"
	"testing"
)

// FreePort returns a loopback port the system just handed out and that was
// closed again, for a server started as another process.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// ClosedAddr returns a loopback address nobody listens on: a port the
// system just handed out and that was closed again.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
