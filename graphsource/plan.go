package graphsource

import (
	"github.com/presence-bridge/presence-bridge/graph"
	"github.com/presence-bridge/presence-bridge/presence"
)

// job is one Graph request of a cycle: a batch read of up to 650 users with
// an account holding Presence.Read.All, or an account's own presence.
type job struct {
	acct  *account
	batch bool
	users []presence.UserID
}

// plan assigns every user to a covering account, in this order of
// preference: the first active account holding Presence.Read.All whose
// batch reads answer for the user (one request covers up to 650 users, so
// a household costs one call per cycle), else the user's own active
// account (/me/presence). accts are in sign-in order, so the choice is
// stable from cycle to cycle. Users left over are uncovered.
func plan(users []presence.UserID, accts []*account) (jobs []job, uncovered []presence.UserID) {
	own := make(map[presence.UserID]*account)
	var readers []*account
	for _, a := range accts {
		if a.State != StateActive {
			continue
		}
		if a.ReadsAll() && !a.noBatch {
			readers = append(readers, a)
		}
		if _, dup := own[a.ObjectID]; !dup {
			own[a.ObjectID] = a
		}
	}
	batches := make(map[*account][]presence.UserID)
	var order []*account
	var mine []*account
	for _, u := range users {
		var by *account
		for _, r := range readers {
			if !r.missing[u] {
				by = r
				break
			}
		}
		switch {
		case by != nil:
			if _, seen := batches[by]; !seen {
				order = append(order, by)
			}
			batches[by] = append(batches[by], u)
		case own[u] != nil:
			mine = append(mine, own[u])
		default:
			uncovered = append(uncovered, u)
		}
	}
	for _, r := range order {
		ids := batches[r]
		for len(ids) > 0 {
			n := min(len(ids), graph.MaxBatch)
			jobs = append(jobs, job{acct: r, batch: true, users: ids[:n:n]})
			ids = ids[n:]
		}
	}
	for _, a := range mine {
		jobs = append(jobs, job{acct: a, users: []presence.UserID{a.ObjectID}})
	}
	return jobs, uncovered
}
