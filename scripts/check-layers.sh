#!/usr/bin/env bash
# Checks what the compiler cannot: that the lower crates stay free of what the layers above them
# bring in (docs/architecture.md "Layers"). A Rust agent depending on switchyard-client must not compile Redis,
# Prometheus or a command-line parser; the pure crates must not pull in an async runtime or I/O.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
forbid() {
    local crate="$1"; shift
    local deps
    deps="$(cargo tree -p "$crate" -e normal --prefix none --offline 2>/dev/null \
        || cargo tree -p "$crate" -e normal --prefix none)"
    for dep in "$@"; do
        if grep -qE "^${dep} v" <<<"$deps"; then
            echo "check-layers: $crate depends on $dep (see docs/architecture.md \"Layers\")" >&2
            failed=1
        fi
    done
}

forbid switchyard-decision tokio async-nats redis prometheus clap
forbid switchyard-protocol tokio async-nats redis prometheus clap
forbid switchyard-sim tokio async-nats redis prometheus clap
forbid switchyard-client redis prometheus clap
forbid switchyard-auth tokio async-nats redis prometheus clap
# One rustls crypto provider, ring (async-nats's): with a second one compiled in, rustls 0.23
# cannot choose a default and the first TLS connection (redis-rs asks for the default) panics.
forbid switchyard aws-lc-rs aws-lc-sys
exit "$failed"
