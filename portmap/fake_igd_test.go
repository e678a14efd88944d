package portmap

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeIGD is a UPnP Internet Gateway Device on loopback: an SSDP responder
// and an HTTP server with a device description and a WANIPConnection:1
// control URL that keeps a port-mapping table.
type fakeIGD struct {
	ssdp *net.UDPConn
	http *httptest.Server
	done chan struct{}

	mu            sync.Mutex
	external      string
	onlyPermanent bool                // answer 725 to leases other than 0
	busy          map[uint16]bool     // external ports already taken (718)
	table         map[string]igdEntry // "UDP/4000" -> entry
	searches      int
	events        chan fakeEvent
}

type igdEntry struct {
	client string
	port   uint16
	lease  uint32
}

const fakeDescription = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
 <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
 <friendlyName>fake</friendlyName><UDN>uuid:fake-igd</UDN>
 <deviceList><device>
  <deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><UDN>uuid:fake-wan</UDN>
  <deviceList><device>
   <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><UDN>uuid:fake-wanconn</UDN>
   <serviceList><service>
    <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
    <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
    <controlURL>/ctl</controlURL><eventSubURL>/evt</eventSubURL><SCPDURL>/scpd.xml</SCPDURL>
   </service></serviceList>
  </device></deviceList>
 </device></deviceList>
</device>
</root>`

func startFakeIGD(t *testing.T) *fakeIGD {
	t.Helper()
	f := &fakeIGD{external: "203.0.113.88", busy: map[uint16]bool{}, table: map[string]igdEntry{},
		events: make(chan fakeEvent, 64), done: make(chan struct{})}
	var err error
	f.ssdp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/desc.xml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, fakeDescription)
	})
	mux.HandleFunc("/ctl", f.control)
	f.http = httptest.NewServer(mux)
	go f.serveSSDP()
	t.Cleanup(func() {
		f.http.Close()
		f.ssdp.Close()
		<-f.done
	})
	return f
}

// set changes the router's behaviour while it runs.
func (f *fakeIGD) set(change func(*fakeIGD)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fakeIGD) port() uint16 { return uint16(f.ssdp.LocalAddr().(*net.UDPAddr).Port) }

func (f *fakeIGD) serveSSDP() {
	defer close(f.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := f.ssdp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "M-SEARCH * HTTP/1.1\r\n") || !strings.Contains(msg, "InternetGatewayDevice:1") {
			continue
		}
		f.mu.Lock()
		f.searches++
		f.mu.Unlock()
		resp := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nEXT:\r\n" +
			"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"USN: uuid:fake-igd::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"LOCATION: " + f.http.URL + "/desc.xml\r\nSERVER: fake/1 UPnP/1.1\r\n\r\n"
		_, _ = f.ssdp.WriteToUDP([]byte(resp), from)
	}
}

// control answers the SOAP actions the client uses.
func (f *fakeIGD) control(w http.ResponseWriter, r *http.Request) {
	action := r.Header.Get("SOAPACTION")
	action = strings.Trim(action[strings.LastIndexByte(action, '#')+1:], `"`)
	args := soapArgs(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	key := args["NewProtocol"] + "/" + args["NewExternalPort"]
	ext, _ := strconv.Atoi(args["NewExternalPort"])
	transport := UDP
	if args["NewProtocol"] == "TCP" {
		transport = TCP
	}
	var out string
	switch action {
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>" + f.external + "</NewExternalIPAddress>"
	case "AddPortMapping":
		port, _ := strconv.Atoi(args["NewInternalPort"])
		lease, _ := strconv.Atoi(args["NewLeaseDuration"])
		old, taken := f.table[key]
		switch {
		case f.onlyPermanent && lease != 0:
			soapFault(w, 725, "OnlyPermanentLeasesSupported")
			return
		case f.busy[uint16(ext)] || taken && old.client != args["NewInternalClient"]:
			soapFault(w, 718, "ConflictInMappingEntry")
			return
		}
		f.table[key] = igdEntry{client: args["NewInternalClient"], port: uint16(port), lease: uint32(lease)}
		f.emit(fakeEvent{op: "map", transport: transport, external: uint16(ext), lifetime: uint32(lease)})
	case "GetSpecificPortMappingEntry":
		e, ok := f.table[key]
		if !ok {
			soapFault(w, 714, "NoSuchEntryInArray")
			return
		}
		f.emit(fakeEvent{op: "check", transport: transport, external: uint16(ext)})
		out = fmt.Sprintf("<NewInternalPort>%d</NewInternalPort><NewInternalClient>%s</NewInternalClient><NewEnabled>1</NewEnabled>"+
			"<NewPortMappingDescription>x</NewPortMappingDescription><NewLeaseDuration>%d</NewLeaseDuration>", e.port, e.client, e.lease)
	case "DeletePortMapping":
		if _, ok := f.table[key]; !ok {
			soapFault(w, 714, "NoSuchEntryInArray")
			return
		}
		delete(f.table, key)
		f.emit(fakeEvent{op: "delete", transport: transport, external: uint16(ext)})
	default:
		soapFault(w, 401, "Invalid Action")
		return
	}
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" `+
		`s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse `+
		`xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">%s</u:%sResponse></s:Body></s:Envelope>`, action, out, action)
}

func (f *fakeIGD) emit(e fakeEvent) {
	select {
	case f.events <- e:
	default:
	}
}

func (f *fakeIGD) next(t *testing.T, op string) fakeEvent {
	t.Helper()
	for {
		select {
		case e := <-f.events:
			if e.op == op {
				return e
			}
		case <-t.Context().Done():
			t.Fatalf("fake IGD: test ended waiting for %q", op)
		}
	}
}

// forget empties the mapping table, as a router that restarted does.
func (f *fakeIGD) forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table = map[string]igdEntry{}
}

// soapArgs reads the action's arguments: every element with text.
func soapArgs(r io.Reader) map[string]string {
	out := map[string]string{}
	dec := xml.NewDecoder(r)
	var name string
	for {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			name = tk.Name.Local
		case xml.CharData:
			if name != "" {
				out[name] = string(tk)
			}
		case xml.EndElement:
			name = ""
		}
	}
}

func soapFault(w http.ResponseWriter, code int, desc string) {
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" `+
		`s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode>`+
		`<faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">`+
		`<errorCode>%d</errorCode><errorDescription>%s</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, code, desc)
}
