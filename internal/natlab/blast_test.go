package natlab_test

import (
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
)

// A blast reaches a host behind a port-restricted NAT from a host behind
// another once the sink has punched toward the sender's public address
// (the bench's path-capacity measurement, TestWANMatrix).
func TestBlastThroughNATs(t *testing.T) {
	lab := natlab.New(t)
	rs := lab.AddRouter(natlab.RouterConfig{Name: "bs", Type: natlab.PortRestricted})
	rc := lab.AddRouter(natlab.RouterConfig{Name: "bc", Type: natlab.PortRestricted})
	server, client := rs.AddHost("s"), rc.AddHost("c")
	r := natlab.Blast(t, natlab.BlastConfig{
		Helper: "TestLinkBlast", From: client, To: server, For: 300 * time.Millisecond, Size: 1472,
		SrcPort: 5002, ThroughNATs: true,
	})
	t.Logf("%.1f MiB/s, %d datagrams of 1472 bytes", r.MiBps(), r.Datagrams)
	if r.Bytes != r.Datagrams*1472 {
		t.Errorf("%d bytes in %d datagrams, want 1472 each", r.Bytes, r.Datagrams)
	}
}
