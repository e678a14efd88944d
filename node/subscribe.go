package node

import "github.com/swarmdb/swarmdb/db"

// SubscribePrefix watches every key that starts with prefix, locally
// written or replicated: one event per accepted change, in commit order.
// A watcher that falls more than the store's watch queue behind is ended
// with db.ErrWatchOverflow. Close the watcher when done.
func (n *Node) SubscribePrefix(prefix string) (*db.Watcher, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	return n.store.WatchPrefix(prefix), nil
}
