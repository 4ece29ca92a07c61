// Package testnet holds the network helpers tests share.
package testnet

import (
	"net"
	"testing"
)

// ClosedAddr returns a loopback address nobody listens on: a port the
// system just handed out and that was closed again.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
