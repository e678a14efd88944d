package portmap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
	"github.com/huin/goupnp/ssdp"
	"github.com/pion/transport/v2"
)

// UPnP-IGD over huin/goupnp, with every socket opened through the
// client's transport.Net. goupnp's hooks for that:
//
//   - SSDP: ssdp.RawSearch builds the M-SEARCH and filters the answers; it
//     takes any httpu.ClientInterfaceCtx, and ssdpClient is one over
//     transport.Net (goupnp's own opens sockets with the net package).
//   - HTTP: every service client's SOAPClient has an http.Client field; ours
//     dials through transport.Net, and only the gateway.
//   - The device description: goupnp.DeviceByURLCtx fetches with a
//     package-global client (goupnp.HTTPClientDefault), so the description
//     is fetched with ours and decoded into goupnp's RootDevice here.
//
// Only the IGD at the default gateway is used: a mapping on any other box
// would not open the path our packets take.

// UPnP timing and limits.
const (
	// ssdpWait bounds the wait for the gateway's answer to M-SEARCH. A
	// router on the LAN answers within milliseconds; a gateway with no
	// SSDP listener usually says so at once (ICMP port unreachable on the
	// unicast search), so this is only waited out when it drops the
	// search silently. goupnp derives the search's MX (the time a device
	// may spread its answer over, at least 1 s) from the whole seconds
	// left, so this is a little over a second.
	ssdpWait = 1500 * time.Millisecond
	// upnpCallTimeout bounds one SOAP call or the description fetch.
	upnpCallTimeout = 3 * time.Second
	// upnpMaxBody bounds what is read of any HTTP answer: a description or
	// SOAP response is a few kilobytes.
	upnpMaxBody = 256 << 10
	// upnpAnyPortTries: an IGDv1 router that refuses the external port we
	// want (conflict) is asked for this many random ports.
	upnpAnyPortTries = 4
)

// ssdpAddr is the SSDP multicast group and port; ssdpPort the port a
// gateway's SSDP listener has for unicast searches too (UDA 1.1 §1.3.3).
var ssdpAddr = netip.MustParseAddrPort("239.255.255.250:1900")

const ssdpPort = 1900

// igdSearchTarget finds InternetGatewayDevice:1 and :2 (a version-2 device
// answers searches for version 1, UDA §1.3.2).
const igdSearchTarget = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"

// UPnP error codes (IGD WANIPConnection spec).
const (
	upnpNoSuchEntry       = 714
	upnpConflict          = 718
	upnpOnlyPermanentLeas = 725
)

// igdConn is what the client needs of a WANIPConnection1/2 or
// WANPPPConnection1 service client; goupnp's generated types all have it.
type igdConn interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string, internalPort uint16, internalClient string, enabled bool, description string, leaseDuration uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	GetSpecificPortMappingEntryCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) (internalPort uint16, internalClient string, enabled bool, description string, leaseDuration uint32, err error)
	GetServiceClient() *goupnp.ServiceClient
}

var (
	_ igdConn = (*internetgateway2.WANIPConnection2)(nil)
	_ igdConn = (*internetgateway2.WANIPConnection1)(nil)
	_ igdConn = (*internetgateway2.WANPPPConnection1)(nil)
)

// upnpMapper is a UPnP-IGD session with the gateway's WAN connection
// service.
type upnpMapper struct {
	conn     igdConn
	gw       netip.Addr
	local    netip.Addr
	now      func() time.Time
	external netip.Addr
	service  string // the service type, for logs
}

func (u *upnpMapper) protocol() Protocol { return UPnP }

// discoverUPnP finds the IGD at the gateway, reads its description and
// picks the first WAN connection service that reports an external address:
// WANIPConnection:2, then :1, then WANPPPConnection:1.
func discoverUPnP(ctx context.Context, n transport.Net, gw, local netip.Addr, port uint16, now func() time.Time) (*upnpMapper, error) {
	sctx, cancel := context.WithTimeout(ctx, ssdpWait)
	defer cancel()
	sc := &ssdpClient{net: n, gw: netip.AddrPortFrom(gw, port), local: local}
	// MX (the wait the device may spread its answer over) comes from the
	// deadline; one second is the least SSDP allows.
	resps, err := ssdp.RawSearch(sctx, sc, igdSearchTarget, 2)
	if err != nil {
		return nil, fmt.Errorf("portmap: SSDP search: %w", err)
	}
	if sc.refused() && len(resps) == 0 {
		return nil, fmt.Errorf("%w: SSDP at %s", ErrUnreachable, gw)
	}
	hc := gatewayHTTPClient(n, gw)
	var errs []error
	for _, r := range resps {
		loc, err := r.Location()
		if err != nil || !onGateway(loc, gw) {
			continue
		}
		root, err := fetchRootDevice(ctx, hc, loc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range igdConns(root, loc) {
			c.GetServiceClient().SOAPClient.HTTPClient = *hc
			if !onGateway(&c.GetServiceClient().SOAPClient.EndpointURL, gw) {
				continue // a control URL elsewhere: not our gateway's service
			}
			cctx, cancel := context.WithTimeout(ctx, upnpCallTimeout)
			s, err := c.GetExternalIPAddressCtx(cctx)
			cancel()
			ip, perr := netip.ParseAddr(s)
			if err != nil || perr != nil || !ip.Is4() || ip.IsUnspecified() {
				errs = append(errs, fmt.Errorf("%s: no external address (%q, %v)", c.GetServiceClient().Service.ServiceType, s, err))
				continue
			}
			return &upnpMapper{conn: c, gw: gw, local: local, now: now, external: ip,
				service: c.GetServiceClient().Service.ServiceType}, nil
		}
	}
	if len(resps) == 0 {
		return nil, fmt.Errorf("%w: no UPnP gateway answered at %s", ErrTimeout, gw)
	}
	return nil, fmt.Errorf("%w: UPnP at %s: %w", ErrNoService, gw, errors.Join(errs...))
}

// igdConns lists the WAN connection services of root in preference order.
func igdConns(root *goupnp.RootDevice, loc *url.URL) []igdConn {
	var out []igdConn
	if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	return out
}

// fetchRootDevice reads a device description, as goupnp.DeviceByURLCtx
// does but with our HTTP client.
func fetchRootDevice(ctx context.Context, hc *http.Client, loc *url.URL) (*goupnp.RootDevice, error) {
	ctx, cancel := context.WithTimeout(ctx, upnpCallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("portmap: UPnP description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("portmap: UPnP description %s: %s", loc, resp.Status)
	}
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(resp.Body)
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	dec.CharsetReader = goupnp.CharsetReaderDefault
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("%w: UPnP description %s: %w", ErrMalformed, loc, err)
	}
	base := loc
	if root.URLBaseStr != "" {
		if base, err = url.Parse(root.URLBaseStr); err != nil {
			return nil, fmt.Errorf("%w: URLBase %q: %w", ErrMalformed, root.URLBaseStr, err)
		}
	}
	root.SetURLBase(base)
	return root, nil
}

// onGateway says whether u points at the gateway itself.
func onGateway(u *url.URL, gw netip.Addr) bool {
	ip, err := netip.ParseAddr(u.Hostname())
	return err == nil && ip.Unmap() == gw && u.Scheme == "http"
}

// gatewayHTTPClient is an HTTP client whose connections go through n and
// only to gw, and which reads at most upnpMaxBody of an answer.
func gatewayHTTPClient(n transport.Net, gw netip.Addr) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || ap.Addr().Unmap() != gw {
			return nil, fmt.Errorf("portmap: UPnP: refusing to connect to %s (not the gateway %s)", addr, gw)
		}
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() { // transport.Net's Dial takes no context
			c, err := n.Dial("tcp4", addr)
			ch <- result{c, err}
		}()
		select {
		case r := <-ch:
			return r.c, r.err
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.c != nil {
					r.c.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
	return &http.Client{
		Transport: limitedBody{&http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil}},
		Timeout:   upnpCallTimeout,
	}
}

// limitedBody caps every response body at upnpMaxBody.
type limitedBody struct{ rt http.RoundTripper }

func (l limitedBody) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, upnpMaxBody), resp.Body}
	return resp, nil
}

func (u *upnpMapper) add(ctx context.Context, req request, prev *Mapping) (Mapping, error) {
	want := req.internal.Port()
	if prev != nil {
		want = prev.External.Port()
	}
	lease := seconds(req.lifetime)
	proto := upnpProto(req.transport)
	try := func(ext uint16, lease uint32) error {
		cctx, cancel := context.WithTimeout(ctx, upnpCallTimeout)
		defer cancel()
		return u.conn.AddPortMappingCtx(cctx, "", ext, proto, req.internal.Port(), u.local.String(), true, req.desc, lease)
	}
	err := try(want, lease)
	if upnpCode(err) == upnpOnlyPermanentLeas {
		// IGDv1 routers that only keep mappings until deleted: we delete
		// ours on Close, and checks notice when one disappears.
		lease = 0
		err = try(want, lease)
	}
	if upnpCode(err) == upnpConflict {
		want, err = u.addAnyPort(ctx, req, want, lease, try)
	}
	if err != nil {
		return Mapping{}, u.classify(err)
	}
	return Mapping{Protocol: UPnP, Transport: req.transport, Gateway: u.gw, Internal: req.internal,
		External: netip.AddrPortFrom(u.external, want), Lifetime: time.Duration(lease) * time.Second, Obtained: u.now()}, nil
}

// addAnyPort handles a conflict on the port we wanted: IGDv2's
// AddAnyPortMapping lets the router pick; on v1 a few random ports are
// tried.
func (u *upnpMapper) addAnyPort(ctx context.Context, req request, want uint16, lease uint32, try func(uint16, uint32) error) (uint16, error) {
	if v2, ok := u.conn.(*internetgateway2.WANIPConnection2); ok {
		cctx, cancel := context.WithTimeout(ctx, upnpCallTimeout)
		defer cancel()
		port, err := v2.AddAnyPortMappingCtx(cctx, "", want, upnpProto(req.transport), req.internal.Port(), u.local.String(), true, req.desc, lease)
		if err == nil && port != 0 {
			return port, nil
		}
	}
	var err error
	for range upnpAnyPortTries {
		port := uint16(1024 + rand.IntN(65536-1024))
		if err = try(port, lease); err == nil {
			return port, nil
		}
		if upnpCode(err) != upnpConflict {
			break
		}
	}
	return 0, err
}

// check looks the mapping up on the router (GetSpecificPortMappingEntry)
// and reads the external address again: an entry that is gone or points
// elsewhere, or a new external address, means the mappings must be made
// again. UPnP has no epoch; this is how a router restart shows.
func (u *upnpMapper) check(ctx context.Context, ms []Mapping) error {
	for _, m := range ms {
		cctx, cancel := context.WithTimeout(ctx, upnpCallTimeout)
		port, client, enabled, _, _, err := u.conn.GetSpecificPortMappingEntryCtx(cctx, "", m.External.Port(), upnpProto(m.Transport))
		cancel()
		switch {
		case upnpCode(err) == upnpNoSuchEntry:
			return fmt.Errorf("%w: UPnP %s %s", ErrLost, m.Transport, m.External)
		case err != nil:
			return u.classify(err)
		case port != m.Internal.Port() || client != m.Internal.Addr().String() || !enabled:
			return fmt.Errorf("%w: UPnP %s %s now points to %s:%d", ErrLost, m.Transport, m.External, client, port)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, upnpCallTimeout)
	defer cancel()
	s, err := u.conn.GetExternalIPAddressCtx(cctx)
	if err != nil {
		return u.classify(err)
	}
	if ip, err := netip.ParseAddr(s); err != nil || ip != u.external {
		return fmt.Errorf("%w: UPnP external address is now %q", ErrLost, s)
	}
	return nil
}

func (u *upnpMapper) remove(ctx context.Context, m Mapping) error {
	cctx, cancel := context.WithTimeout(ctx, upnpCallTimeout)
	defer cancel()
	if err := u.conn.DeletePortMappingCtx(cctx, "", m.External.Port(), upnpProto(m.Transport)); err != nil {
		return u.classify(err)
	}
	return nil
}

// classify maps goupnp's errors onto ours: a SOAP fault is a refusal, a
// refused connection means the router's UPnP service is gone.
func (u *upnpMapper) classify(err error) error {
	var fault *soap.SOAPFaultError
	switch {
	case errors.As(err, &fault):
		return fmt.Errorf("%w: UPnP error %d %s", ErrRefused, fault.Detail.UPnPError.Errorcode, fault.Detail.UPnPError.ErrorDescription)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: UPnP at %s", ErrUnreachable, u.gw)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: UPnP at %s", ErrTimeout, u.gw)
	}
	return fmt.Errorf("portmap: UPnP at %s: %w", u.gw, err)
}

// upnpCode is the UPnP error code of a SOAP fault, or 0.
func upnpCode(err error) int {
	var fault *soap.SOAPFaultError
	if errors.As(err, &fault) {
		return fault.Detail.UPnPError.Errorcode
	}
	return 0
}

func upnpProto(t Transport) string {
	if t == TCP {
		return "TCP"
	}
	return "UDP"
}

// ssdpClient is goupnp's HTTPU transport over transport.Net. It sends each
// search twice: unicast to the gateway's SSDP port from a connected socket,
// which turns an ICMP port unreachable into an error (no SSDP there, no
// need to wait), and to the SSDP multicast group for routers that answer
// only that (never from a loopback gateway's host: tests, whose multicast
// would leave the machine). It returns the answers so far as soon as the
// gateway has answered, or at the request's deadline.
type ssdpClient struct {
	net   transport.Net
	gw    netip.AddrPort // the gateway's SSDP listener
	local netip.Addr

	mu         sync.Mutex
	wasRefused bool
}

var _ interface {
	DoWithContext(req *http.Request, numSends int) ([]*http.Response, error)
} = (*ssdpClient)(nil)

func (c *ssdpClient) refused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wasRefused
}

// DoWithContext implements httpu.ClientInterfaceCtx.
func (c *ssdpClient) DoWithContext(req *http.Request, numSends int) ([]*http.Response, error) {
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "%s %s HTTP/1.1\r\n", req.Method, req.URL.RequestURI())
	if err := req.Header.Write(&msg); err != nil {
		return nil, err
	}
	msg.WriteString("\r\n")

	laddr := &net.UDPAddr{IP: c.local.AsSlice()}
	uni, err := c.net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(c.gw))
	if err != nil {
		return nil, fmt.Errorf("portmap: SSDP socket: %w", err)
	}
	var multi net.PacketConn
	merr := errors.New("no multicast toward a loopback gateway")
	if !c.gw.Addr().IsLoopback() {
		multi, merr = c.net.ListenPacket("udp4", netip.AddrPortFrom(c.local, 0).String())
	}

	type answer struct {
		b    []byte
		from netip.Addr
		err  error
	}
	answers := make(chan answer)
	done := make(chan struct{})
	var wg sync.WaitGroup
	read := func(rd func([]byte) (int, net.Addr, error)) {
		defer wg.Done()
		for {
			b := make([]byte, 2048)
			n, from, err := rd(b)
			a := answer{b: b[:n], err: err}
			if ua, ok := from.(*net.UDPAddr); ok {
				a.from = ua.AddrPort().Addr().Unmap()
			}
			select {
			case answers <- a:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go read(func(b []byte) (int, net.Addr, error) {
		n, err := uni.Read(b)
		return n, uni.RemoteAddr(), err
	})
	if merr == nil {
		wg.Add(1)
		go read(multi.ReadFrom)
	}
	defer func() { // stop and wait for the readers
		close(done)
		_ = uni.Close()
		if merr == nil {
			_ = multi.Close()
		}
		wg.Wait()
	}()

	ctx := req.Context()
	for i := range max(numSends, 1) {
		if i > 0 {
			select { // goupnp's own client spaces its sends so
			case <-ctx.Done():
				return nil, nil
			case <-time.After(5 * time.Millisecond):
			}
		}
		_, _ = uni.Write(msg.Bytes())
		if merr == nil {
			_, _ = multi.WriteTo(msg.Bytes(), net.UDPAddrFromAddrPort(ssdpAddr))
		}
	}
	var out []*http.Response
	open := 1 + btoi(merr == nil)
	for open > 0 {
		select {
		case <-ctx.Done():
			return out, nil
		case a := <-answers:
			if a.err != nil {
				if errors.Is(a.err, syscall.ECONNREFUSED) {
					c.mu.Lock()
					c.wasRefused = true
					c.mu.Unlock()
					// Nothing listens on the gateway's SSDP port, so
					// nothing there answers the multicast search either.
					return out, nil
				}
				open--
				continue
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(a.b)), req)
			if err != nil {
				continue
			}
			out = append(out, resp)
			if a.from == c.gw.Addr() {
				return out, nil
			}
		}
	}
	return out, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
