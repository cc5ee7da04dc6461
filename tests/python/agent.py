#!/usr/bin/env python3
"""A Switchyard agent written only from docs/protocol.md, with nats-py as its one dependency.

It subscribes to its grant subject, registers, acknowledges each grant with a GRANT_ACK, drops
copies of a grant it already took, reports each as completed, and after --tasks completions prints one JSON line to stdout and exits 0:

    {"agent_id": "...", "completed": ["task", ...],
     "grants": [{"task_id": "...", "grant_seq": 1, "correlation_id": "..."}, ...]}

Any ERROR_REPORT, unexpected reply status, or --timeout seconds without the awaited answer or
grant makes it exit 1 with a message on stderr. Run by tests/python_agent.rs; needs
`pip install nats-py` (scripts/install-servers.sh does it).
"""

import argparse
import asyncio
import json
import ssl
import sys
import time
import uuid

import nats
from nats.errors import ConnectionReconnectingError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import ServiceUnavailableError


# How long to wait for the answer to an event before sending it again (see Agent.answer_to).
ANSWER_PATIENCE_S = 5.0


class AgentError(Exception):
    """A failure worth a one-line message and a non-zero exit."""


def log(text):
    print(f"agent.py: {text}", file=sys.stderr, flush=True)


class Agent:
    def __init__(self, nc, agent_id, prefix, timeout):
        self.nc = nc
        self.js = nc.jetstream()
        self.agent_id = agent_id
        self.prefix = prefix
        self.timeout = timeout
        self.answers = {}  # correlation_id -> future of the answering envelope

    def envelope(self, type_, payload):
        return {
            "protocol_version": 1,
            "message_id": str(uuid.uuid4()),
            "sender": self.agent_id,
            "type": type_,
            "created_at_ms": int(time.time() * 1000),
            "payload": payload,
        }

    async def on_answer(self, msg):
        try:
            env = json.loads(msg.data)
        except ValueError:
            log(f"ignoring unreadable message on {msg.subject}")
            return
        fut = self.answers.pop(env.get("correlation_id"), None)
        if fut is not None and not fut.done():
            fut.set_result(env)

    async def subscribe_answers(self):
        # Replies and error reports are core NATS: subscribe before sending anything.
        await self.nc.subscribe(f"{self.prefix}.reply.{self.agent_id}", cb=self.on_answer)
        await self.nc.subscribe(f"{self.prefix}.error_report.{self.agent_id}", cb=self.on_answer)
        await self.nc.flush()

    async def publish_event(self, token, env, headers=None):
        """JetStream publish with the Nats-Msg-Id header (and any `headers` given, e.g. the
        traceparent); resending the same id is safe."""
        subject = f"{self.prefix}.{token}.{self.agent_id}"
        data = json.dumps(env).encode()
        headers = {**(headers or {}), "Nats-Msg-Id": env["message_id"]}
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return await self.js.publish(subject, data, timeout=5, headers=headers)
            except (
                NoRespondersError,
                NatsTimeoutError,
                ConnectionReconnectingError,
                ServiceUnavailableError,
            ) as e:
                # No stream yet (no optimizer has started), a slow server, or a cluster electing a
                # new stream leader after losing a node: the same message again.
                if time.monotonic() >= deadline:
                    raise AgentError(f"publish to {subject} failed for {self.timeout:.0f}s: {e!r}")
                await asyncio.sleep(0.2)

    async def send(self, token, type_, payload, expect_status, headers=None):
        """Publishes an event and waits for the COORDINATOR_REPLY correlated to it."""
        env = self.envelope(type_, payload)
        fut = asyncio.get_running_loop().create_future()
        self.answers[env["message_id"]] = fut  # before publishing, so it cannot be missed
        await self.publish_event(token, env, headers)
        answer = await self.answer_to(token, env, fut, headers)
        body = answer.get("payload") or {}
        if answer.get("type") == "ERROR_REPORT":
            raise AgentError(
                f"{type_} refused: {body.get('code')}: {body.get('message')}"
            )
        if answer.get("type") != "COORDINATOR_REPLY" or body.get("status") != expect_status:
            raise AgentError(
                f"{type_}: expected a COORDINATOR_REPLY with status {expect_status!r}, got "
                f"{json.dumps(answer)}"
            )
        return env["message_id"], body

    async def answer_to(self, token, env, fut, headers=None):
        """Waits for the answer to `env`. Replies are core NATS (§10): one sent while this client
        was reconnecting (a NATS node lost) is gone, so after ANSWER_PATIENCE_S the same event is
        sent again under a new message_id; a repeated AGENT_REGISTER or TASK_COMPLETE is answered
        the same and changes nothing further."""
        deadline = time.monotonic() + self.timeout
        while True:
            wait = min(ANSWER_PATIENCE_S, max(deadline - time.monotonic(), 0.0))
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout=wait)
            except asyncio.TimeoutError:
                pass
            if time.monotonic() >= deadline:
                self.answers.pop(env["message_id"], None)
                raise AgentError(
                    f"no answer to {env['type']} {env['message_id']} within {self.timeout:.0f}s"
                )
            log(f"no answer to {env['type']} yet; sending it again")
            again = self.envelope(env["type"], env["payload"])
            self.answers[again["message_id"]] = fut  # either answer completes the wait
            await self.publish_event(token, again, headers)

    async def acknowledge_grant(self, grant):
        """GRANT_ACK on core NATS (§6.4): until it arrives, the optimizers send the grant again."""
        ack = {
            "agent_id": self.agent_id,
            "grants": [{"task_id": grant["task_id"], "grant_seq": grant["grant_seq"]}],
        }
        env = self.envelope("GRANT_ACK", ack)
        await self.nc.publish(
            f"{self.prefix}.grant_ack.{self.agent_id}", json.dumps(env).encode()
        )

    async def run(self, tasks):
        await self.subscribe_answers()
        # Grants are core NATS (§6.4): subscribe before registering, so none is missed; a grant
        # made while this agent was away is sent again until acknowledged.
        grant_queue = asyncio.Queue()
        await self.nc.subscribe(
            f"{self.prefix}.task_request.{self.agent_id}", cb=grant_queue.put
        )
        await self.nc.flush()
        await self.send(
            "agent_register",
            "AGENT_REGISTER",
            {
                "agent_id": self.agent_id,
                "agent_type": "python",
                "max_resources": {"cpu": 4, "memory": 4096},
            },
            "registered",
        )
        log(f"{self.agent_id} registered")

        seen = set()
        completed = []
        grants = []
        last_progress = time.monotonic()
        while len(completed) < tasks:
            if time.monotonic() - last_progress > self.timeout:
                raise AgentError(
                    f"no grant within {self.timeout:.0f}s ({len(completed)} of {tasks} done)"
                )
            try:
                msgs = [await asyncio.wait_for(grant_queue.get(), timeout=2)]
            except asyncio.TimeoutError:
                continue
            for msg in msgs:
                env = json.loads(msg.data)
                if env.get("type") == "TASK_CANCEL":
                    # A granted task was cancelled (§6.6). This agent finishes each task as
                    # soon as it is granted, so there is nothing left to stop: the completion
                    # already sent (or its lease ending) releases the reservation.
                    log(f"cancel notice for {env['payload']['task_id']}")
                    continue
                if env.get("type") != "TASK_REQUEST":
                    raise AgentError(f"unexpected message on the grant subject: {msg.data!r}")
                grant = env["payload"]
                # The grant's W3C trace context (optional, §6.4): the agent's own spans would be
                # its children; it goes back with the report so the report joins the trace.
                traceparent = (msg.headers or {}).get("traceparent")
                trace_headers = {"traceparent": traceparent} if traceparent else {}
                # Taken on: acknowledge it, copies too (a copy means an ack was lost).
                await self.acknowledge_grant(grant)
                key = (grant["task_id"], grant["grant_seq"])
                if key in seen:  # grants are at-least-once
                    continue
                seen.add(key)
                last_progress = time.monotonic()
                grants.append(
                    {
                        "task_id": grant["task_id"],
                        "grant_seq": grant["grant_seq"],
                        "correlation_id": env.get("correlation_id"),
                        "traceparent": traceparent,
                    }
                )
                log(f"granted {grant['task_id']} (seq {grant['grant_seq']})")
                started = time.monotonic()
                # ... the work described by grant["task_type"] would happen here ...
                await self.send(
                    "task_complete",
                    "TASK_COMPLETE",
                    {
                        "task_id": grant["task_id"],
                        "agent_id": self.agent_id,
                        "success": True,
                        "execution_time_s": time.monotonic() - started,
                        "grant_seq": grant["grant_seq"],
                    },
                    "completed",
                    trace_headers,
                )
                completed.append(grant["task_id"])
                log(f"completed {grant['task_id']}")
                last_progress = time.monotonic()
        return {"agent_id": self.agent_id, "completed": completed, "grants": grants}


def stream_prefix(prefix):
    """`coord` -> `COORD`, `acme.prod` -> `ACME_PROD` (§5)."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in prefix.upper())


def tls_context(args):
    """TLS to NATS (docs/operations.md): trust --tls-ca, present --tls-cert/--tls-key if given."""
    if not (args.tls_ca or args.tls_cert):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
    if args.tls_cert:
        ctx.load_cert_chain(certfile=args.tls_cert, keyfile=args.tls_key)
    return ctx


def credentials(args):
    """A secured deployment (docs/security.md): the agent's .creds file, and the inbox prefix
    its permissions allow, where JetStream's acknowledgments and request replies come back."""
    if not args.creds:
        return {}
    return {"user_credentials": args.creds, "inbox_prefix": f"_INBOX_agent.{args.agent_id}"}


async def main(args):
    async def on_error(e):
        log(f"nats: {e!r}")

    async def on_reconnected():
        log(f"reconnected to {nc.connected_url.netloc}")

    # --nats may list several servers of one cluster: the client moves to another when the one
    # it is connected to goes away, and keeps trying (bounded by --timeout on every wait).
    servers = [s.strip() for s in args.nats.split(",") if s.strip()]
    nc = await nats.connect(
        servers=servers,
        connect_timeout=5,
        max_reconnect_attempts=60,
        reconnect_time_wait=0.5,
        dont_randomize=args.in_order,
        error_cb=on_error,
        reconnected_cb=on_reconnected,
        tls=tls_context(args),
        **credentials(args),
    )
    try:
        agent = Agent(nc, args.agent_id, args.prefix, args.timeout)
        return await agent.run(args.tasks)
    finally:
        try:
            await asyncio.wait_for(nc.close(), timeout=5)
        except Exception as e:  # closing is best effort
            log(f"close: {e!r}")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--nats", default="nats://127.0.0.1:4222", help="NATS server URL, or several comma-separated"
    )
    p.add_argument(
        "--in-order", action="store_true", help="try the servers in the order given, not shuffled"
    )
    p.add_argument("--agent-id", required=True, help="1-64 of [A-Za-z0-9_-]")
    p.add_argument("--tasks", type=int, default=1, help="completions before exiting")
    p.add_argument("--prefix", default="coord", help="subject prefix")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for anything")
    p.add_argument("--tls-ca", help="PEM CA file that signed the NATS servers' certificates")
    p.add_argument("--tls-cert", help="PEM client certificate (with --tls-key)")
    p.add_argument("--tls-key", help="PEM key of --tls-cert")
    p.add_argument("--creds", help="the agent's .creds file (switchyard auth add-agent)")
    return p.parse_args()


if __name__ == "__main__":
    args = parse_args()
    try:
        result = asyncio.run(main(args))
    except AgentError as e:
        log(f"error: {e}")
        sys.exit(1)
    except Exception as e:
        log(f"error: {e!r}")
        sys.exit(1)
    print(json.dumps(result), flush=True)
