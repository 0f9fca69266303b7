package node

import (
	"fmt"
	"sort"

	"github.com/shoal-dev/shoal/node/runtime"
)

// CheckEnforceable refuses config keys, among those in set, that the
// member owner cannot enforce (limits.disk.priority where its host has no
// BFQ). The owner decides: this node asks its runtime's detection; for
// another member it reads what that member recorded in the cluster. The
// error wraps runtime.ErrUnenforceable; its message is one line naming the
// key and why (and the member, when it is another).
func (n *Node) CheckEnforceable(owner string, set map[string]string) error {
	keys := make([]string, 0, len(set))
	for k, v := range set {
		if v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if owner == "" || owner == n.cfg.Name {
		host := n.rt.Host()
		for _, k := range keys {
			if err := host.CanEnforce(k); err != nil {
				return err
			}
		}
		return nil
	}
	rec, err := n.fsm.Node(owner)
	if err != nil {
		return nil // an unknown member: its runtime refuses what it cannot do
	}
	for _, k := range keys {
		if why, ok := rec.GetUnenforceableKeys()[k]; ok {
			return fmt.Errorf("member %s: %w", owner, &runtime.UnenforceableError{Key: k, Reason: why})
		}
	}
	return nil
}
