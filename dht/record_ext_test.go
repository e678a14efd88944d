package dht_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
)

// A record with a WebSocket URL: the count byte gets bit 7, then the
// extension block (length, type 1, length, URL) follows the relays.
func TestPeerRecordExtGolden(t *testing.T) {
	r := dht.PeerRecord{PublicKey: bytes.Repeat([]byte{7}, 32),
		Relays: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.1:49737")}, WebSocketURL: "wss://a.example:443"}
	got := hex.EncodeToString(dht.AppendPeerRecord(nil, r))
	want := hex.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "81" + "04cb007101c249" +
		"15" + "01" + "13" + hex.EncodeToString([]byte("wss://a.example:443"))
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	back, rest, err := dht.ParsePeerRecord(dht.AppendPeerRecord(nil, r))
	if err != nil || len(rest) != 0 || back.WebSocketURL != r.WebSocketURL || back.Relays[0] != r.Relays[0] {
		t.Fatalf("round trip: %+v %x %v", back, rest, err)
	}
	// Without extensions the record is the version-1 record, byte for byte.
	if v1 := dht.AppendPeerRecord(nil, r.WithoutExt()); !bytes.Equal(v1, dht.AppendPeerRecord(nil, dht.PeerRecord{PublicKey: r.PublicKey, Relays: r.Relays})) || v1[32] != 1 {
		t.Fatalf("version-1 form: %x", v1)
	}
}

// Extensions of types this node does not know are kept and passed on;
// broken or non-canonical blocks are refused.
func TestPeerRecordExtParse(t *testing.T) {
	key := hex.EncodeToString(make([]byte, 32))
	url := hex.EncodeToString([]byte("ws://h:1"))
	for _, c := range []struct {
		name, hex string
		ok        bool
		url       string
	}{
		{"url", key + "80" + "0a" + "0108" + url, true, "ws://h:1"},
		{"unknown type kept", key + "80" + "03" + "0901ff", true, ""},
		{"url and unknown", key + "80" + "0c" + "0108" + url + "0900", true, "ws://h:1"},
		{"empty block", key + "80" + "00", false, ""},
		{"out of order", key + "80" + "0c" + "0900" + "0108" + url, false, ""},
		{"entry too long", key + "80" + "03" + "0105ff", false, ""},
		{"bad scheme", key + "80" + "0a" + "0108" + hex.EncodeToString([]byte("http://h")), false, ""},
		{"space in url", key + "80" + "0a" + "0108" + hex.EncodeToString([]byte("ws://h 1")), false, ""},
		{"count bits beyond relays", key + "84", false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, _ := hex.DecodeString(c.hex)
			rec, rest, err := dht.ParsePeerRecord(b)
			if !c.ok {
				if !errors.Is(err, dht.ErrBadRecord) {
					t.Fatalf("parsed %+v, err %v", rec, err)
				}
				return
			}
			if err != nil || len(rest) != 0 || rec.WebSocketURL != c.url {
				t.Fatalf("%+v %x %v", rec, rest, err)
			}
			if again := dht.AppendPeerRecord(nil, rec); !bytes.Equal(again, b) {
				t.Fatalf("re-encoded %x", again)
			}
		})
	}
}

func TestValidWebSocketURL(t *testing.T) {
	for u, ok := range map[string]bool{
		"wss://node.example": true, "ws://203.0.113.5:9000": true, "wss://[2001:db8::1]:443/x": true,
		"": false, "wss://": false, "ws://:80": false, "https://x": false, "ws://a b": false,
		"ws://" + string(bytes.Repeat([]byte{'a'}, dht.MaxWebSocketURL)): false,
	} {
		if dht.ValidWebSocketURL(u) != ok {
			t.Errorf("ValidWebSocketURL(%q) = %v", u, !ok)
		}
	}
}

// Mixed networks: a node with a WebSocket URL announces to storing nodes
// of which half predate record extensions. Every storing node keeps the
// record (the old ones its version-1 form), a current looker sees the URL,
// and an old looker still parses every reply and finds the peer.
func TestRecordExtMixedNetwork(t *testing.T) {
	for _, oldShare := range []int{0, 2, 1} { // none, every second, all
		name := map[int]string{0: "all current", 2: "half old", 1: "all old"}[oldShare]
		t.Run(name, func(t *testing.T) {
			nw := startNet(t, 10, func(i int, c *dht.Config) {
				if oldShare != 0 && i%oldShare == 0 {
					dht.SetLegacyRecords(c)
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const url = "wss://node.example:8443"
			announcer := addEphemeral(t, nw, dht.Config{WebSocketURL: url})
			current := addEphemeral(t, nw, dht.Config{})
			oldCfg := dht.Config{}
			dht.SetLegacyRecords(&oldCfg)
			old := addEphemeral(t, nw, oldCfg)
			key := newKey(t)
			pub := key.Public().(ed25519.PublicKey)
			topic := dht.TopicKey("ext-" + name)
			res, err := announcer.Announce(ctx, topic, key)
			if err != nil {
				t.Fatal(err)
			}
			if res.Stored < 10 {
				t.Errorf("stored at %d of 10 nodes", res.Stored)
			}
			wantURL := url
			if oldShare == 1 {
				wantURL = "" // no node keeps the extension
			}
			for _, c := range []struct {
				who  string
				n    *dht.Node
				want string
			}{{"current looker", current, wantURL}, {"old looker", old, ""}} {
				lr, err := c.n.Lookup(ctx, topic)
				if err != nil {
					t.Fatalf("%s: %v", c.who, err)
				}
				found := false
				for _, r := range lr.Peers {
					if r.PublicKey.Equal(pub) {
						found = true
						if r.WebSocketURL != c.want {
							t.Errorf("%s: url %q, want %q", c.who, r.WebSocketURL, c.want)
						}
					}
				}
				if !found {
					t.Errorf("%s: peer not found in %d records", c.who, len(lr.Peers))
				}
			}
		})
	}
}
