package portmap

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// procRoute is Linux's IPv4 routing table. It describes the network
// namespace of the process (its main thread), which is the system network
// that stdnet opens sockets in.
const procRoute = "/proc/net/route"

// Route flags of /proc/net/route (linux/route.h).
const (
	rtfUp      = 0x1
	rtfGateway = 0x2
)

// DefaultGateway returns the next hop of the system's IPv4 default route,
// read from /proc/net/route. Elsewhere than Linux, or without a default
// route, it returns ErrNoGateway.
func DefaultGateway() (netip.Addr, error) {
	f, err := os.Open(procRoute)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %w", ErrNoGateway, err)
	}
	defer f.Close()
	return parseRoutes(f)
}

// parseRoutes picks the default route's gateway out of a /proc/net/route
// listing: destination and mask 0.0.0.0, flags up and gateway, the lowest
// metric. The kernel prints each address as the hexadecimal value of the
// 32-bit word holding it in network byte order, so the value is written
// back in this host's byte order to recover the address.
func parseRoutes(r io.Reader) (netip.Addr, error) {
	sc := bufio.NewScanner(r)
	var best netip.Addr
	bestMetric := uint64(1<<64 - 1)
	first := true
	for sc.Scan() {
		if first { // the header line
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		gw, err2 := strconv.ParseUint(f[2], 16, 32)
		flags, err3 := strconv.ParseUint(f[3], 16, 32)
		metric, err4 := strconv.ParseUint(f[6], 10, 64)
		mask, err5 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
			continue
		}
		if dst != 0 || mask != 0 || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway || gw == 0 {
			continue
		}
		if metric < bestMetric {
			var b [4]byte
			binary.NativeEndian.PutUint32(b[:], uint32(gw))
			best, bestMetric = netip.AddrFrom4(b), metric
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("%w: reading routes: %w", ErrNoGateway, err)
	}
	if !best.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: no IPv4 default route", ErrNoGateway)
	}
	return best, nil
}
