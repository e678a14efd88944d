# swarmdb node image: a static binary on a small Debian runtime.
#
#   docker build -t swarmdb .
#   docker run -v swarmdb-data:/data -p 49737:49737/udp -p 9000:9000 swarmdb \
#       --topic my-app --bootstrap HOST:49737
#
# The entrypoint is `swarmdb node`; arguments are appended (a repeated flag
# overrides the default given here). UDP 49737 carries the DHT, STUN, hole
# punching and the encrypted sessions; TCP 9000 is the WebSocket for ToolDb
# clients and browsers, with the node's page at / (wss:// with --tls-cert/--tls-key,
# or a TLS proxy in front).

FROM golang:1.26 AS build
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
EXPOSE 49737/udp 9000/tcp
ENTRYPOINT ["swarmdb", "node", "--data", "/data", "--listen", "0.0.0.0:49737", "--ws", ":9000"]
