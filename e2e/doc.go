// Package e2e holds the end-to-end tests and load runs of the home bridge:
// the Service Bus stand-in → the presence-bridge binary → a real mosquitto →
// an MQTT subscriber standing in for Home Assistant. The benchmarks measure
// the bridge beside the raw hops (the stand-in alone, mosquitto alone) in
// the same run, so that the bridge's own share can be told apart.
//
// The tests build the binary once (go build) and need mosquitto and
// Debian's python3-qpid-proton; they are skipped with -short.
package e2e
