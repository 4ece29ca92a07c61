//go:build !unix

package graphsource

import "os"

// lockFile does nothing where flock is missing: the bridge ships for Linux
// only; elsewhere `login` or `accounts remove` beside a running daemon may
// race with it.
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) error { return nil }
