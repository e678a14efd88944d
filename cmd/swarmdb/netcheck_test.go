package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/node"
)

// netcheckTestTimeout bounds one netcheck in a test.
const netcheckTestTimeout = 30 * time.Second

// startDHTServers starts persistent DHT nodes, one per IP (the other-node
// probe needs a helper on an IP other than the server's and the client's),
// bootstrapped to each other. nets[i] opens ips[i]'s socket; nil is stdnet.
func startDHTServers(t *testing.T, ips []string, nets []transport.Net) []netip.AddrPort {
	t.Helper()
	var boot, addrs []netip.AddrPort
	var nodes []*dht.Node
	for i, ip := range ips {
		// On the host's own loopback any free port: a fixed one collides
		// with another test run on the same machine. Lab hosts have their
		// own namespaces, and there the conventional port is used.
		cfg := dht.Config{ListenAddr: ip + ":0", Mode: dht.ModePersistent, Bootstrap: boot}
		if nets != nil {
			cfg.ListenAddr, cfg.Net = ip+":49737", nets[i]
		}
		n := dht.New(cfg)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
		addrs = append(addrs, n.LocalAddr())
		if i == 0 {
			boot = []netip.AddrPort{n.LocalAddr()}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), netcheckTestTimeout)
	defer cancel()
	for _, n := range nodes {
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return addrs
}

// TestNetcheckCommandLoopback runs the built binary against three DHT
// nodes on distinct loopback IPs: a host without NAT must read "open".
func TestNetcheckCommandLoopback(t *testing.T) {
	servers := startDHTServers(t, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, nil)
	bin := buildBinary(t)
	boot := servers[0].String()

	out, err := exec.Command(bin, "netcheck", "--json", "--bootstrap", boot, "--listen", "127.0.0.9:0").Output()
	if err != nil {
		t.Fatalf("netcheck --json: %v\n%s", err, out)
	}
	var rep map[string]any
	if err := json.Unmarshal(out, &rep); err != nil || bytes.Count(bytes.TrimSpace(out), []byte("\n")) != 0 {
		t.Fatalf("want one JSON object: %v\n%s", err, out)
	}
	if rep["class"] != "open" || rep["mapping"] != "none" || rep["filtering"] != "endpoint-independent" ||
		!strings.HasPrefix(fmt.Sprint(rep["public_addr"]), "127.0.0.9:") || rep["answered"] != float64(3) {
		t.Fatalf("report: %s", out)
	}

	out, err = exec.Command(bin, "netcheck", "--bootstrap", boot, "--listen", "127.0.0.9:0").Output()
	if err != nil {
		t.Fatalf("netcheck: %v\n%s", err, out)
	}
	for _, want := range []string{"public address: 127.0.0.9:", "NAT type:       open", "mapping:      none",
		"filtering:    endpoint-independent", servers[1].String(), " ms"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("human report lacks %q:\n%s", want, out)
		}
	}
}

// TestNetcheckNoAnswer: nothing listens at the bootstrap address, so the
// command must fail with a clear message, not print an empty report.
func TestNetcheckNoAnswer(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "netcheck", "--bootstrap", "127.0.0.1:9", "--listen", "127.0.0.1:0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		t.Fatalf("netcheck succeeded without a bootstrap node:\n%s", out)
	}
	if !strings.Contains(stderr.String(), "no bootstrap node answered (tried [127.0.0.1:9])") {
		t.Fatalf("stderr: %s", stderr.String())
	}
	if out, err := exec.Command(bin, "netcheck").CombinedOutput(); err == nil || !strings.Contains(string(out), "--bootstrap is required") {
		t.Fatalf("without --bootstrap: %v %s", err, out)
	}
}

// TestNetcheckNATLab is the grid of issue 3: netcheck runs inside a LAN
// host of each lab router type (in-process, its socket opened in the
// host's namespace) against three persistent DHT nodes on the lab's public
// segment, and must report the router's true type. Root only: natlab
// skips without root, ip and nft, and fails instead when CI=true.
func TestNetcheckNATLab(t *testing.T) {
	lab := natlab.New(t)
	var ips []string
	var nets []transport.Net
	for i := range 3 {
		h := lab.AddPublicHost(fmt.Sprintf("dht%d", i))
		ips = append(ips, h.IP().String())
		nets = append(nets, h.Net())
	}
	type cell struct {
		name    string
		typ     natlab.NATType
		host    *natlab.Host
		hairpin bool
	}
	var cells []cell
	for _, typ := range natlab.Types() {
		r := lab.AddRouter(natlab.RouterConfig{Type: typ})
		// Without hairpin rules only an open host reaches its own address.
		cells = append(cells, cell{string(typ), typ, r.AddHost("a"), typ == natlab.Open})
	}
	hp := lab.AddRouter(natlab.RouterConfig{Name: "hpon", Hairpin: true})
	cells = append(cells, cell{"portrestricted-hairpin", natlab.PortRestricted, hp.AddHost("a"), true})
	servers := startDHTServers(t, ips, nets)

	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), netcheckTestTimeout)
			defer cancel()
			rep, err := node.Netcheck(ctx, node.NetcheckConfig{Net: c.host.Net(), ListenAddr: c.host.IP().String() + ":0", Bootstrap: servers[:1]})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(rep)
			t.Logf("%s", b)
			if string(rep.Class) != string(c.typ) {
				t.Fatalf("netcheck says %s (mapping %s, filtering %s), router is %s", rep.Class, rep.Mapping, rep.Filtering, c.typ)
			}
			want := c.host.IP() // an open host is its own public address
			if c.typ != natlab.Open {
				want = c.host.Router().PublicIP()
			}
			if rep.PublicAddr.Addr() != want {
				t.Fatalf("public address %s, want IP %s", rep.PublicAddr, want)
			}
			if rep.Hairpin == nil || *rep.Hairpin != c.hairpin {
				t.Fatalf("hairpin %v, want %v", rep.Hairpin, c.hairpin)
			}
			if rep.Confidence != natcheck.ConfidenceHigh {
				t.Fatalf("confidence %s with %d/%d answers", rep.Confidence, rep.Answered, rep.Queried)
			}
		})
	}
}

// TestNetcheckPortMapNATLab: netcheck behind routers that run miniupnpd
// first gets a port mapping for its socket, then measures. Behind a
// port-restricted NAT the mapped port is open to anyone, so the NAT
// measures as endpoint-independent filtering (full cone); behind a
// symmetric NAT the mapping behaviour stays endpoint-dependent, and the
// mapping is what makes the host reachable. The report carries the
// mapping, and the router's rule is gone when netcheck ends. Root and
// miniupnpd only.
func TestNetcheckPortMapNATLab(t *testing.T) {
	natlab.RequireMiniUPnPd(t)
	lab := natlab.New(t)
	var ips []string
	var nets []transport.Net
	for i := range 3 {
		h := lab.AddPublicHost(fmt.Sprintf("dht%d", i))
		ips = append(ips, h.IP().String())
		nets = append(nets, h.Net())
	}
	servers := startDHTServers(t, ips, nets)
	for _, tc := range []struct {
		typ  natlab.NATType
		want natcheck.Class
	}{{natlab.PortRestricted, natcheck.ClassFullCone}, {natlab.Symmetric, natcheck.ClassSymmetric}} {
		t.Run(string(tc.typ), func(t *testing.T) {
			r := lab.AddRouter(natlab.RouterConfig{Type: tc.typ})
			d := r.StartMiniUPnPd(natlab.MiniUPnPdConfig{})
			h := r.AddHost("a")
			ctx, cancel := context.WithTimeout(context.Background(), netcheckTestTimeout)
			defer cancel()
			rep, err := node.Netcheck(ctx, node.NetcheckConfig{Net: h.Net(), ListenAddr: h.IP().String() + ":0", Bootstrap: servers[:1],
				PortMap: true, Gateway: func() (netip.Addr, error) { return h.Gateway(), nil }})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			printReport(&out, rep)
			t.Logf("\n%s", out.String())
			pm := rep.PortMap
			if pm == nil || pm.UDP == nil || pm.UDP.External.Addr() != r.PublicIP() {
				t.Fatalf("port mapping %+v", pm)
			}
			if rep.Class != tc.want {
				t.Fatalf("netcheck says %s (mapping %s, filtering %s), want %s", rep.Class, rep.Mapping, rep.Filtering, tc.want)
			}
			if !strings.Contains(out.String(), "port mapping:   pcp "+pm.UDP.External.String()) {
				t.Fatalf("human report lacks the mapping:\n%s", out.String())
			}
			b, _ := json.Marshal(rep)
			if !strings.Contains(string(b), `"portmap":{"state":"mapped","protocol":"pcp"`) || !strings.Contains(string(b), `"class":"`+string(tc.want)+`"`) {
				t.Fatalf("JSON report: %s", b)
			}
			if rs, err := d.Redirects(ctx); err != nil || len(rs) != 0 {
				t.Fatalf("router rules after netcheck: %v (%v)", rs, err)
			}
		})
	}
}
