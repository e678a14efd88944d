package natlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// A blast measures what a lab path carries: a sender sends UDP datagrams as
// fast as it can for a while, and a sink counts what arrives. Both are
// processes of their own in their hosts' namespaces (the calling package's
// test binary, re-run with only its blast helper test): a delay line then
// shares the CPU with them as it does with a bench's endpoints, but not the
// calling process's Go scheduler. The sender hands the kernel up to 48
// datagrams per system call (UDP_SEGMENT, as the transports do; one send is
// 64 KiB at most), which the lab's veths cut into single frames before the
// first router (vethPair), and the sink
// reads up to 64 per recvmmsg, so neither end is what limits.

// BlastConfig is one blast.
type BlastConfig struct {
	// Helper is the calling package's test that calls BlastEnd.
	Helper string
	// From sends; To runs the sink.
	From, To *Host
	// SrcPort is the sender's port. Zero means any.
	SrcPort int
	// ThroughNATs sends between two hosts behind NAT routers, to the
	// sink's router's public address: the sink first sends one datagram
	// from BlastPort to the sender's router at SrcPort, which opens its own
	// NAT toward the sender (a port-restricted router keeps the sender's
	// port; see rulesetFor). False sends to To's own address.
	ThroughNATs bool
	// For is how long the sender sends.
	For time.Duration
	// Size is the payload of each datagram. Zero means 1200.
	Size int
}

// BlastPort is the sink's port.
const BlastPort = 5001

// BlastResult is what a sink received from a blast.
type BlastResult struct {
	Bytes, Datagrams int64
	Span             time.Duration // from the first datagram to the last
}

// Rate is the payload rate in bytes per second.
func (r BlastResult) Rate() float64 { return float64(r.Bytes) / r.Span.Seconds() }

// MiBps is the payload rate in MiB/s.
func (r BlastResult) MiBps() float64 { return r.Rate() / (1 << 20) }

// KFps is the rate in thousands of datagrams per second.
func (r BlastResult) KFps() float64 { return float64(r.Datagrams) / r.Span.Seconds() / 1e3 }

// The blast's settings in its processes' environment.
const (
	blastRoleEnv  = "NATLAB_BLAST_ROLE"  // "sink" or "send"
	blastDstEnv   = "NATLAB_BLAST_DST"   // the sender's destination
	blastPortEnv  = "NATLAB_BLAST_PORT"  // the sender's own port
	blastPunchEnv = "NATLAB_BLAST_PUNCH" // the sink's punch
	blastForEnv   = "NATLAB_BLAST_FOR"   // how long the sender sends
	blastSizeEnv  = "NATLAB_BLAST_SIZE"  // payload bytes per datagram
	// blastGrace is how long the sink listens past the sending time, from
	// its first datagram: what the line still holds comes by then.
	blastGrace = 500 * time.Millisecond
	// blastStartTimeout bounds the sink's start and its wait for the first
	// datagram.
	blastStartTimeout = 20 * time.Second
	blastBurst        = 48 // datagrams per send, at most
	blastReady        = "blast-sink-ready"
)

// Blast runs one blast and returns what the sink received. It fails t when
// either end fails or nothing arrives.
func Blast(t testing.TB, cfg BlastConfig) BlastResult {
	t.Helper()
	if cfg.Size == 0 {
		cfg.Size = 1200
	}
	dst := netip.AddrPortFrom(cfg.To.IP(), BlastPort)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.For+2*blastStartTimeout)
	defer cancel()
	common := []string{blastForEnv + "=" + cfg.For.String(), blastSizeEnv + "=" + strconv.Itoa(cfg.Size)}
	sinkEnv := append([]string{blastRoleEnv + "=sink"}, common...)
	if cfg.ThroughNATs {
		dst = netip.AddrPortFrom(cfg.To.Router().PublicIP(), BlastPort)
		punch := netip.AddrPortFrom(cfg.From.Router().PublicIP(), uint16(cfg.SrcPort))
		sinkEnv = append(sinkEnv, blastPunchEnv+"="+punch.String())
	}
	sink, err := cfg.To.StartTest(ctx, cfg.Helper, sinkEnv...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Stop()
	// The sender starts once the sink listens (and has punched).
	deadline := time.Now().Add(blastStartTimeout)
	for !strings.Contains(sink.Output(), blastReady) {
		select {
		case <-sink.Done():
			t.Fatalf("blast sink exited before it was ready: %v\n%s", sink.Wait(), sink.Output())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("blast sink not ready after %v:\n%s", blastStartTimeout, sink.Output())
		}
	}
	sendEnv := append([]string{blastRoleEnv + "=send", blastDstEnv + "=" + dst.String(), blastPortEnv + "=" + strconv.Itoa(cfg.SrcPort)}, common...)
	if out, err := cfg.From.RunTest(ctx, cfg.Helper, sendEnv...); err != nil {
		t.Fatalf("blast sender: %v\n%s", err, out)
	}
	if err := sink.Wait(); err != nil {
		t.Fatalf("blast sink: %v\n%s", err, sink.Output())
	}
	var r BlastResult
	for _, line := range strings.Split(sink.Output(), "\n") {
		if _, err := fmt.Sscanf(line, "blast-sink %d %d %d", &r.Bytes, &r.Datagrams, &r.Span); err == nil {
			break
		}
	}
	if r.Span <= 0 {
		t.Fatalf("the blast sink received nothing:\n%s", sink.Output())
	}
	return r
}

// BlastEnd runs the end of a blast that this process was started for, and
// reports whether it was started for one. A package that blasts has a
// helper test that skips when it returns false:
//
//	func TestLinkBlast(t *testing.T) {
//		if !natlab.BlastEnd(t) {
//			t.Skip("one end of a blast; runs only inside a lab namespace")
//		}
//	}
func BlastEnd(t testing.TB) bool {
	if os.Getenv(ChildEnv) == "" || os.Getenv(blastRoleEnv) == "" {
		return false
	}
	d, err := time.ParseDuration(os.Getenv(blastForEnv))
	if err != nil {
		t.Fatal(err)
	}
	size, err := strconv.Atoi(os.Getenv(blastSizeEnv))
	if err != nil {
		t.Fatal(err)
	}
	switch role := os.Getenv(blastRoleEnv); role {
	case "sink":
		err = blastSink(d)
	case "send":
		err = blastSend(d, size)
	default:
		err = fmt.Errorf("%s=%q", blastRoleEnv, role)
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// blastSink listens on BlastPort until the sender has started, then for its
// sending time and blastGrace, and prints what it received.
func blastSink(d time.Duration) error {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: BlastPort})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadBuffer(16 << 20)
	if p := os.Getenv(blastPunchEnv); p != "" {
		to, err := netip.ParseAddrPort(p)
		if err != nil {
			return err
		}
		if _, err := c.WriteToUDPAddrPort([]byte("punch"), to); err != nil {
			return err
		}
	}
	fmt.Println(blastReady)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	pc := ipv4.NewPacketConn(c)
	var r BlastResult
	var first, last time.Time
	_ = c.SetReadDeadline(time.Now().Add(blastStartTimeout))
	for {
		k, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			break
		}
		last = time.Now()
		if first.IsZero() {
			first = last
			_ = c.SetReadDeadline(first.Add(d + blastGrace))
		}
		for _, m := range msgs[:k] {
			r.Bytes += int64(m.N)
		}
		r.Datagrams += int64(k)
	}
	fmt.Printf("blast-sink %d %d %d\n", r.Bytes, r.Datagrams, last.Sub(first))
	return nil
}

// blastSend sends size-byte datagrams to the destination for d.
func blastSend(d time.Duration, size int) error {
	to, err := netip.ParseAddrPort(os.Getenv(blastDstEnv))
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(os.Getenv(blastPortEnv))
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetWriteBuffer(4 << 20)
	w := udpopt.NewSegmentWriter(c)
	// One send is one UDP datagram before segmentation: 65,507 bytes at most.
	payload := make([]byte, size*min(blastBurst, 65507/size))
	var sent bool
	for end := time.Now().Add(d); time.Now().Before(end); {
		// A full socket buffer (ENOBUFS) is part of sending as fast as
		// one can; a send that never works is an error.
		if err = w.WriteSegments(payload, size, to); err == nil {
			sent = true
		}
	}
	if !sent {
		return fmt.Errorf("no send to %v worked: %w", to, err)
	}
	return nil
}
