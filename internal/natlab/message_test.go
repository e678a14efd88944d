package natlab

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

func TestMessageGolden(t *testing.T) {
	m := Message{
		Kind:      KindResponse,
		Flags:     FlagChangeIP | FlagChangePort,
		TxID:      0x0102030405060708,
		Observed:  netip.MustParseAddrPort("203.0.113.20:40001"),
		Responder: netip.MustParseAddrPort("203.0.113.11:3479"),
		Other:     netip.MustParseAddrPort("203.0.113.11:3479"),
	}
	const golden = "6e6c0203" + "0102030405060708" + "cb007114" + "9c41" + "cb00710b" + "0d97" + "cb00710b" + "0d97"
	got := m.Append(nil)
	if hex.EncodeToString(got) != golden {
		t.Fatalf("Append = %x\nwant     %s", got, golden)
	}
	back, err := ParseMessage(got)
	if err != nil {
		t.Fatal(err)
	}
	if back != m {
		t.Errorf("ParseMessage = %+v, want %+v", back, m)
	}

	req := Message{Kind: KindRequest, TxID: 7}
	if enc := req.Append(nil); len(enc) != MessageSize || !bytes.Equal(enc[12:], make([]byte, 18)) {
		t.Errorf("request encoding %x: want %d bytes with zero addresses", enc, MessageSize)
	}
}

func TestParseMessageRejects(t *testing.T) {
	good := Message{Kind: KindRequest, TxID: 1}.Append(nil)
	mutate := func(i int, v byte) []byte {
		b := bytes.Clone(good)
		b[i] = v
		return b
	}
	for name, b := range map[string][]byte{
		"short":      good[:MessageSize-1],
		"long":       append(bytes.Clone(good), 0),
		"bad magic":  mutate(0, 'x'),
		"kind 0":     mutate(2, 0),
		"kind 9":     mutate(2, 9),
		"bad flags":  mutate(3, 0x80),
		"stun-ish":   make([]byte, MessageSize),
		"empty":      nil,
		"only magic": []byte("nl"),
	} {
		if _, err := ParseMessage(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add(Message{Kind: KindRequest, TxID: 1}.Append(nil))
	f.Add(Message{Kind: KindResponse, Flags: FlagChangePort, TxID: 2,
		Observed: netip.MustParseAddrPort("10.0.0.1:1")}.Append(nil))
	f.Add([]byte("nl"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		if enc := m.Append(nil); !bytes.Equal(enc, b) {
			t.Fatalf("round trip: %x -> %+v -> %x", b, m, enc)
		}
	})
}
