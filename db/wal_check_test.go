package db

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// walStore writes records into a fresh in-memory store, closes it cleanly and returns the
// file system, the log's path, its bytes and the log number.
func walStore(t *testing.T, records int) (vfs.FS, string, []byte, uint32) {
	t.Helper()
	fs := vfs.NewMem()
	s := openMem(t, Config{FS: fs})
	u := mustUser(t)
	for i := 1; i <= records; i++ {
		rec := mustRecord(t, u, "n", fmt.Sprintf(`{"n":%d}`, i), "", testNow.Add(time.Duration(i)*time.Millisecond))
		if _, err := s.Put(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(context.Background(), mustRecord(t, u, "other", `"x"`, "", testNow)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	names, err := fs.List("db")
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	for _, n := range names {
		if strings.HasSuffix(n, ".log") {
			logs = append(logs, n)
		}
	}
	if len(logs) != 1 {
		t.Fatalf("logs %v, want one", logs)
	}
	path := fs.PathJoin("db", logs[0])
	b := readFile(t, fs, path)
	num, _ := walFileNum(path)
	return fs, path, b, uint32(num)
}

func readFile(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, fs vfs.FS, path string, b []byte) {
	t.Helper()
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// snapshot is every file of dir with its bytes.
func snapshot(t *testing.T, fs vfs.FS, dir string) map[string]string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		out[n] = string(readFile(t, fs, fs.PathJoin(dir, n)))
	}
	return out
}

// trailerOffset is where the clean close's EOF trailer starts.
func trailerOffset(t *testing.T, b []byte, logNum uint32) int {
	t.Helper()
	want := []byte{0, 0, 0, 0, 0, 0, walFirstRecycle, 0, 0, 0, 0}
	want[7], want[8], want[9], want[10] = byte(logNum+1), byte((logNum+1)>>8), byte((logNum+1)>>16), byte((logNum+1)>>24)
	i := bytes.LastIndex(b, want)
	if i < 0 {
		t.Fatal("no EOF trailer in a cleanly closed log")
	}
	return i
}

// TestCheckWALEveryByte flips one bit in every byte of a cleanly closed log. Damage before
// the EOF trailer is always confirmed (Pebble alone missed all of it: the log is one block);
// damage to the trailer itself loses nothing and is not reported; the intact log is clean.
func TestCheckWALEveryByte(t *testing.T) {
	_, _, b, num := walStore(t, 10)
	if _, bad := checkWAL(b, num); bad {
		t.Fatal("intact log reported damaged")
	}
	trailer := trailerOffset(t, b, num)
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		d, bad := checkWAL(c, num)
		switch {
		case i < trailer && !bad:
			t.Fatalf("flip at %d of %d (trailer at %d) not confirmed", i, len(b), trailer)
		case i >= trailer && bad:
			t.Fatalf("flip in the trailer (%d) reported: %+v", i, d)
		case bad && (d.Offset > int64(i) || d.Proof <= d.Offset):
			t.Fatalf("flip at %d: damage %+v", i, d)
		}
	}
}

// TestCheckWALTornTail: a log cut anywhere (a crash mid-write: no trailer, the last record
// partial) or followed by zeros (preallocation) is a torn tail, not damage.
func TestCheckWALTornTail(t *testing.T) {
	_, _, b, num := walStore(t, 10)
	trailer := trailerOffset(t, b, num)
	for cut := 0; cut <= trailer; cut++ {
		if d, bad := checkWAL(b[:cut], num); bad {
			t.Fatalf("log cut at %d reported damaged: %+v", cut, d)
		}
		padded := append(bytes.Clone(b[:cut]), make([]byte, 4096)...)
		if d, bad := checkWAL(padded, num); bad {
			t.Fatalf("log cut at %d and zero-padded reported damaged: %+v", cut, d)
		}
	}
	// Another log's content (a recycled file) after ours is not proof either.
	if d, bad := checkWAL(append(bytes.Clone(b[:trailer]), b[:trailer]...), num+7); bad {
		t.Fatalf("foreign log content reported as damage: %+v", d)
	}
}

// TestWALDamageRefusedThenRepaired is the case end to end: a bit flipped in the
// middle of the log of a store holding n=10. Open refuses with ErrWALCorrupt and changes
// no file (Pebble alone opened it with n rolled back and "other" gone, and deleted the
// log). With Repair, a copy of the damaged store is kept and the store opens.
func TestWALDamageRefusedThenRepaired(t *testing.T) {
	fs, path, b, _ := walStore(t, 10)
	c := bytes.Clone(b)
	c[len(c)/3] ^= 0x04
	writeFile(t, fs, path, c)
	before := snapshot(t, fs, "db")

	_, err := Open(Config{FS: fs, Dir: "db", Now: func() time.Time { return testNow }})
	var we *WALCorruptError
	if !errors.Is(err, ErrWALCorrupt) || !errors.Is(err, ErrCorrupt) || !errors.As(err, &we) {
		t.Fatalf("open of a damaged log: %v", err)
	}
	if we.Path != path || we.Offset > int64(len(c)/3) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %+v: %q", we, err)
	}
	after := snapshot(t, fs, "db")
	for name, content := range before {
		if after[name] != content {
			t.Fatalf("refused open changed %s", name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Fatalf("refused open created %s", name)
		}
	}

	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	s, err := Open(Config{FS: fs, Dir: "db", Repair: true, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	defer s.Close()
	copyDir := "db.corrupt-20261206T100000"
	kept := snapshot(t, fs, copyDir)
	for name, content := range before {
		if name != "LOCK" && kept[name] != content {
			t.Fatalf("the copy's %s differs from the damaged store's", name)
		}
	}
	// What Pebble replays stops at the damage: the acknowledged n=10 and "other" came
	// after it. This is what an unchecked open served silently.
	r, err := s.Get("n")
	if err != nil {
		t.Fatalf("records before the damage: %v", err)
	}
	if _, err := s.Get("other"); string(r.Value) == `{"n":10}` && err == nil {
		t.Fatal("nothing after the damage was lost: the flip did not hit a record")
	}
	t.Logf("after repair: n = %s (was 10)", r.Value)
}

// TestRepairOfAnIntactStore: Repair on a healthy store opens it and copies nothing.
func TestRepairOfAnIntactStore(t *testing.T) {
	fs, _, _, _ := walStore(t, 3)
	s, err := Open(Config{FS: fs, Dir: "db", Repair: true, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r, err := s.Get("n"); err != nil || string(r.Value) != `{"n":3}` {
		t.Fatalf("get n: %s %v", r.Value, err)
	}
	names, _ := fs.List(".")
	for _, n := range names {
		if strings.Contains(n, "corrupt") {
			t.Fatalf("repair of an intact store made %s", n)
		}
	}
}

// FuzzCheckWAL: any bytes are checked without a panic, and reported damage lies inside
// the log with its proof after it.
func FuzzCheckWAL(f *testing.F) {
	f.Add([]byte{}, uint32(1))
	f.Add(bytes.Repeat([]byte{0xff}, 64), uint32(5))
	f.Add([]byte{1, 2, 3, 4, 5, 0, 9, 3, 0, 0, 0}, uint32(3))
	f.Fuzz(func(t *testing.T, b []byte, num uint32) {
		d, bad := checkWAL(b, num)
		if bad && (d.Offset < 0 || d.Proof <= d.Offset || d.Proof >= int64(len(b))) {
			t.Fatalf("damage %+v in %d bytes", d, len(b))
		}
	})
}
