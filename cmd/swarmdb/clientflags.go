package main

import (
	"os"
	"strings"
	"time"

	"github.com/swarmdb/swarmdb/bridge/client"
)

// put, get and watch are ToolDb clients of a running node's WebSocket
// endpoint (`swarmdb node --ws`) through package bridge/client. The node
// verifies the client's descriptor against its topic, so the client must
// name the same topic (--topic, or SWARMDB_TOPIC).

// clientDefaultTimeout bounds put's confirmation and get's answer. A node
// asks its peers for a key it does not hold and waits up to 2 s for them
// (bridge's GetTimeout), so 5 s leaves room for the relay.
const clientDefaultTimeout = 5 * time.Second

// clientFlags are the flags put, get and watch share.
type clientFlags struct {
	ws      string // as given; clientArgs.url is the URL
	topic   string
	keyFile string
	timeout time.Duration
	asJSON  bool
}

func (c *clientFlags) register(f *flags, withTimeout bool) {
	f.StringVar(&c.ws, "ws", "127.0.0.1:9000", "the node's WebSocket endpoint: host:port, ws://host:port or wss://host[:port]")
	f.StringVar(&c.topic, "topic", os.Getenv("SWARMDB_TOPIC"), "the node's topic (default $SWARMDB_TOPIC); the node refuses clients of another topic")
	f.StringVar(&c.keyFile, "key", "", `ToolDb account file ({"pub","priv"} hex, or a node's identity.json), created (0600) if missing; default a fresh account per run`)
	if withTimeout {
		f.DurationVar(&c.timeout, "timeout", clientDefaultTimeout, "how long to wait for the node's answer")
	}
	f.BoolVar(&c.asJSON, "json", false, "print whole records as JSON")
}

// clientArgs is a parsed client command line.
type clientArgs struct {
	flags clientFlags
	url   string // the node's WebSocket URL
	args  []string
	user  *client.User
}

// parseClientArgs parses a client command's flags and its positional
// arguments (usage names them in f.args) and loads the ToolDb account. It
// returns ok false with the exit code when the command must stop.
func parseClientArgs(f *flags, withTimeout bool, args []string, std stdio) (clientArgs, int, bool) {
	var cf clientFlags
	cf.register(f, withTimeout)
	pos, code, ok := f.parse(args, len(strings.Fields(f.args)), std)
	if !ok {
		return clientArgs{}, code, false
	}
	if pos[0] == "" {
		return clientArgs{}, f.usageError(std, "empty KEY"), false
	}
	url, err := clientWSURL(cf.ws)
	if err != nil {
		return clientArgs{}, f.usageError(std, "%v", err), false
	}
	if cf.topic == "" {
		return clientArgs{}, f.usageError(std, "no topic: pass --topic (the node's --topic) or set SWARMDB_TOPIC"), false
	}
	user, err := client.LoadUser(cf.keyFile)
	if err != nil {
		return clientArgs{}, failed(std, f.name, err), false
	}
	return clientArgs{flags: cf, url: url, args: pos, user: user}, exitOK, true
}
