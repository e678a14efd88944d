package main

import (
	"fmt"
	"net"
	"strconv"

	"github.com/swarmdb/swarmdb/node"
)

// mainlineFlags are --mainline and --public, which node and bootstrap
// share.
type mainlineFlags struct {
	spec   *string
	public *bool
}

func addMainlineFlags(f *flags) mainlineFlags {
	return mainlineFlags{
		spec: f.String("mainline", "", "comma-separated host:port of BitTorrent mainline DHT routers: find peers, ToolDb servers and a swarmdb DHT to join with no address given"),
		public: f.Bool("public", false, "join the public BitTorrent mainline DHT through its well-known routers; "+
			"this publishes the node's IP address to the whole DHT"),
	}
}

// routers returns the routers the flags name (the public ones first with
// --public); nil when the mainline part is off.
func (m mainlineFlags) routers() ([]string, error) {
	var out []string
	if *m.public {
		out = append(out, splitList(node.PublicMainlineRouters)...)
	}
	for _, r := range splitList(*m.spec) {
		host, port, err := net.SplitHostPort(r)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil || host == "" || port == "0" {
			return nil, fmt.Errorf("--mainline %q: want host:port", r)
		}
		out = append(out, r)
	}
	return out, nil
}

// mainlinePeerEvent makes OnMainlinePeer emit a mainline_peer event.
func mainlinePeerEvent(out *syncEvents) func(node.MainlinePeer) {
	return func(p node.MainlinePeer) {
		out.emit("mainline_peer", fmt.Sprintf("found %s %s over %s", p.Kind, p.Addr, p.Source),
			map[string]any{"host": p.Addr.Addr().String(), "port": p.Addr.Port(), "source": p.Source, "kind": p.Kind})
	}
}

// mainlineReady is the ready event's "mainline" field: "off", or the
// state of the mainline part.
func mainlineReady(st node.MainlineStats, ok bool) any {
	if !ok {
		return "off"
	}
	return map[string]any{"routers": st.Routers, "read_only": st.ReadOnly, "nodes": st.Nodes}
}
