package bridge

import (
	"time"

	"github.com/presence-bridge/presence-bridge/presence"
)

// MarkUnavailable shows users unavailable now, as an expiry does: Home
// Assistant's entities of each user become unavailable, and the lamps they
// drive show them as absent. The graph source calls it for a user no
// signed-in account covers any more, or whose presence it could not read
// for long; a user the core has no state for yet is published unavailable
// too, so that a retained state left by an earlier run is not shown as
// current. The next update of the user (from any source) that is newer
// than the last applied one makes them available again.
func (c *Core) MarkUnavailable(source string, ids ...presence.UserID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	for _, id := range ids {
		id = presence.CanonicalUserID(string(id))
		usr := c.users[id]
		if usr == nil {
			continue
		}
		usr.expiresAt = time.Time{}
		if usr.state.Version != 0 && !usr.state.Online {
			continue
		}
		if usr.state.Version == 0 {
			usr.state.UserID, usr.state.Source = id, source
		}
		usr.state.Online = false
		usr.state.Version++
		c.fanOutLocked(usr.state)
	}
}
