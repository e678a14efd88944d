# swarmdb node image: a static binary on a small Debian runtime.
#
#   docker build -t swarmdb .
#   docker run -v swarmdb-data:/data -p 49737:49737/udp -p 9000:9000 -p 127.0.0.1:9100:9100 \
#       swarmdb --topic my-app --bootstrap HOST:49737
#
# The entrypoint is `swarmdb node`; arguments are appended (a repeated flag
# overrides the default given here). Ports:
#   49737/udp  the DHT, STUN, hole punching and the encrypted sessions (one socket)
#   9000/tcp   the WebSocket for ToolDb clients and browsers, with the node's
#              page at / (wss:// with --tls-cert/--tls-key, or a TLS proxy in front)
#   9100/tcp   Prometheus metrics at /metrics and the health check at /healthz;
#              publish it on the host's loopback only, as above, or not at all
# HEALTHCHECK runs `swarmdb health`, which asks /healthz on 127.0.0.1:9100
# inside the container (the runtime image has no curl): healthy once the node
# has started and while it runs.

# The Go release go.mod asks for (go 1.26.8), not a floating minor tag.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/swarmdb ./cmd/swarmdb

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin swarmdb \
 && mkdir -p /data && chown swarmdb:swarmdb /data
COPY --from=build /out/swarmdb /usr/local/bin/swarmdb
USER swarmdb
WORKDIR /data
VOLUME ["/data"]
EXPOSE 49737/udp 9000/tcp 9100/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
    CMD ["swarmdb", "health", "--metrics", "127.0.0.1:9100"]
ENTRYPOINT ["swarmdb", "node", "--data", "/data", "--listen", "0.0.0.0:49737", "--ws", ":9000", "--metrics", ":9100"]
