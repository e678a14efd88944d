// Package natlab builds real NAT topologies out of Linux network namespaces and
// nftables, for tests that must see real kernel NAT behaviour rather than an
// emulation.
//
// A Lab owns an "internet" segment (a bridge in its own namespace, addresses
// from 203.0.113.0/24, RFC 5737) where public hosts and the WAN side of NAT
// routers live. Each Router is a namespace that forwards between its WAN and a
// LAN bridge (10.N.0.0/24, or 100.64.N.0/24 for a carrier-grade NAT) and
// translates with nftables rules chosen by its NATType (RFC 4787 terms):
//
//	open            no NAT: hosts sit directly on the internet segment
//	fullcone        endpoint-independent mapping, endpoint-independent filtering
//	restricted      endpoint-independent mapping, address-dependent filtering
//	portrestricted  endpoint-independent mapping, address-and-port-dependent filtering
//	symmetric       address-and-port-dependent mapping (random ports), APD filtering
//
// Two Linux pitfalls would make a naive lab lie (shared/reference/nat.md, B5):
// routers here drop unsolicited WAN input, so an early inbound packet never
// confirms a conntrack entry that steals the port a LAN host is about to map;
// and every host gets its own ephemeral port range, so two LAN hosts behind one
// router never pick the same local port and overload one external port.
//
// A router can have a shaped uplink (RouterConfig.Link, Router.SetLink): a
// namespace between its WAN side and the segment upstream where a delay
// line in this process holds every frame for a set time (the kernel has no
// netem), optionally behind a tbf bottleneck with a real queue. TestLink
// checks the added RTT, that the line loses nothing of its own, and its
// capacity.
//
// Host.Net returns a pion transport.Net whose sockets are opened inside the
// host's namespace, so an in-process node can run "inside" a lab host.
// Host.Run, Host.Start and Host.RunTest run programs (or this test binary)
// there. Reflector and Classify are a small RFC 5780-style server and client
// that measure a host's mapping, filtering and hairpinning behaviour.
//
// A router can run miniupnpd (Router.StartMiniUPnPd, miniupnpd.go), which
// grants UPnP-IGD, NAT-PMP and PCP port mappings to its LAN hosts as a home
// router does.
//
// Everything a Lab creates carries a per-run name prefix and is removed by
// t.Cleanup, even when the test fails or panics. The lab needs root, ip and
// nft: without them tests skip, except with CI=true, where they fail.
//
// Users: NAT-traversal grid tests of holepunch, swarm and node. natlab must not
// import any other swarmdb package.
package natlab
