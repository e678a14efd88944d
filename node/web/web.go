// Package web is a node's HTTP face on its WebSocket port: the ToolDb
// WebSocket (every upgrade, on any path, as ToolDb's server accepts), the
// node's own page at / (plain files embedded with go:embed: no build step,
// nothing fetched from elsewhere), and two JSON endpoints, GET /status.json
// (the node's state, which the page polls) and GET /peers.json (the public
// WebSocket URLs of the topic's nodes, for browsers; CORS-open).
//
// The page talks to the node only through what any user can use: those two
// endpoints and the ToolDb protocol over the WebSocket. Package node wires
// it; web imports nothing of swarmdb.
package web

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Config says what the handler serves. WebSocket is required.
type Config struct {
	// WebSocket serves every WebSocket upgrade request.
	WebSocket http.Handler
	// Status and Peers produce the bodies of /status.json and /peers.json
	// (marshalled as JSON). Nil means 404.
	Status, Peers func() any
}

// Handler returns the HTTP handler of a node's WebSocket port.
func Handler(cfg Config) http.Handler {
	files, _ := fs.Sub(assets, "assets")
	static := http.FileServerFS(files)
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", static)
	for _, name := range []string{"app.js", "tooldb.js", "style.css"} {
		mux.Handle("GET /"+name, static)
	}
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, cfg.Status, "no-store")
	})
	mux.HandleFunc("GET /peers.json", func(w http.ResponseWriter, r *http.Request) {
		// Any page may read the list: it is what browsers bootstrap from.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		writeJSON(w, cfg.Peers, "max-age=10")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isUpgrade(r) {
			cfg.WebSocket.ServeHTTP(w, r)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// isUpgrade reports whether r asks for a WebSocket (RFC 6455 §4.1: an
// Upgrade header naming websocket; the Connection token is checked by the
// WebSocket library, which answers a half-formed request with an error).
func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "websocket") {
				return true
			}
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, f func() any, cache string) {
	if f == nil {
		http.NotFound(w, nil)
		return
	}
	b, err := json.Marshal(f())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", cache)
	_, _ = w.Write(append(b, '\n'))
}
