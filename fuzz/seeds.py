#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets from real messages and workloads.

decode: every example of docs/protocol.md that follows "On `<subject>`:", encoded in the target's
input layout [selector, tail_len, tail, payload] (see fuzz_targets/decode.rs).
workload_toml: the shipped workloads (config/workloads/*.toml).
Run from the repository root: python3 fuzz/seeds.py
"""
import hashlib
import json
import pathlib
import re

# MessageType::ALL, in order (crates/protocol/src/envelope.rs).
TOKENS = [
    "task_request", "task_response", "status_update", "resource_request", "resource_grant",
    "coordination_sync", "handoff_initiate", "handoff_acknowledge", "broadcast", "heartbeat",
    "error_report", "agent_register", "agent_deregister", "task_submit", "task_complete",
    "status_query", "reply", "message_ack", "grant_ack",
]
ROOT = pathlib.Path(__file__).resolve().parent.parent


def write(target, data):
    out = ROOT / "fuzz" / "seeds" / target
    out.mkdir(parents=True, exist_ok=True)
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


def decode_input(subject, payload):
    parts = subject.split(".", 2)
    if len(parts) >= 2 and parts[0] == "coord" and parts[1] in TOKENS:
        index = TOKENS.index(parts[1])
        if len(parts) == 3:
            selector, tail = index, parts[2]
        else:
            selector, tail = index + 20, ""
    else:
        selector, tail = 19, subject
    tail = tail.encode()
    return bytes([selector, len(tail)]) + tail + payload


def protocol_seeds():
    text = (ROOT / "docs" / "protocol.md").read_text()
    pattern = re.compile(r"On `([^`]+)`:\s*```json\n(.*?)```", re.S)
    count = 0
    for subject, body in pattern.findall(text):
        payload = json.dumps(json.loads(body), separators=(",", ":")).encode()
        write("decode", decode_input(subject, payload))
        count += 1
    return count


def workload_seeds():
    paths = sorted((ROOT / "config" / "workloads").glob("*.toml"))
    for path in paths:
        write("workload_toml", path.read_bytes())
    return len(paths)


if __name__ == "__main__":
    print(f"decode: {protocol_seeds()} seeds, workload_toml: {workload_seeds()} seeds")
