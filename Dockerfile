# syntax=docker/dockerfile:1
#
# Switchyard optimizer image: `docker build -t switchyard .`
# The image runs one optimizer replica (ENTRYPOINT); the `switchyard` CLI is included too
# (`docker run --entrypoint switchyard switchyard ...`). Configuration comes from environment
# variables (NATS_URL, REDIS_URL, METRICS_ADDR, ...; see config/default.toml, whose values are
# compiled in as the defaults) or a file passed with --config / SWITCHYARD_CONFIG.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# `docker build --build-arg SWITCHYARD_GIT_COMMIT=$(git rev-parse --short HEAD) .` names the commit
# in `optimizer --version` and switchyard_build_info (the build context has no .git to ask).
ARG SWITCHYARD_GIT_COMMIT=""
# The cache mounts keep the registry and build artifacts between builds; the binaries are copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin optimizer --bin switchyard \
    && mkdir -p /out \
    && cp target/release/optimizer target/release/switchyard /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin switchyard
COPY --from=builder /out/optimizer /out/switchyard /usr/local/bin/
COPY config/ /etc/switchyard/
WORKDIR /etc/switchyard
USER switchyard:switchyard
# /metrics and /healthz (METRICS_ADDR; the default 127.0.0.1:9464 is unreachable from outside the
# container, so set METRICS_ADDR=0.0.0.0:9464 to publish it).
EXPOSE 9464
# SIGTERM: the optimizer stops pulling, finishes the batches in flight and exits; events it had
# not acknowledged are redelivered to another replica.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/optimizer"]
