// Package dnsdisc speaks dns-discovery's multicast DNS (the LAN half of
// discovery-channel, which ToolDb's documents use): a node in server mode
// answers the TXT question for hex(SHA-1(topic)).dns-discovery.local with
// its port, and every node asks that question and reports the peers the
// answers name. With it, a ToolDb server or client on discovery-channel and
// a swarmdb node on one LAN find each other with no DHT at all.
//
// The format (dns-discovery 6.2.3, as discovery-channel 5.5.1 installs it;
// shared/reference/mainline.md §1.4): a multicast query with one TXT
// question for "<40 hex>.dns-discovery.local", sent to 224.0.0.251:5353; an
// answer is a multicast response to the group at the querier's port, with
// one TXT record of the same name holding "token=<base64>" and
// "peers=<base64 of 6-byte IPv4+port entries>", where 0.0.0.0 means "the
// sender's address". The token is SHA-256(secret, querier's IP) in base64:
// a node recognises (and drops) its own answers by it.
//
// Encoding is github.com/miekg/dns. Users: package node. It imports nothing
// of ours.
package dnsdisc

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Domain is dns-discovery's default domain.
const Domain = "dns-discovery.local"

// ErrNotOurs: a DNS message carries nothing of this protocol for us.
var ErrNotOurs = errors.New("dnsdisc: no dns-discovery record for this name")

// Name is the DNS name discovery-channel asks for a topic: the hex of
// SHA-1 of the topic's bytes (its infohash), under Domain, fully qualified.
func Name(topic string) string {
	h := sha1.Sum([]byte(topic))
	return hex.EncodeToString(h[:]) + "." + Domain + "."
}

// AppendQuery encodes the multicast query for name.
func AppendQuery(b []byte, name string) ([]byte, error) {
	m := new(dns.Msg)
	m.Question = []dns.Question{{Name: dns.Fqdn(name), Qtype: dns.TypeTXT, Qclass: dns.ClassINET}}
	return m.PackBuffer(b)
}

// AppendAnswer encodes the response to a query for name: one TXT record
// with token and, when peer is valid, peers naming it. An unspecified IP
// (0.0.0.0) means "the sender's address", a server listening on every
// interface; an IPv6 peer cannot be named (the format is IPv4 only) and is
// left out.
func AppendAnswer(b []byte, name, token string, peer netip.AddrPort) ([]byte, error) {
	txt := []string{"token=" + token}
	if peer.IsValid() && peer.Port() != 0 && (peer.Addr().Is4() || peer.Addr().IsUnspecified()) {
		var raw [6]byte
		if peer.Addr().Is4() {
			ip := peer.Addr().As4()
			copy(raw[:4], ip[:])
		}
		binary.BigEndian.PutUint16(raw[4:], peer.Port())
		txt = append(txt, "peers="+base64.StdEncoding.EncodeToString(raw[:]))
	}
	m := new(dns.Msg)
	m.Response, m.Authoritative = true, true
	m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: txt}}
	return m.PackBuffer(b)
}

// Message is what a received datagram means for name.
type Message struct {
	// Asked: it is a query with a TXT question for name.
	Asked bool
	// Token is the answer's token ("" when it is no answer for name).
	Token string
	// Peers are the addresses the answer names, 0.0.0.0 replaced by from.
	Peers []netip.AddrPort
}

// Parse reads a datagram from from as dns-discovery traffic for name. It is
// ErrNotOurs when it neither asks for name nor answers for it; a malformed
// datagram is an error, never a panic.
func Parse(b []byte, name string, from netip.Addr) (Message, error) {
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		return Message{}, fmt.Errorf("dnsdisc: %w", err)
	}
	name = dns.Fqdn(name)
	var out Message
	if !m.Response {
		for _, q := range m.Question {
			if q.Qtype == dns.TypeTXT && strings.EqualFold(q.Name, name) {
				out.Asked = true
			}
		}
	}
	for _, rr := range append(m.Answer, m.Extra...) {
		t, ok := rr.(*dns.TXT)
		if !ok || !strings.EqualFold(t.Hdr.Name, name) {
			continue
		}
		token, peers := decodeTXT(t.Txt, from)
		out.Token = token
		out.Peers = append(out.Peers, peers...)
	}
	if !out.Asked && out.Token == "" && out.Peers == nil {
		return Message{}, ErrNotOurs
	}
	return out, nil
}

// maxPeersPerAnswer bounds the peers read from one answer (dns-discovery
// sends at most 100).
const maxPeersPerAnswer = 100

// decodeTXT reads the key=value strings of an answer.
func decodeTXT(txt []string, from netip.Addr) (token string, peers []netip.AddrPort) {
	for _, s := range txt {
		k, v, _ := strings.Cut(s, "=")
		switch k {
		case "token":
			token = v
		case "peers":
			raw, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				continue
			}
			for i := 0; i+6 <= len(raw) && len(peers) < maxPeersPerAnswer; i += 6 {
				ip := netip.AddrFrom4([4]byte(raw[i : i+4]))
				port := binary.BigEndian.Uint16(raw[i+4 : i+6])
				if ip.IsUnspecified() {
					ip = from
				}
				if port != 0 && ip.IsValid() {
					peers = append(peers, netip.AddrPortFrom(ip, port))
				}
			}
		}
	}
	return token, peers
}

// Token is dns-discovery's token for a querier at host: SHA-256 of the
// responder's secret then the host's text, in base64.
func Token(secret []byte, host netip.Addr) string {
	h := sha256.New()
	h.Write(secret)
	h.Write([]byte(host.String()))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}
