package app

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// clientIDFile keeps the suffix of the default MQTT client id in the data
// directory.
const clientIDFile = "mqtt-client-id"

// mqttClientID returns the MQTT client id to use when mqtt.client_id is
// empty: presence-bridge-<suffix>. Two clients with one id knock each other
// off the broker, so the suffix is unique per installation: 8 random hex
// digits made at the first start and kept in the data directory, so that it
// is also stable across restarts and updates (a broker's ACLs and logs can
// name it). When the data directory cannot be written (a read-only
// container), the suffix is derived from the host name and the base topic
// instead: stable as long as those are, and different for two bridges on
// two hosts or with two base topics.
func mqttClientID(dataDir, baseTopic string, log *slog.Logger) string {
	suffix, err := storedSuffix(dataDir)
	if err != nil {
		host, _ := os.Hostname()
		sum := sha256.Sum256([]byte(host + "\x00" + baseTopic))
		suffix = hex.EncodeToString(sum[:4])
		log.Warn("cannot keep the mqtt client id in the data directory; deriving it from the host name (set mqtt.client_id to choose one)",
			"data_dir", dataDir, "err", err)
	}
	return "presence-bridge-" + suffix
}

// storedSuffix reads the suffix kept in dir, or makes and keeps a new one.
func storedSuffix(dir string) (string, error) {
	path := filepath.Join(dir, clientIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if validSuffix(s) {
			return s, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 4)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	s := hex.EncodeToString(raw)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, clientIDFile+".*")
	if err != nil {
		return "", err
	}
	_, werr := fmt.Fprintln(tmp, s)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return s, nil
}

func validSuffix(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}
