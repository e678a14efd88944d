// Package reliable is swarmdb's stream transport: many reliable, ordered,
// flow-controlled byte streams per connection, congestion-controlled by BBR,
// carried in the datagrams that a secure.DatagramConn seals.
//
// # Why our own transport
//
// The streams ran on quic-go (apernet's fork, for its congestion-control
// hook) from issue 17 on. quic-go has two costs that no configuration
// removes. An idle connection holds about 108 KiB of RSS even bare (a scratch
// measurement: one quic.Transport, 64 idle connections with one stream each),
// against 24.5 KiB for a whole Hyperswarm connection; quic-go runs two
// goroutines per connection, one more pair per Transport, and keeps its TLS
// state. And every packet is encrypted twice: by QUIC's TLS keys, which
// authenticate nothing here, and by the Noise session around it. The Noise
// layer already gives what QUIC's handshake and packet protection exist for
// (peer identity, confidentiality, integrity, replay protection), so this
// package is the rest of QUIC: RFC 9000's streams and flow control and RFC
// 9002's loss detection, with BBR (bbr.go) instead of NewReno.
//
// # What it owns, who uses it, what it must not import
//
// The package is pure protocol: bytes and the time in, bytes, timers and
// stream data out (shared/STYLE.md, rule 2). It starts no goroutines, opens
// no sockets, takes no locks and reads no clock; the secure package owns it,
// drives it from the DatagramConn and from one timer per connection, and
// puts the blocking Session/Stream API on top. It must not import secure,
// net sockets or crypto: everything it sends is sealed by the caller.
//
// # Wire format
//
// A packet is the payload of one sealed datagram, at most
// Config.PacketSize bytes, or the larger size path MTU discovery found
// (pmtu.go):
//
//	packet = packet-number frame...
//
// The packet number is an RFC 9000 §16 variable-length integer, the whole
// number (the Noise layer needs no header protection, so numbers are not
// truncated). Numbers start at 0 and grow by one with every packet a side
// sends, retransmissions included (RFC 9002 §4.2): a lost retransmission is
// then found like any other loss, by the packet and time thresholds.
//
// Frames use the encodings of RFC 9000 §19, a subset:
//
//	0x00       PADDING (path MTU probes)
//	0x01       PING
//	0x02       ACK (no ECN counts; ACK Delay in microseconds, exponent 0)
//	0x04       RESET_STREAM
//	0x05       STOP_SENDING
//	0x08-0x0f  STREAM (OFF 0x04, LEN 0x02, FIN 0x01)
//	0x10       MAX_DATA
//	0x11       MAX_STREAM_DATA
//	0x12       MAX_STREAMS (bidirectional)
//	0x14       DATA_BLOCKED
//	0x15       STREAM_DATA_BLOCKED
//	0x1d       CONNECTION_CLOSE (application variant: code, reason)
//
// Any other frame type is a protocol error. Streams are bidirectional only,
// numbered as in RFC 9000 §2.1: the client (the Noise initiator) opens 0, 4,
// 8, …; the server 1, 5, 9, …. A stream exists for the peer once its first
// frame arrives.
//
// There is no handshake and there are no transport parameters: both sides
// start from the initial limits below and raise them with MAX_DATA,
// MAX_STREAM_DATA and MAX_STREAMS as soon as they know their own.
package reliable
