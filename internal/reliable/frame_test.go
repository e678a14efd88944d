package reliable

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestFrameGolden checks each appender's bytes against RFC 9000 §19, worked
// by hand (the comment after each case), and that ParseFrame reads them back.
func TestFrameGolden(t *testing.T) {
	tests := []struct {
		name   string
		append func([]byte) []byte
		hex    string
		want   Frame
	}{
		{
			"padding", func(b []byte) []byte { return AppendPadding(b, 3) },
			"000000", // three PADDING frames, read as one run
			Frame{Type: FramePadding, Length: 3},
		},
		{
			"ping", AppendPing,
			"01",
			Frame{Type: FramePing},
		},
		{
			"ack one range",
			func(b []byte) []byte { return AppendAck(b, []AckRange{{90, 100}}, 0) },
			// type 02, Largest 100 = 0x4064, Delay 0, Count 0, First 100-90 = 0x0a
			"02" + "4064" + "00" + "00" + "0a",
			Frame{Type: FrameAck, AckRanges: []AckRange{{90, 100}}},
		},
		{
			"ack three ranges",
			func(b []byte) []byte {
				return AppendAck(b, []AckRange{{95, 100}, {80, 90}, {10, 10}}, time.Millisecond)
			},
			// type 02, Largest 100 = 0x4064, Delay 1000us = 0x43e8, Count 2,
			// First 100-95 = 5; Gap 95-90-2 = 3, Length 90-80 = 0x0a;
			// Gap 80-10-2 = 68 = 0x4044, Length 0
			"02" + "4064" + "43e8" + "02" + "05" + "03" + "0a" + "4044" + "00",
			Frame{Type: FrameAck, AckDelay: time.Millisecond,
				AckRanges: []AckRange{{95, 100}, {80, 90}, {10, 10}}},
		},
		{
			"ack of packet 0",
			func(b []byte) []byte { return AppendAck(b, []AckRange{{0, 0}}, 25*time.Millisecond) },
			// Delay 25000us = 0x61a8, in four bytes: 0x800061a8
			"02" + "00" + "800061a8" + "00" + "00",
			Frame{Type: FrameAck, AckDelay: 25 * time.Millisecond, AckRanges: []AckRange{{0, 0}}},
		},
		{
			"reset_stream",
			func(b []byte) []byte { return AppendResetStream(b, 4, 257, 1000) },
			// type 04, Stream ID 4, Code 257 = 0x4101, Final Size 1000 = 0x43e8
			"04" + "04" + "4101" + "43e8",
			Frame{Type: FrameResetStream, StreamID: 4, Code: 257, Offset: 1000},
		},
		{
			"stop_sending",
			func(b []byte) []byte { return AppendStopSending(b, 5, 0) },
			"05" + "05" + "00",
			Frame{Type: FrameStopSending, StreamID: 5},
		},
		{
			"stream",
			func(b []byte) []byte { return AppendStream(b, 4, 0, []byte("hi"), false, false) },
			// type 08 (no OFF, LEN, FIN), Stream ID 4, data to the end
			"08" + "04" + "6869",
			Frame{Type: FrameStream, StreamID: 4, Data: []byte("hi")},
		},
		{
			"stream len fin",
			func(b []byte) []byte { return AppendStream(b, 4, 0, []byte("hi"), true, true) },
			// type 0b (LEN|FIN), Stream ID 4, Length 2
			"0b" + "04" + "02" + "6869",
			Frame{Type: FrameStream, StreamID: 4, Data: []byte("hi"), Fin: true},
		},
		{
			"stream off len fin",
			func(b []byte) []byte { return AppendStream(b, 8, 1000, []byte("hi"), true, true) },
			// type 0f (OFF|LEN|FIN), Stream ID 8, Offset 1000 = 0x43e8, Length 2
			"0f" + "08" + "43e8" + "02" + "6869",
			Frame{Type: FrameStream, StreamID: 8, Offset: 1000, Data: []byte("hi"), Fin: true},
		},
		{
			"stream off",
			func(b []byte) []byte { return AppendStream(b, 1, 70000, []byte("hi"), false, false) },
			// type 0c (OFF), Stream ID 1, Offset 70000 = 0x11170 in four bytes
			"0c" + "01" + "80011170" + "6869",
			Frame{Type: FrameStream, StreamID: 1, Offset: 70000, Data: []byte("hi")},
		},
		{
			"stream off len",
			func(b []byte) []byte { return AppendStream(b, 16384, 1<<30, []byte("hi"), false, true) },
			// type 0e (OFF|LEN), Stream ID 16384 = 0x80004000, Offset 2^30 in eight bytes
			"0e" + "80004000" + "c000000040000000" + "02" + "6869",
			Frame{Type: FrameStream, StreamID: 16384, Offset: 1 << 30, Data: []byte("hi")},
		},
		{
			"stream fin only",
			func(b []byte) []byte { return AppendStream(b, 0, 5, nil, true, false) },
			// type 0d (OFF|FIN), Stream ID 0, Offset 5, no data: the stream ends at 5
			"0d" + "00" + "05",
			Frame{Type: FrameStream, Offset: 5, Data: []byte{}, Fin: true},
		},
		{
			"max_data",
			func(b []byte) []byte { return AppendMaxData(b, InitialMaxData) },
			// 2^20 = 0x100000 in four bytes
			"10" + "80100000",
			Frame{Type: FrameMaxData, Max: InitialMaxData},
		},
		{
			"max_data largest",
			func(b []byte) []byte { return AppendMaxData(b, maxVarint) },
			"10" + "ffffffffffffffff",
			Frame{Type: FrameMaxData, Max: maxVarint},
		},
		{
			"max_stream_data",
			func(b []byte) []byte { return AppendMaxStreamData(b, 4, InitialMaxStreamData) },
			// Stream ID 4, 2^18 = 0x40000 in four bytes
			"11" + "04" + "80040000",
			Frame{Type: FrameMaxStreamData, StreamID: 4, Max: InitialMaxStreamData},
		},
		{
			"max_streams",
			func(b []byte) []byte { return AppendMaxStreams(b, InitialMaxStreams) },
			"12" + "4064",
			Frame{Type: FrameMaxStreams, Max: InitialMaxStreams},
		},
		{
			"data_blocked",
			func(b []byte) []byte { return AppendDataBlocked(b, InitialMaxData) },
			"14" + "80100000",
			Frame{Type: FrameDataBlocked, Max: InitialMaxData},
		},
		{
			"stream_data_blocked",
			func(b []byte) []byte { return AppendStreamDataBlocked(b, 4, 16383) },
			"15" + "04" + "7fff",
			Frame{Type: FrameStreamDataBlocked, StreamID: 4, Max: 16383},
		},
		{
			"connection_close",
			func(b []byte) []byte { return AppendConnectionClose(b, 0, []byte("bye")) },
			// type 1d, Error Code 0, Reason Phrase Length 3, "bye"
			"1d" + "00" + "03" + "627965",
			Frame{Type: FrameConnectionClose, Reason: []byte("bye")},
		},
		{
			"connection_close no reason",
			func(b []byte) []byte { return AppendConnectionClose(b, 0x4000, nil) },
			"1d" + "80004000" + "00",
			Frame{Type: FrameConnectionClose, Code: 0x4000, Reason: []byte{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.append([]byte{0xaa})
			if h := hex.EncodeToString(got[1:]); h != tc.hex || got[0] != 0xaa {
				t.Fatalf("appended %x, want aa%s", got, tc.hex)
			}
			var f Frame
			n, err := ParseFrame(got[1:], &f)
			if err != nil || n != len(got)-1 {
				t.Fatalf("ParseFrame = %d, %v; want %d, nil", n, err, len(got)-1)
			}
			if !framesEqual(&f, &tc.want) {
				t.Fatalf("ParseFrame = %s\nwant %s", fmtFrame(&f), fmtFrame(&tc.want))
			}
		})
	}
}

// TestParseFrameAccepts covers encodings the appenders never write but a
// peer may, and the edges of the ranges ParseFrame allows.
func TestParseFrameAccepts(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		n    int // bytes consumed; 0 means all
		want Frame
	}{
		{"padding run stops at a frame", "0000000001", 4, Frame{Type: FramePadding, Length: 4}},
		{"padding to the end", "00", 0, Frame{Type: FramePadding, Length: 1}},
		{"ping then more", "0101", 1, Frame{Type: FramePing}},
		{"non-minimal varints", "11" + "4004" + "c000000000000005", 0,
			Frame{Type: FrameMaxStreamData, StreamID: 4, Max: 5}},
		{"stream OFF with offset 0", "0e" + "04" + "00" + "01" + "61" + "ff", 5,
			Frame{Type: FrameStream, StreamID: 4, Data: []byte("a")}},
		{"stream LEN 0 without FIN", "0a0400", 0,
			Frame{Type: FrameStream, StreamID: 4, Data: []byte{}}},
		{"stream ends at 2^62-1", "0c" + "04" + "fffffffffffffffe" + "61", 0,
			Frame{Type: FrameStream, StreamID: 4, Offset: maxVarint - 1, Data: []byte("a")}},
		{"ack range down to packet 0", "02" + "0a" + "00" + "01" + "00" + "08" + "00", 0,
			Frame{Type: FrameAck, AckRanges: []AckRange{{10, 10}, {0, 0}}}},
		{"ack with a stream after it", "02" + "05" + "00" + "00" + "05" + "01", 5,
			Frame{Type: FrameAck, AckRanges: []AckRange{{0, 5}}}},
		{"ack delay too long for a Duration", "02" + "00" + "ffffffffffffffff" + "00" + "00", 0,
			Frame{Type: FrameAck, AckRanges: []AckRange{{0, 0}},
				AckDelay: time.Duration(maxAckDelayMicros) * time.Microsecond}},
		{"max_streams 2^60", "12" + "d000000000000000", 0,
			Frame{Type: FrameMaxStreams, Max: 1 << 60}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := mustHex(t, tc.hex)
			wantN := tc.n
			if wantN == 0 {
				wantN = len(b)
			}
			var f Frame
			n, err := ParseFrame(b, &f)
			if err != nil || n != wantN {
				t.Fatalf("ParseFrame(%s) = %d, %v; want %d, nil", tc.hex, n, err, wantN)
			}
			if !framesEqual(&f, &tc.want) {
				t.Fatalf("ParseFrame(%s) = %s\nwant %s", tc.hex, fmtFrame(&f), fmtFrame(&tc.want))
			}
		})
	}
}

// TestParseFrameRejects: each input must fail with an error wrapping
// ErrFrame.
func TestParseFrameRejects(t *testing.T) {
	tests := []struct {
		name, hex string
	}{
		{"empty", ""},

		// Types outside our subset (doc.go).
		{"ack with ECN", "03" + "00" + "00" + "00" + "00" + "00" + "00" + "00"},
		{"crypto", "06" + "00" + "00"},
		{"new_token", "07" + "01" + "aa"},
		{"max_streams uni", "13" + "04"},
		{"streams_blocked bidi", "16" + "04"},
		{"streams_blocked uni", "17" + "04"},
		{"new_connection_id", "18"},
		{"path_challenge", "1a" + "0000000000000000"},
		{"transport connection_close", "1c" + "00" + "00" + "00"},
		{"handshake_done", "1e"},
		{"datagram", "30"},
		{"ping with a two-byte type", "4001"},
		{"type 0xff", "ff"},

		// Truncation.
		{"ack no fields", "02"},
		{"ack no first range", "02" + "4064" + "00" + "00"},
		{"ack largest cut", "02" + "40"},
		{"ack ranges missing", "02" + "0a" + "00" + "02" + "00" + "01" + "01"},
		{"ack range length missing", "02" + "0a" + "00" + "01" + "00" + "01"},
		{"ack huge count", "02" + "0a" + "00" + "bfffffff" + "00" + "0000"},
		{"reset_stream", "04" + "04" + "00"},
		{"reset_stream final size cut", "04" + "04" + "00" + "80"},
		{"stop_sending", "05" + "05"},
		{"stream no id", "08"},
		{"stream id cut", "08" + "40"},
		{"stream no offset", "0c" + "04"},
		{"stream no length", "0a" + "04"},
		{"stream data short", "0a" + "04" + "05" + "6869"},
		{"stream huge length", "0b" + "04" + "ffffffffffffffff" + "6869"},
		{"max_data", "10"},
		{"max_data cut", "10" + "c0000000"},
		{"max_stream_data", "11" + "04"},
		{"max_streams", "12"},
		{"data_blocked", "14"},
		{"stream_data_blocked", "15" + "04"},
		{"connection_close", "1d"},
		{"connection_close no length", "1d" + "00"},
		{"connection_close reason short", "1d" + "00" + "05" + "6869"},

		// Values out of range.
		{"ack first range below 0", "02" + "05" + "00" + "00" + "06"},
		{"ack gap below 0", "02" + "0a" + "00" + "01" + "00" + "09" + "00"},
		{"ack gap below 0 from 0", "02" + "00" + "00" + "01" + "00" + "00" + "00"},
		{"ack length below 0", "02" + "0a" + "00" + "01" + "00" + "08" + "01"},
		{"ack huge gap", "02" + "0a" + "00" + "01" + "00" + "ffffffffffffffff" + "00"},
		{"stream beyond 2^62-1 with LEN", "0e" + "04" + "ffffffffffffffff" + "01" + "00"},
		{"stream beyond 2^62-1 without LEN", "0c" + "04" + "ffffffffffffffff" + "00"},
		{"max_streams beyond 2^60", "12" + "d000000000000001"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := mustHex(t, tc.hex)
			var f Frame
			n, err := ParseFrame(b, &f)
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("ParseFrame(%s) = %d, %v; want ErrFrame", tc.hex, n, err)
			}
			if n != 0 {
				t.Errorf("ParseFrame(%s) consumed %d bytes with an error", tc.hex, n)
			}
		})
	}
}

// TestParseFrameResets: a Frame reused for a smaller frame keeps nothing of
// the last one (but the AckRanges array, emptied).
func TestParseFrameResets(t *testing.T) {
	b := AppendStream(nil, 4, 100, []byte("data"), true, true)
	b = AppendAck(b, []AckRange{{5, 9}, {1, 2}}, time.Millisecond)
	b = AppendConnectionClose(b, 7, []byte("why"))
	b = AppendResetStream(b, 8, 9, 10)
	b = AppendPadding(b, 2)
	b = AppendPing(b)

	var f Frame
	for len(b) > 0 {
		prev := f
		n, err := ParseFrame(b, &f)
		if err != nil {
			t.Fatalf("ParseFrame(%x): %v", b, err)
		}
		b = b[n:]
		want := Frame{Type: f.Type}
		switch f.Type {
		case FrameStream:
			want = Frame{Type: FrameStream, StreamID: 4, Offset: 100, Data: []byte("data"), Fin: true}
		case FrameAck:
			want = Frame{Type: FrameAck, AckRanges: []AckRange{{5, 9}, {1, 2}}, AckDelay: time.Millisecond}
		case FrameConnectionClose:
			want = Frame{Type: FrameConnectionClose, Code: 7, Reason: []byte("why")}
		case FrameResetStream:
			want = Frame{Type: FrameResetStream, StreamID: 8, Code: 9, Offset: 10}
		case FramePadding:
			want = Frame{Type: FramePadding, Length: 2}
		}
		if !framesEqual(&f, &want) {
			t.Errorf("after %s, ParseFrame = %s\nwant %s", fmtFrame(&prev), fmtFrame(&f), fmtFrame(&want))
		}
		if f.Type != FrameAck && len(f.AckRanges) != 0 {
			t.Errorf("%v frame kept AckRanges %v", f.Type, f.AckRanges)
		}
	}
	if f.Type != FramePing {
		t.Errorf("last frame %v, want PING", f.Type)
	}
}

// TestParseFrameDataAliases: Data and Reason are slices of the packet whose
// capacity ends with them, so appending to one cannot overwrite the next
// frame.
func TestParseFrameDataAliases(t *testing.T) {
	b := AppendStream(nil, 4, 0, []byte("abc"), false, true)
	b = AppendPing(b)
	var f Frame
	if _, err := ParseFrame(b, &f); err != nil {
		t.Fatal(err)
	}
	if &f.Data[0] != &b[3] || cap(f.Data) != 3 {
		t.Fatalf("Data %p cap %d, want %p cap 3", &f.Data[0], cap(f.Data), &b[3])
	}
	_ = append(f.Data, 0xee)
	if b[len(b)-1] != byte(FramePing) {
		t.Fatal("appending to Data overwrote the packet")
	}
}

// TestFrameRoundTrip encodes many random frames, values spread over every
// varint length, and checks that each parses back, and that StreamOverhead
// and AckSize match what the appenders write.
func TestFrameRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := bytes.Repeat([]byte("0123456789abcdef"), 100)
	var buf []byte
	var got Frame
	for i := range 20000 {
		f := randomFrame(rng, data)
		for _, withLength := range []bool{true, false} {
			buf = appendFrame(buf[:0], &f, withLength)
			n, err := ParseFrame(buf, &got)
			if err != nil || n != len(buf) {
				t.Fatalf("%d: ParseFrame(%x) of %s = %d, %v", i, buf, fmtFrame(&f), n, err)
			}
			if !framesEqual(&got, &f) {
				t.Fatalf("%d: %x parsed to %s\nwant %s", i, buf, fmtFrame(&got), fmtFrame(&f))
			}
		}
		switch f.Type {
		case FrameStream:
			for _, withLength := range []bool{true, false} {
				want := StreamOverhead(f.StreamID, f.Offset, len(f.Data), withLength)
				if o := len(appendFrame(nil, &f, withLength)) - len(f.Data); o != want {
					t.Fatalf("%s withLength %v: overhead %d, StreamOverhead %d", fmtFrame(&f), withLength, o, want)
				}
			}
		case FrameAck:
			if n, want := AckSize(f.AckRanges, f.AckDelay), len(buf); n != want {
				t.Fatalf("%s: AckSize %d, AppendAck wrote %d", fmtFrame(&f), n, want)
			}
		}
	}
}

// TestParseFramePacket parses a packet of every frame type back to back,
// then the same packet cut short at every length: each prefix parses up to
// the cut frame and fails there with ErrFrame, unless the cut falls between
// frames or leaves a STREAM frame without LEN, or a PADDING run, shorter but
// whole.
func TestParseFramePacket(t *testing.T) {
	var p []byte
	p = AppendAck(p, []AckRange{{300, 400}, {100, 200}, {1, 1}}, 3*time.Millisecond)
	p = AppendStream(p, 4, 1<<20, []byte("hello"), false, true)
	p = AppendResetStream(p, 8, 1, 1<<40)
	p = AppendStopSending(p, 9, 2)
	p = AppendMaxData(p, 1<<30)
	p = AppendMaxStreamData(p, 4, 1<<21)
	p = AppendMaxStreams(p, 200)
	p = AppendDataBlocked(p, 1<<20)
	p = AppendStreamDataBlocked(p, 4, 1<<18)
	p = AppendConnectionClose(p, 0, []byte("done"))
	p = AppendPing(p)
	p = AppendPadding(p, 3)
	p = AppendStream(p, 0, 0, []byte("tail"), true, false)

	var f Frame
	var types []FrameType
	var ends []int
	for off := 0; off < len(p); {
		n, err := ParseFrame(p[off:], &f)
		if err != nil {
			t.Fatalf("at %d: %v", off, err)
		}
		types = append(types, f.Type)
		off += n
		ends = append(ends, off)
	}
	want := []FrameType{FrameAck, FrameStream, FrameResetStream, FrameStopSending, FrameMaxData,
		FrameMaxStreamData, FrameMaxStreams, FrameDataBlocked, FrameStreamDataBlocked,
		FrameConnectionClose, FramePing, FramePadding, FrameStream}
	if !slices.Equal(types, want) {
		t.Fatalf("frames %v, want %v", types, want)
	}

	for cut := range len(p) {
		q := p[:cut]
		for i, off := 0, 0; off < len(q); i++ {
			n, err := ParseFrame(q[off:], &f)
			whole := ends[i] <= cut
			if err != nil {
				if whole || !errors.Is(err, ErrFrame) {
					t.Fatalf("cut %d: frame %d (%v) at %d: %v", cut, i, types[i], off, err)
				}
				break
			}
			if whole && off+n != ends[i] {
				t.Fatalf("cut %d: frame %d (%v) at %d is %d bytes, want %d", cut, i, types[i], off, n, ends[i]-off)
			}
			if !whole && i < len(types)-2 {
				t.Fatalf("cut %d: frame %d (%v) parsed, cut short", cut, i, types[i])
			}
			off += n
		}
	}
}

func TestAppendPanics(t *testing.T) {
	for name, ranges := range map[string][]AckRange{
		"no ranges":       nil,
		"inverted":        {{5, 4}},
		"ascending":       {{1, 2}, {5, 6}},
		"touching":        {{5, 6}, {3, 4}},
		"overlapping":     {{5, 6}, {3, 5}},
		"beyond 2^62-1":   {{0, 1 << 62}},
		"inverted second": {{10, 20}, {5, 2}},
	} {
		mustPanic(t, "AppendAck "+name, func() { AppendAck(nil, ranges, 0) })
		mustPanic(t, "AckSize "+name, func() { AckSize(ranges, 0) })
	}
	mustPanic(t, "AppendMaxStreams 2^60+1", func() { AppendMaxStreams(nil, 1<<60+1) })
	mustPanic(t, "AppendMaxData 2^62", func() { AppendMaxData(nil, 1<<62) })
}

func TestAppendPaddingNone(t *testing.T) {
	for _, n := range []int{0, -1} {
		if b := AppendPadding([]byte{1}, n); len(b) != 1 {
			t.Errorf("AppendPadding(%d) appended %x", n, b[1:])
		}
	}
}

func TestFrameTypeString(t *testing.T) {
	for typ, want := range map[FrameType]string{
		FramePadding: "PADDING", FramePing: "PING", FrameAck: "ACK",
		FrameResetStream: "RESET_STREAM", FrameStopSending: "STOP_SENDING",
		FrameStream: "STREAM", FrameStream | streamBitOff | streamBitLen | streamBitFin: "STREAM",
		FrameMaxData: "MAX_DATA", FrameMaxStreamData: "MAX_STREAM_DATA", FrameMaxStreams: "MAX_STREAMS",
		FrameDataBlocked: "DATA_BLOCKED", FrameStreamDataBlocked: "STREAM_DATA_BLOCKED",
		FrameConnectionClose: "CONNECTION_CLOSE", frameTransportClose: "FrameType(0x1c)", 0x03: "FrameType(0x03)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("FrameType(%#x).String() = %q, want %q", uint8(typ), got, want)
		}
	}
}

func TestAckDelayEncoding(t *testing.T) {
	for _, tc := range []struct {
		delay, want time.Duration
	}{
		{-time.Second, 0},
		{999 * time.Nanosecond, 0},
		{1500 * time.Nanosecond, time.Microsecond},
		{MaxAckDelay, MaxAckDelay},
	} {
		var f Frame
		b := AppendAck(nil, []AckRange{{1, 1}}, tc.delay)
		if _, err := ParseFrame(b, &f); err != nil || f.AckDelay != tc.want {
			t.Errorf("AckDelay %v: parsed %v, %v; want %v", tc.delay, f.AckDelay, err, tc.want)
		}
	}
}

// TestParseFrameNoAllocs: parsing into a warm Frame allocates nothing, for
// every frame type, ACKs with many ranges included.
func TestParseFrameNoAllocs(t *testing.T) {
	ranges := make([]AckRange, 32)
	for i := range ranges {
		pn := uint64(10000 - 10*i)
		ranges[i] = AckRange{Smallest: pn - 5, Largest: pn}
	}
	var p []byte
	p = AppendAck(p, ranges, time.Millisecond)
	p = AppendStream(p, 4, 1<<20, make([]byte, 1000), false, true)
	p = AppendResetStream(p, 8, 1, 1<<40)
	p = AppendStopSending(p, 9, 2)
	p = AppendMaxData(p, 1<<30)
	p = AppendMaxStreamData(p, 4, 1<<21)
	p = AppendMaxStreams(p, 200)
	p = AppendDataBlocked(p, 1<<20)
	p = AppendStreamDataBlocked(p, 4, 1<<18)
	p = AppendConnectionClose(p, 0, []byte("done"))
	p = AppendPing(p)
	p = AppendPadding(p, 3)
	p = AppendStream(p, 0, 0, []byte("tail"), true, false)

	var f Frame
	parseAll := func() {
		for b := p; len(b) > 0; {
			n, err := ParseFrame(b, &f)
			if err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
	}
	parseAll() // warm: AckRanges grows to 32
	if a := testing.AllocsPerRun(100, parseAll); a != 0 {
		t.Fatalf("ParseFrame allocates %v times per packet, want 0", a)
	}
}

// FuzzParseFrame: ParseFrame never panics; it consumes at least one byte and
// at most all of them; and a frame it returns, appended again, parses to the
// same frame, with and without a STREAM frame's LEN.
func FuzzParseFrame(f *testing.F) {
	seeds := [][]byte{
		AppendPadding(nil, 4),
		AppendPing(nil),
		AppendAck(nil, []AckRange{{95, 100}, {80, 90}, {10, 10}}, time.Millisecond),
		AppendResetStream(nil, 4, 257, 1000),
		AppendStopSending(nil, 5, 0),
		AppendStream(nil, 4, 0, []byte("hi"), false, false),
		AppendStream(nil, 8, 1000, []byte("hi"), true, true),
		AppendMaxData(nil, 1<<20),
		AppendMaxStreamData(nil, 4, 1<<18),
		AppendMaxStreams(nil, 100),
		AppendDataBlocked(nil, 1<<20),
		AppendStreamDataBlocked(nil, 4, 16383),
		AppendConnectionClose(nil, 0, []byte("bye")),
		mustHex(f, "0c04ffffffffffffffff00"),
		mustHex(f, "020a00010008ff"),
		mustHex(f, "1c000000"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr, again Frame
		for len(b) > 0 {
			n, err := ParseFrame(b, &fr)
			if err != nil {
				if !errors.Is(err, ErrFrame) || n != 0 {
					t.Fatalf("ParseFrame(%x) = %d, %v", b, n, err)
				}
				return
			}
			if n < 1 || n > len(b) {
				t.Fatalf("ParseFrame(%x) consumed %d bytes", b, n)
			}
			for _, withLength := range []bool{true, false} {
				enc := appendFrame(nil, &fr, withLength)
				m, err := ParseFrame(enc, &again)
				if err != nil || m != len(enc) {
					t.Fatalf("%x parsed to %s, which re-encodes to %x: %d, %v", b[:n], fmtFrame(&fr), enc, m, err)
				}
				if !framesEqual(&fr, &again) {
					t.Fatalf("%x parsed to %s, re-encoded %x to %s", b[:n], fmtFrame(&fr), enc, fmtFrame(&again))
				}
			}
			b = b[n:]
		}
	})
}

// appendFrame appends f with the appender for its type; withLength is for
// STREAM frames only.
func appendFrame(b []byte, f *Frame, withLength bool) []byte {
	switch f.Type {
	case FramePadding:
		return AppendPadding(b, f.Length)
	case FramePing:
		return AppendPing(b)
	case FrameAck:
		return AppendAck(b, f.AckRanges, f.AckDelay)
	case FrameResetStream:
		return AppendResetStream(b, f.StreamID, f.Code, f.Offset)
	case FrameStopSending:
		return AppendStopSending(b, f.StreamID, f.Code)
	case FrameStream:
		return AppendStream(b, f.StreamID, f.Offset, f.Data, f.Fin, withLength)
	case FrameMaxData:
		return AppendMaxData(b, f.Max)
	case FrameMaxStreamData:
		return AppendMaxStreamData(b, f.StreamID, f.Max)
	case FrameMaxStreams:
		return AppendMaxStreams(b, f.Max)
	case FrameDataBlocked:
		return AppendDataBlocked(b, f.Max)
	case FrameStreamDataBlocked:
		return AppendStreamDataBlocked(b, f.StreamID, f.Max)
	case FrameConnectionClose:
		return AppendConnectionClose(b, f.Code, f.Reason)
	}
	panic(fmt.Sprintf("appendFrame: type %v", f.Type))
}

// framesEqual compares frames field by field, an empty slice equal to nil.
func framesEqual(a, b *Frame) bool {
	return a.Type == b.Type && a.StreamID == b.StreamID && a.Offset == b.Offset &&
		a.Max == b.Max && a.Code == b.Code && a.Length == b.Length &&
		bytes.Equal(a.Data, b.Data) && a.Fin == b.Fin &&
		slices.Equal(a.AckRanges, b.AckRanges) && a.AckDelay == b.AckDelay &&
		bytes.Equal(a.Reason, b.Reason)
}

func fmtFrame(f *Frame) string {
	var s strings.Builder
	fmt.Fprintf(&s, "{%v", f.Type)
	for _, fld := range []struct {
		name string
		v    uint64
	}{{"id", f.StreamID}, {"off", f.Offset}, {"max", f.Max}, {"code", f.Code}, {"len", uint64(f.Length)}} {
		if fld.v != 0 {
			fmt.Fprintf(&s, " %s=%d", fld.name, fld.v)
		}
	}
	if f.Data != nil {
		fmt.Fprintf(&s, " data=%q", f.Data)
	}
	if f.Fin {
		s.WriteString(" fin")
	}
	if len(f.AckRanges) > 0 {
		fmt.Fprintf(&s, " ranges=%v delay=%v", f.AckRanges, f.AckDelay)
	}
	if f.Reason != nil {
		fmt.Fprintf(&s, " reason=%q", f.Reason)
	}
	s.WriteString("}")
	return s.String()
}

// randomFrame returns a valid frame of a random type, its numbers spread
// over every varint length; Data aliases data.
func randomFrame(rng *rand.Rand, data []byte) Frame {
	// num returns a value of 1, 2, 4 or 8 bytes, at most limit.
	num := func(limit uint64) uint64 {
		bits := []uint{6, 14, 30, 62}[rng.IntN(4)]
		return min(rng.Uint64()>>(64-bits), limit)
	}
	switch rng.IntN(12) {
	case 0:
		return Frame{Type: FramePadding, Length: 1 + rng.IntN(100)}
	case 1:
		return Frame{Type: FramePing}
	case 2:
		f := Frame{Type: FrameAck, AckDelay: time.Duration(num(maxAckDelayMicros)) * time.Microsecond}
		hi := num(maxVarint)
		for range 1 + rng.IntN(8) {
			lo := hi - min(hi, num(maxVarint)>>rng.IntN(62))
			f.AckRanges = append(f.AckRanges, AckRange{Smallest: lo, Largest: hi})
			if lo < 2 {
				break
			}
			hi = lo - 2 - min(lo-2, num(maxVarint)>>rng.IntN(62))
		}
		return f
	case 3:
		return Frame{Type: FrameResetStream, StreamID: num(maxVarint), Code: num(maxVarint), Offset: num(maxVarint)}
	case 4:
		return Frame{Type: FrameStopSending, StreamID: num(maxVarint), Code: num(maxVarint)}
	case 5:
		d := data[:rng.IntN(len(data)+1)]
		return Frame{Type: FrameStream, StreamID: num(maxVarint), Offset: num(maxVarint - uint64(len(d))),
			Data: d, Fin: rng.IntN(2) == 0}
	case 6:
		return Frame{Type: FrameMaxData, Max: num(maxVarint)}
	case 7:
		return Frame{Type: FrameMaxStreamData, StreamID: num(maxVarint), Max: num(maxVarint)}
	case 8:
		return Frame{Type: FrameMaxStreams, Max: num(maxStreamsLimit)}
	case 9:
		return Frame{Type: FrameDataBlocked, Max: num(maxVarint)}
	case 10:
		return Frame{Type: FrameStreamDataBlocked, StreamID: num(maxVarint), Max: num(maxVarint)}
	default:
		return Frame{Type: FrameConnectionClose, Code: num(maxVarint), Reason: data[:rng.IntN(64)]}
	}
}

func BenchmarkAppendStream(b *testing.B) {
	data := make([]byte, 1200)
	buf := make([]byte, 0, 1500)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	off := uint64(0)
	for b.Loop() {
		buf = AppendStream(buf[:0], 4, off, data, false, true)
		off += uint64(len(data))
	}
}

func BenchmarkParseFrameStream(b *testing.B) {
	p := AppendStream(nil, 4, 1<<30, make([]byte, 1200), false, true)
	var f Frame
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseFrame(p, &f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseAck(b *testing.B) {
	for _, nranges := range []int{1, 4, 32} {
		b.Run(fmt.Sprint(nranges, "ranges"), func(b *testing.B) {
			ranges := make([]AckRange, nranges)
			for i := range ranges {
				pn := uint64(100000 - 10*i)
				ranges[i] = AckRange{Smallest: pn - 5, Largest: pn}
			}
			p := AppendAck(nil, ranges, 3*time.Millisecond)
			var f Frame
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseFrame(p, &f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
