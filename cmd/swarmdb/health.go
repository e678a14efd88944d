package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthTimeout bounds `swarmdb health`: a container's health check must
// answer well within its own timeout.
const healthTimeout = 3 * time.Second

// healthMain asks a running node whether it is up: GET /healthz on its
// metrics server. It is what the Docker image's HEALTHCHECK runs (the
// runtime image has no curl).
func healthMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("health", "", `Asks a running node whether it is up: GET http://ADDR/healthz on the node's --metrics
address (a container health check; the node must run with --metrics). Prints the answer.
Exit codes: 0 healthy, 1 not answering or unhealthy, 2 usage.`)
	addr := f.String("metrics", "127.0.0.1:9100", "the node's --metrics address")
	timeout := f.Duration("timeout", healthTimeout, "give up after this long")
	if _, code, ok := f.parse(args, 0, std); !ok {
		return code
	}
	if err := checkHostPort("metrics", *addr); err != nil {
		return f.usageError(std, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/healthz", nil)
	if err != nil {
		return failed(std, "health", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return failed(std, "health", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return failed(std, "health", fmt.Errorf("%s: %s", resp.Status, body))
	}
	_, _ = std.out.Write(body)
	return exitOK
}
