package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/swarmdb/swarmdb/dht"
)

// nodeCacheFile keeps, in the data directory, DHT nodes that answered in
// the last run: swarmdb DHT nodes (the routing table, and bootstrap nodes
// found by name) and mainline DHT nodes. The next start tries them first,
// so a node that once found its network needs neither a bootstrap address
// nor the mainline routers to find it again (BitTorrent clients keep their
// DHT nodes the same way).
const nodeCacheFile = "nodes.json"

const (
	// maxCachedNodes bounds each list in the cache.
	maxCachedNodes = 64
	// nodeCacheInterval is how often a running node saves the cache (and
	// it saves once more when it stops).
	nodeCacheInterval = 5 * time.Minute
)

// nodeCache is the file's content.
type nodeCache struct {
	DHT      []netip.AddrPort `json:"dht"`
	Mainline []netip.AddrPort `json:"mainline"`
	Saved    time.Time        `json:"saved"`
}

// loadNodeCache reads the cache in dir. A missing file is an empty cache; a
// damaged one is reported and ignored (it only holds hints).
func loadNodeCache(dir string) (nodeCache, error) {
	b, err := os.ReadFile(filepath.Join(dir, nodeCacheFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nodeCache{}, nil
	}
	if err != nil {
		return nodeCache{}, fmt.Errorf("node: read %s: %w", nodeCacheFile, err)
	}
	var c nodeCache
	if err := json.Unmarshal(b, &c); err != nil {
		return nodeCache{}, fmt.Errorf("node: %s: %w", nodeCacheFile, err)
	}
	c.DHT = validAddrs(c.DHT)
	c.Mainline = validAddrs(c.Mainline)
	return c, nil
}

// save writes the cache atomically (a temporary file renamed over the old
// one), so a crash never leaves half a file.
func (c nodeCache) save(dir string) error {
	c.DHT = validAddrs(c.DHT)
	c.Mainline = validAddrs(c.Mainline)
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, nodeCacheFile+".*")
	if err != nil {
		return fmt.Errorf("node: save %s: %w", nodeCacheFile, err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("node: save %s: %w", nodeCacheFile, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, nodeCacheFile)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("node: save %s: %w", nodeCacheFile, err)
	}
	return nil
}

// validAddrs keeps the usable, distinct addresses, at most maxCachedNodes.
func validAddrs(addrs []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, min(len(addrs), maxCachedNodes))
	for _, a := range addrs {
		if a.IsValid() && a.Port() != 0 && !a.Addr().IsUnspecified() && !slices.Contains(out, a) && len(out) < maxCachedNodes {
			out = append(out, a)
		}
	}
	return out
}

// saveCacheLoop saves the node cache every nodeCacheInterval until the
// node stops (shutdown saves it once more).
func (n *Node) saveCacheLoop() {
	defer n.wg.Done()
	t := time.NewTicker(nodeCacheInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.saveCache()
		}
	}
}

// saveCache saves the node cache (see saveNodeCache).
func (n *Node) saveCache() {
	if err := saveNodeCache(n.cfg.DataDir, n.swarm.Node(), n.mainline, n.cache); err != nil {
		n.log.Warn("node cache not saved", "err", err)
	}
}

// saveNodeCache writes the DHT nodes worth trying at the next start: dn's
// routing table and bootstrap nodes (configured, cached, found by name)
// and the mainline part's routing table (part may be nil). An empty list
// keeps old's: a node that lost its network must not forget where it was.
func saveNodeCache(dir string, dn *dht.Node, part *mainlinePart, old *nodeCache) error {
	if dn == nil {
		return nil
	}
	c := nodeCache{DHT: append(dn.Contacts(), dn.BootstrapNodes()...), Saved: time.Now().UTC()}
	if part != nil {
		c.Mainline = part.ml.Nodes()
	}
	if len(validAddrs(c.DHT)) == 0 {
		c.DHT = old.DHT
	}
	if len(validAddrs(c.Mainline)) == 0 {
		c.Mainline = old.Mainline
	}
	return c.save(dir)
}
