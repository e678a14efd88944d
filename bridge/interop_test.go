package bridge

import (
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/tooldbtest"
)

// The real tool-db 2.6.6: client X on node A writes, client Y on node B (A and B linked) reads
// it with a get, is notified of both writes through its subscription, lists keys with a query,
// calls a server function and reads a CRDT.
func TestToolDbInterop(t *testing.T) {
	dir := tooldbtest.Require(t, "testdata/tooldb", "bridge/testdata/tooldb")
	const topic = "swarmdb-interop"
	echo := map[string]Function{"echo": func(_ context.Context, args []byte) (any, error) {
		return json.RawMessage(args), nil
	}}
	a := newBridge(t, Config{Server: true, Topic: topic, Functions: echo})
	b := newBridge(t, Config{Server: true, Topic: topic, Functions: echo})
	link(t, a, b)
	hostA, portA := serveWS(t, a)
	_, portB := serveWS(t, b)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "interop.js", topic, hostA, strconv.Itoa(portA), strconv.Itoa(portB))
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("interop.js: %v\n%s", err, stderr.String())
	}
	t.Logf("ToolDb scenario took %v", time.Since(start).Round(time.Millisecond))
	var out struct {
		Notified  []json.RawMessage `json:"notified"`
		First     map[string]any    `json:"first"`
		Second    map[string]any    `json:"second"`
		Get       map[string]any    `json:"get"`
		Keys      []string          `json:"keys"`
		Fn        json.RawMessage   `json:"fn"`
		CRDT      any               `json:"crdt"`
		CRDTValue map[string]any    `json:"crdtValue"`
	}
	if err := json.Unmarshal(outb, &out); err != nil {
		t.Fatalf("interop.js printed %q: %v", outb, err)
	}
	t.Logf("interop.js: %s", outb)
	if out.First["n"] != 1.0 || out.Second["n"] != 2.0 {
		t.Errorf("subscription: first %v second %v (notified %s)", out.First, out.Second, out.Notified)
	}
	if out.Get["from"] != "X" {
		t.Errorf("get across the nodes: %v", out.Get)
	}
	if strings.Join(out.Keys, ",") != "interop-get,interop-sub" {
		t.Errorf("query keys: %v", out.Keys)
	}
	if !strings.Contains(string(out.Fn), `"hello":"go"`) || !strings.Contains(string(out.Fn), CodeOK) {
		t.Errorf("function: %s", out.Fn)
	}
	if out.CRDTValue["a"] != 1.0 || out.CRDTValue["b"] != "two" {
		t.Errorf("CRDT value: %v", out.CRDTValue)
	}
	// Both Go stores hold ToolDb's records, which passed strict verification.
	for _, x := range []*Bridge{a, b} {
		r := waitRecord(t, x.Store(), "interop-sub", "")
		if !jsonEq(r.Value, `{"n":2}`) {
			t.Errorf("interop-sub stored as %s", r.Value)
		}
	}
}
