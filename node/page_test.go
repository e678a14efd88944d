package node_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/swarmdb/swarmdb/internal/browsertest"
)

// The node's own page, in Chromium: it shows the node, its peer (with its
// path), its NAT and DHT state and mainline "off"; its data explorer lists
// keys by prefix, shows a value and its live updates, and puts a record
// that the other node receives; and it follows the node without a reload
// (the peer leaving disappears from the table). A screenshot is kept as a
// test artifact (go test -artifacts, or $SWARMDB_ARTIFACTS).
func TestNodePage(t *testing.T) {
	const topic = "node-page"
	a, b := webNodePair(t, topic, nil)
	put(t, a, "page/greeting", `{"hello":"page"}`)
	put(t, a, "page/second", `{"n":2}`)
	put(t, a, "other", `{"n":3}`)
	br := browsertest.Start(t)
	br.Do(t, browserWait, chromedp.Navigate(httpURL(a)+"/"))

	sa, sb := a.Status(), b.Status()
	wait := func(expr, why string) { t.Helper(); browsertest.WaitJS(t, br, browserWait, expr, why) }
	text := func(id string) string {
		t.Helper()
		return browsertest.Eval[string](t, br, browserWait, fmt.Sprintf(`document.getElementById(%q).textContent`, id))
	}
	wait(fmt.Sprintf(`document.getElementById("public-key").textContent === %q`, sa.PublicKey), "the page shows the node's key")
	if got := text("address"); got != sa.Address {
		t.Errorf("ToolDb address %q, want %q", got, sa.Address)
	}
	if got := text("ws"); got != a.WebSocketURL() {
		t.Errorf("WebSocket %q, want %q", got, a.WebSocketURL())
	}
	wait(fmt.Sprintf(`document.querySelector('#peers tr[data-key=%q]') !== null`, sb.PublicKey), "the peer is listed")
	path := browsertest.Eval[string](t, br, browserWait, fmt.Sprintf(`document.querySelector('#peers tr[data-key=%q]').cells[1].textContent`, sb.PublicKey))
	if path != "lan" && path != "direct" && path != "relay" {
		t.Errorf("peer path %q", path)
	}
	if got, want := path, string(sa.Peers[0].Path); got != want {
		t.Errorf("peer path %q on the page, %q in the status", got, want)
	}
	for id, want := range map[string]string{"mainline-state": "off", "nat-class": sa.NAT.Class, "topic": topic} {
		if got := text(id); got != want {
			t.Errorf("#%s = %q, want %q", id, got, want)
		}
	}
	wait(`document.getElementById("dht-routing").textContent.endsWith(" nodes")`, "the DHT state")

	// The data explorer, over the ToolDb protocol.
	wait(`document.getElementById("ws-state").textContent === "connected"`, "the explorer connects")
	br.Do(t, browserWait, chromedp.SetValue(chromedp.CSS("#prefix"), "page/"), chromedp.Click(chromedp.CSS("#query-btn")))
	wait(`[...document.querySelectorAll("#keys li")].map(li => li.textContent).join(",") === "page/greeting,page/second"`, "keys by prefix")
	br.Do(t, browserWait, chromedp.Click(chromedp.CSS("#keys li")))
	wait(`document.getElementById("value").textContent.includes('"hello": "page"')`, "the value of the key")
	put(t, b, "page/greeting", `{"hello":"live update"}`)
	wait(`document.getElementById("watch-log").textContent.includes("live update")`, "a live update of the key")
	wait(`document.getElementById("value").textContent.includes("live update")`, "the value follows")

	br.Do(t, browserWait,
		chromedp.SetValue(chromedp.CSS("#put-key"), "page/from-form"),
		chromedp.SetValue(chromedp.CSS("#put-value"), `{"via":"the form"}`),
		chromedp.Click(chromedp.CSS("#put-btn")))
	waitValue(t, b, "page/from-form", []byte(`{"via":"the form"}`))
	wait(`document.getElementById("put-result").textContent.startsWith("stored")`, "the form says stored")

	ctx, cancel := context.WithTimeout(br.Ctx, browserWait)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	for _, p := range browsertest.SaveArtifact(t, "node-page.png", png) {
		t.Logf("screenshot: %s", p)
	}

	// Live: the peer leaves and the table follows, with no reload.
	start := time.Now()
	b.Close()
	wait(`document.getElementById("peer-count").textContent === "0"`, "the page follows the node")
	t.Logf("the page showed the peer gone %v after it closed", time.Since(start).Round(time.Millisecond))
}
