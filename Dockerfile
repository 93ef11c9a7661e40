# syntax=docker/dockerfile:1

# ---- build ------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build

# Dependencies first, against placeholder sources, so this layer is reused until Cargo.toml/Cargo.lock change.
# Benches declared in Cargo.toml get placeholder files too, or cargo refuses to read the manifest.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && awk '/^\[\[bench\]\]/ {b=1; next} b && /^name *=/ {gsub(/[" ]/, "", $0); sub(/^name=/, "", $0); print; b=0}' Cargo.toml \
       | while read -r bench; do echo 'fn main() {}' > "benches/${bench}.rs"; done \
    && cargo build --release --locked --bin polytomic-mcp \
    && rm -rf src benches

# The real sources (.dockerignore keeps target/, .git and local databases out).
COPY . .
# Make sure cargo sees the real crate as newer than the placeholder it just built.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin polytomic-mcp \
    && install -m 0755 target/release/polytomic-mcp /usr/local/bin/polytomic-mcp

# ---- run --------------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates stays unpinned on purpose: it should follow Debian's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 polytomic \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin polytomic \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=builder /usr/local/bin/polytomic-mcp /usr/local/bin/polytomic-mcp

# The SQLite store lands in /data; mount a volume there to keep feedback across container restarts.
WORKDIR /data
USER 10001:10001

ENV POLYTOMIC_HTTP_HOST=0.0.0.0 \
    POLYTOMIC_HTTP_PORT=3000 \
    POLYTOMIC_MCP_DATABASE_URL=sqlite:///data/polytomic-mcp.db \
    POLYTOMIC_MCP_LOG_FORMAT=json

EXPOSE 3000

# The slim image has no curl: bash's /dev/tcp asks /healthz directly.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/\"${POLYTOMIC_HTTP_PORT:-3000}\" && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]

ENTRYPOINT ["/usr/local/bin/polytomic-mcp"]
