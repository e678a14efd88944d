package udpopt

import (
	"net"
	"testing"
)

func TestSetDontFragmentNoFD(t *testing.T) {
	if SetDontFragment(fakeConn{}) {
		t.Fatal("a conn without a file descriptor reported true")
	}
}

type fakeConn struct{ net.PacketConn }
