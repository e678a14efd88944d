package dht

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestLateReplyAnswersItsTry: a reply slower than the resend wait finds
// the request sent again, and the reply to the first try, arriving after
// the second, still answers the request and times the first try. Each try
// used to forget its transaction ID when the next was sent, so a reply
// that was only late counted as lost.
func TestLateReplyAnswersItsTry(t *testing.T) {
	responder, n := resendPair(t)
	type request struct {
		tid uint32
		at  time.Time
	}
	got := make(chan request, 4)
	go func() {
		buf := make([]byte, MaxPacketSize)
		var first *Message
		var from netip.AddrPort
		for {
			k, addr, err := responder.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			m, err := ParseMessage(buf[:k])
			if err != nil {
				continue
			}
			got <- request{tid: m.TID, at: time.Now()}
			if first == nil {
				first, from = m, addr // answered only once the resend came
				continue
			}
			reply := &Message{Response: true, Command: first.Command, TID: first.TID, Addr: from}
			_, _ = responder.WriteToUDPAddrPort(AppendMessage(nil, reply), from)
			return
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, sent, err := n.requestLastSent(ctx, addrPortOf(responder), &Message{Command: CmdPing}, 3)
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := <-got, <-got
	if r1.tid == r2.tid {
		t.Fatal("the resend reused the first try's transaction ID")
	}
	if reply.TID != r1.tid {
		t.Fatalf("answered by transaction %d, want the first try's %d", reply.TID, r1.tid)
	}
	if !sent.Before(r2.at) {
		t.Fatalf("the answered try was sent at %v, after the resend arrived (%v): it is not the first", sent, r2.at)
	}
	if st := n.Stats(); st.Resends != 1 || st.Timeouts != 0 {
		t.Fatalf("resends %d, timeouts %d; want 1 and 0", st.Resends, st.Timeouts)
	}
	// The estimate learnt the first try's round trip, which spans the
	// resend wait.
	n.rto.mu.Lock()
	srtt := n.rto.srtt
	n.rto.mu.Unlock()
	if srtt < r2.at.Sub(r1.at) {
		t.Fatalf("srtt %v, shorter than the first try waited (%v): timed from the resend", srtt, r2.at.Sub(r1.at))
	}
}

// TestSilentAddressGivesUpAfterTheWholeWait: with nothing answering, a
// request is resent at least as often as it has tries and gives up no
// sooner than the waits its tries had before resends came sooner (a loaded
// machine's slow reply still counts as long as it did).
func TestSilentAddressGivesUpAfterTheWholeWait(t *testing.T) {
	responder, n := resendPair(t)
	n.rto.sample(time.Millisecond) // an estimate: the floors apply
	budget := n.requestWait(CmdPing, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, _, err := n.requestLastSent(ctx, addrPortOf(responder), &Message{Command: CmdPing}, 3)
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if took < budget {
		t.Fatalf("gave up after %v, before the whole wait %v", took, budget)
	}
	buf := make([]byte, MaxPacketSize)
	sends := 0
	_ = responder.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		if _, _, err := responder.ReadFromUDPAddrPort(buf); err != nil {
			break
		}
		sends++
	}
	st := n.Stats()
	t.Logf("%d sends in %v (whole wait %v)", sends, took.Round(time.Millisecond), budget)
	if sends < 3 || st.Resends != uint64(sends-1) || st.Timeouts != 1 {
		t.Fatalf("%d sends arrived, resends %d, timeouts %d; want at least 3, one less, and 1", sends, st.Resends, st.Timeouts)
	}
}

func TestTryWaits(t *testing.T) {
	n := New(Config{RequestTimeout: time.Second})
	n.rto.sample(time.Millisecond)
	for _, c := range []struct {
		cmd            Command
		try            int
		resend, giveUp time.Duration
	}{
		{CmdPing, 0, minResendWait, minRequestWait},
		{CmdPing, 1, 2 * minResendWait, 2 * minRequestWait},
		{CmdPing, 2, 4 * minResendWait, time.Second},
		{CmdRelay, 0, 2 * minResendWait, 2 * minRequestWait},
		{CmdSignal, 0, time.Second, time.Second},
	} {
		resend, giveUp := n.tryWaits(c.cmd, c.try)
		if resend != c.resend || giveUp != c.giveUp {
			t.Errorf("%v try %d: resend %v, give up %v; want %v and %v", c.cmd, c.try, resend, giveUp, c.resend, c.giveUp)
		}
	}
	if got, want := n.requestWait(CmdPing, 3), minRequestWait+2*minRequestWait+time.Second; got != want {
		t.Errorf("a ping of 3 tries waits %v in all, want %v", got, want)
	}
}

// resendPair is a started node with no bootstrap and a UDP socket for it
// to send to, both closed when the test ends.
func resendPair(t *testing.T) (*net.UDPConn, *Node) {
	t.Helper()
	responder, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { responder.Close() })
	n := New(Config{ListenAddr: "127.0.0.1:0", Mode: ModeEphemeral})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return responder, n
}

func addrPortOf(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestJoinLooksUpBesideThePings: a joining node's lookup of its own id
// goes out while its bootstrap pings wait for their answers, not after:
// the bootstrap node here answers the ping only once the lookup's request
// has come.
func TestJoinLooksUpBesideThePings(t *testing.T) {
	boot, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	findBeforePong := make(chan bool, 1)
	go func() {
		buf := make([]byte, MaxPacketSize)
		var ping *Message
		var pingFrom netip.AddrPort
		found, ponged := false, false
		_ = boot.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			k, from, err := boot.ReadFromUDPAddrPort(buf)
			if err != nil {
				if !ponged {
					findBeforePong <- false
				}
				return
			}
			m, err := ParseMessage(buf[:k])
			if err != nil || m.Response {
				continue
			}
			switch m.Command {
			case CmdPing:
				ping, pingFrom = m, from
			case CmdFindNode:
				found = true
				reply := &Message{Response: true, Command: m.Command, TID: m.TID, Addr: from}
				_, _ = boot.WriteToUDPAddrPort(AppendMessage(nil, reply), from)
			}
			if found && ping != nil && !ponged {
				// Keep answering: in a network of two the join repeats its
				// lookup in the background (lookAgain), and silence would
				// make each repeat wait out a whole request.
				ponged = true
				reply := &Message{Response: true, Command: ping.Command, TID: ping.TID, Addr: pingFrom}
				_, _ = boot.WriteToUDPAddrPort(AppendMessage(nil, reply), pingFrom)
				findBeforePong <- true
			}
		}
	}()
	n := New(Config{ListenAddr: "127.0.0.1:0", Mode: ModeEphemeral, Bootstrap: []netip.AddrPort{addrPortOf(boot)}})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if !<-findBeforePong {
		t.Fatal("no lookup request came while the ping waited for its answer")
	}
}
