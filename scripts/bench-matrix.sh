#!/usr/bin/env bash
# Runs the data-path benchmark matrix (BENCHMARKS.md, "Data path v2") RUNS times, each run
# against fresh local servers started by the bench itself, and prints the medians as Markdown
# tables. Raw JSON reports and logs are kept in OUT.
#
#   scripts/bench-matrix.sh                 # RUNS=3, target/release/switchyard
#   RUNS=5 OUT=/tmp/matrix scripts/bench-matrix.sh
#   ONLY=closed scripts/bench-matrix.sh     # scenarios whose name contains "closed"
#
# Build first: cargo build --release.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
BIN="${BIN:-target/release/switchyard}"
OUT="${OUT:-$(mktemp -d -t bench-matrix-XXXXXX)}"
ONLY="${ONLY:-}"
mkdir -p "$OUT"
if [ -z "${NATS_SERVER_BIN:-}" ]; then
    NATS_SERVER_BIN="$(scripts/install-servers.sh --nats-path)"
fi
export NATS_SERVER_BIN
# Local servers every run: the bench starts its own only when these are unset.
unset NATS_URL REDIS_URL SWITCHYARD_CONFIG NATS_MONITOR_URL
# A failed run's reason is its `Error:` line, not a backtrace.
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0

# name|arguments
SCENARIOS=(
    "closed-r1|--rate 0 --inflight 1024 --duration 10 --baseline --replicas 1"
    "closed-r2|--rate 0 --inflight 1024 --duration 10 --baseline --replicas 2"
    "rate500-a100|--rate 500 --agents 100 --duration 10"
    "rate500-a1000|--rate 500 --agents 1000 --duration 10"
    "rate500-a10000|--rate 500 --agents 10000 --duration 10"
    "idle-a1000|--agents 1000 --idle-seconds 10 --duration 1 --rate 1"
)

NAMES=()
for scenario in "${SCENARIOS[@]}"; do
    name="${scenario%%|*}"
    args="${scenario#*|}"
    if [ -n "$ONLY" ] && [[ "$name" != *"$ONLY"* ]]; then continue; fi
    NAMES+=("$name")
    for run in $(seq 1 "$RUNS"); do
        echo "== $name run $run: $BIN bench --json $args" >&2
        # shellcheck disable=SC2086 # the arguments are meant to split
        if "$BIN" bench --json $args >"$OUT/$name.$run.json" 2>"$OUT/$name.$run.log"; then
            echo "   ok" >&2
        else
            echo "   exit $?: $(grep -m1 '^Error' "$OUT/$name.$run.log" || tail -n 1 "$OUT/$name.$run.log")" >&2
        fi
    done
done

python3 - "$OUT" "$RUNS" "${NAMES[@]}" <<'EOF'
import json, pathlib, statistics, sys

out, runs, names = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]

def field(report, path):
    value = report
    for key in path.split("."):
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value

def median(reports, path):
    values = [v for v in (field(r, path) for r in reports) if isinstance(v, (int, float))]
    return statistics.median(values) if values else None

def fmt(value, digits):
    return "n/a" if value is None else f"{value:,.{digits}f}"

def load(name):
    reports, failures = [], []
    for run in range(1, runs + 1):
        path = out / f"{name}.{run}.json"
        text = path.read_text().strip() if path.exists() else ""
        if text:
            reports.append(json.loads(text.splitlines()[-1]))
        else:
            log = out / f"{name}.{run}.log"
            lines = [l for l in log.read_text().splitlines() if l.strip()] if log.exists() else []
            errors = [l for l in lines if l.startswith("Error")]
            failures.append((errors or lines or ["no output"])[-1])
    return reports, failures

def top_commands(reports, key):
    calls = {}
    for r in reports:
        for c in (field(r, key) or {}).get("redis_top_commands", []):
            calls.setdefault(c["command"], []).append(c["calls"])
    ranked = sorted(calls.items(), key=lambda kv: -statistics.median(kv[1]))[:5]
    return ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in ranked)

LOAD = [("lifecycles/s", "lifecycles_per_s", 0), ("bare loop/s", "baseline_allocations_per_s", 0),
        ("ratio", "ratio_to_baseline", 3), ("p50 ms", "grant_latency_ms.p50", 2),
        ("p99 ms", "grant_latency_ms.p99", 2), ("NATS msgs/lc", "per_lifecycle.nats_msgs", 1),
        ("NATS bytes/lc", "per_lifecycle.nats_bytes", 0),
        ("Redis cmds/lc", "per_lifecycle.redis_commands", 1),
        ("nats-server CPU ms/lc", "per_lifecycle.nats_cpu_ms", 3),
        ("redis-server CPU ms/lc", "per_lifecycle.redis_cpu_ms", 3),
        ("bench process CPU ms/lc", "per_lifecycle.process_cpu_ms", 3),
        ("registration s", "registration_s", 1)]
IDLE = [("NATS msgs/s", "idle_per_s.nats_msgs", 0), ("NATS bytes/s", "idle_per_s.nats_bytes", 0),
        ("Redis cmds/s", "idle_per_s.redis_commands", 0),
        ("nats-server CPU ms/s", "idle_per_s.nats_cpu_ms", 1),
        ("redis-server CPU ms/s", "idle_per_s.redis_cpu_ms", 1),
        ("bench process CPU ms/s", "idle_per_s.process_cpu_ms", 1),
        ("registration s", "registration_s", 1)]

print(f"Medians of {runs} runs (raw reports in {out}).\n")
print("| scenario | runs ok | defects | " + " | ".join(h for h, _, _ in LOAD) + " |")
print("|---|---:|---:|" + "---:|" * len(LOAD))
notes = []
for name in names:
    reports, failures = load(name)
    defects = max((sum(r.get(k, 0) or 0 for k in ("double_grants", "duplicate_completions",
                   "unfinished", "error_reports", "submit_errors", "replies_lost"))
                   for r in reports), default=None)
    cells = [fmt(median(reports, p), d) for _, p, d in LOAD]
    print(f"| {name} | {len(reports)}/{runs} | {fmt(defects, 0)} | " + " | ".join(cells) + " |")
    if reports:
        notes.append(f"- {name}: top Redis commands per lifecycle: {top_commands(reports, 'per_lifecycle')}")
    for failure in sorted(set(failures)):
        notes.append(f"- {name}: failed: {failure}")
idle = [n for n in names if any(field(r, "idle_per_s") for r in load(n)[0])]
if idle:
    print("\nIdle fleet (no load), per second:\n")
    print("| scenario | " + " | ".join(h for h, _, _ in IDLE) + " |")
    print("|---|" + "---:|" * len(IDLE))
    for name in idle:
        reports, _ = load(name)
        print(f"| {name} | " + " | ".join(fmt(median(reports, p), d) for _, p, d in IDLE) + " |")
        notes.append(f"- {name}: top Redis commands per idle second: {top_commands(reports, 'idle_per_s')}")
print()
print("\n".join(notes))
EOF
