package holepunch

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
)

// A reader that found the queue empty is woken by the next push, and Read
// returns each datagram's bytes.
func TestRoutedConnReadWaitsForDelivery(t *testing.T) {
	c := newRoutedConn(nil, netip.MustParseAddrPort("203.0.113.5:4000"), nil)
	defer c.Close()
	got := make(chan string, 1)
	go func() {
		p := make([]byte, 64)
		n, err := c.Read(p)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(p[:n])
	}()
	c.deliver([]byte("hello"))
	if s := <-got; s != "hello" {
		t.Fatalf("Read = %q, want hello", s)
	}
}

// Close wakes a Read that waits on an empty queue.
func TestRoutedConnCloseWakesRead(t *testing.T) {
	c := newRoutedConn(nil, netip.MustParseAddrPort("203.0.113.5:4000"), nil)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 64))
		errc <- err
	}()
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
	}
}

// A receiver gets what waited for Read when it is set, then every datagram
// as it is delivered, in order.
func TestRoutedConnReceiver(t *testing.T) {
	c := newRoutedConn(nil, netip.MustParseAddrPort("203.0.113.5:4000"), nil)
	defer c.Close()
	c.deliver([]byte("one"))
	c.deliver([]byte("two"))
	var got []string
	c.SetReceiver(func(b []byte) { got = append(got, string(b)) })
	c.deliver([]byte("three"))
	if want := []string{"one", "two", "three"}; !slices.Equal(got, want) {
		t.Fatalf("receiver got %q, want %q", got, want)
	}
	if n := c.in.Len(); n != 0 {
		t.Errorf("%d datagrams left queued for Read", n)
	}
}
