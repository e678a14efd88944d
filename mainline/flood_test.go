package mainline

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/anacrolix/dht/v2/krpc"
	"github.com/anacrolix/torrent/bencode"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestForgedAnnounceFlood: 10,000 announces from 100 source addresses, for
// 200 infohashes, each with a valid token (a forger only needs to ask for
// one per address), leave the peer store within its caps.
func TestForgedAnnounceFlood(t *testing.T) {
	const maxHashes, maxPer = 16, 32
	n := startNode(t, nil, func(c *Config) {
		c.MaxInfohashes, c.MaxPeersPerInfohash = maxHashes, maxPer
		c.SendRate, c.SendBurst = 1e6, 1000 // the replies to the flood must not starve the token requests
	})
	var id krpc.ID
	sent := 0
	for src := range 100 {
		c := newRawClient(t, fmt.Sprintf("127.0.%d.%d:0", 10+src/250, 1+src%250))
		r, ok := c.query(n.LocalAddr(), "get_peers", krpc.MsgArgs{ID: id, InfoHash: krpc.ID(TopicInfohash("x"))}, 2*time.Second)
		if !ok || r.R == nil || r.R.Token == nil {
			t.Fatalf("source %d: no token", src)
		}
		for j := range 100 {
			port := 1000 + j
			ih := TopicInfohash(fmt.Sprint((src*100 + j) / 250))
			b, err := bencode.Marshal(krpc.Msg{T: "ab", Y: "q", Q: "announce_peer",
				A: &krpc.MsgArgs{ID: id, InfoHash: krpc.ID(ih), Port: &port, Token: *r.R.Token}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.conn.WriteTo(b, net.UDPAddrFromAddrPort(n.LocalAddr())); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		time.Sleep(5 * time.Millisecond) // let the inbox drain: this tests the caps, not the inbox
		c.conn.Close()
	}
	var s Stats
	testutil.Eventually(t, waitLimit, func() bool {
		s = n.Stats()
		return s.AnnouncesReceived+s.DroppedBusy >= uint64(sent)
	}, "all %d announces received or dropped", sent)
	if s.StoredInfohashes > maxHashes || s.StoredPeers > maxHashes*maxPer {
		t.Fatalf("after %d announces: %d infohashes, %d peers stored; caps %d, %d",
			sent, s.StoredInfohashes, s.StoredPeers, maxHashes, maxHashes*maxPer)
	}
	if s.AnnouncesReceived < uint64(sent)/2 {
		t.Fatalf("only %d of %d announces stored (%d dropped busy): the flood did not reach the store", s.AnnouncesReceived, sent, s.DroppedBusy)
	}
	t.Logf("%d announces: %d stored, %d dropped busy; store holds %d infohashes, %d peers",
		sent, s.AnnouncesReceived, s.DroppedBusy, s.StoredInfohashes, s.StoredPeers)
}
