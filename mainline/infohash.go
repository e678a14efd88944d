package mainline

import "crypto/sha1"

// Infohash is a 160-bit key of the mainline DHT.
type Infohash [20]byte

// TopicInfohash is the infohash discovery-channel 5.5.1 uses for a topic
// string: SHA-1 of its UTF-8 bytes, unprefixed (its join(id) hashes
// Buffer.from(id) with sha1). ToolDb servers and clients announce and look
// up their topic under it, so swarmdb does the same. It is not the swarm's
// own topic key, which is SHA-256 of the same string.
func TopicInfohash(topic string) Infohash { return sha1.Sum([]byte(topic)) }

// BootstrapName is the name publicly reachable swarmdb nodes announce their
// swarmdb DHT address under. The version is part of the name: a new DHT
// wire version gets a new name, so old and new nodes do not mistake each
// other for bootstrap nodes.
const BootstrapName = "swarmdb/bootstrap/v1"

// BootstrapInfohash is SHA-1 of BootstrapName.
var BootstrapInfohash = TopicInfohash(BootstrapName)

// PublicRouters are the well-known public routers of the mainline DHT, the
// entry points every BitTorrent client ships (host:port, comma-separated).
// Nothing in swarmdb uses them unless the user asks (swarmdb's --public):
// joining the public DHT publishes the node's IP address. No test, default
// or example contacts them.
const PublicRouters = "router.bittorrent.com:6881,router.utorrent.com:6881,dht.transmissionbt.com:6881,dht.libtorrent.org:25401"
