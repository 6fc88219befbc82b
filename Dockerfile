# syntax=docker/dockerfile:1
# The single `shardline` binary (every service is a subcommand: router, edge,
# replicator, rebalancer, migrate, loadtest, ...). Used by terraform/modules/services.
#   docker build -t shardline:$(git rev-parse --short HEAD) .
# Multi-arch: docker buildx build --platform linux/arm64 ... (Graviton tasks).

FROM rust:1.95-bookworm AS build
# aws-lc-sys (rustls' crypto provider) may fall back to a CMake build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shardline \
 && install -m 0755 target/release/shardline /usr/local/bin/shardline

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shardline \
 && useradd --system --uid 10001 --gid shardline --home-dir /home/shardline --create-home shardline \
 && mkdir -p /data /reports \
 && chown shardline:shardline /data /reports
COPY --from=build /usr/local/bin/shardline /usr/local/bin/shardline
# /data (edge store) and /reports (load test) are task volumes in ECS; a volume
# mounted where the image has a directory takes its owner, so the non-root user
# can write there under a read-only root file system.
USER 10001:10001
WORKDIR /home/shardline
ENV SHARDLINE_LOG_FORMAT=json
# Each subcommand serves its own health endpoint (router /readyz, edge and
# rebalancer /healthz); the orchestrator (ECS target groups) checks those.
HEALTHCHECK NONE
ENTRYPOINT ["shardline"]
CMD ["--help"]
