#!/usr/bin/env python3
"""An agent that messages other agents, written only from docs/protocol.md (§2, §13) with nats-py.

It listens on its core subjects (coord.direct.*.<id>.*, coord.direct.*.all.*) and reads its
normal-priority stored messages through its durable consumer msg_<id>_normal on COORD_MESSAGES,
then prints `READY` to stdout. Every subject it publishes on ends in its own id (the sender
token). From then on it:

* drops a message whose envelope `sender` is not its subject's last token (+TERM for a stored
  one) and, when the publisher (the subject's token) waits for an acknowledgment, tells it with
  a stored ERROR_REPORT (code `sender_mismatch`) on coord.msg.error_report.<publisher>.high.<id>;
* drops a stored message past its TTL (+TERM) and, when the sender waits for an acknowledgment,
  tells it with a stored ERROR_REPORT (code `expired`) on coord.msg.error_report.<sender>.high.<id>;
* takes a stored message (acknowledges it to JetStream), sends a MESSAGE_ACK to
  coord.direct.message_ack.<sender>.<id> when it asked for one, and answers a STATUS_UPDATE
  {"m": text} from --peer with a stored asynchronous TASK_RESPONSE {"echo": text} correlated to it;
* answers a synchronous request (a core message with a reply subject) with a TASK_RESPONSE
  {"echo": text} on the reply subject;
* exits 0 on a fire-and-forget STATUS_UPDATE {"m": "bye"}, once it has answered at least one
  stored message and one synchronous request, after printing one JSON line to stdout:

    {"agent_id": "...", "consumer_api": "nats-py" | "raw",
     "stored": [{"message_id", "type", "nats_msg_id", "delivery_mode"}, ...],
     "expired": ["message_id", ...], "forged": ["message_id", ...],
     "acknowledged": [...], "replied": [...], "answered": [...]}

Anything that breaks the protocol, or --timeout seconds without the "bye", makes it exit 1 with a
message on stderr. Run by tests/python_messaging.rs; needs `pip install nats-py`.
"""

import argparse
import asyncio
import json
import sys
import time
import uuid

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

PROTOCOL_VERSION = 1
PRIORITIES = ("low", "normal", "high", "critical")
DELIVERY_MODES = ("synchronous", "asynchronous", "fire_and_forget", "guaranteed")
# Messages this agent buffers at most: the consumer's max_ack_pending (§13.1).
INBOX_SIZE = 100


class AgentError(Exception):
    """A failure worth a one-line message and a non-zero exit."""


def log(text):
    print(f"messenger.py: {text}", file=sys.stderr, flush=True)


def now_ms():
    return int(time.time() * 1000)


def stream_prefix(prefix):
    """`coord` -> `COORD`, `acme.prod` -> `ACME_PROD` (§5)."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in prefix.upper())


def type_token(type_):
    """The subject token of a message type (§3): lower case, except COORDINATOR_REPLY."""
    return "reply" if type_ == "COORDINATOR_REPLY" else type_.lower()


def check_envelope(env, subject_type_token, where):
    """The §2 rules a received envelope must follow; raises AgentError otherwise."""

    def bad(why):
        raise AgentError(f"{where}: {why}: {json.dumps(env)}")

    if not isinstance(env, dict):
        bad("not a JSON object")
    if env.get("protocol_version") != PROTOCOL_VERSION:
        bad("protocol_version is not 1")
    message_id = env.get("message_id")
    try:
        canonical = str(uuid.UUID(message_id))
    except (TypeError, ValueError, AttributeError):
        bad("message_id is not a UUID")
    if canonical != message_id:
        bad("message_id is not in canonical lowercase hyphenated form")
    for field in ("sender", "type"):
        if not isinstance(env.get(field), str) or not env[field]:
            bad(f"{field} missing")
    if not env["type"].isupper() or type_token(env["type"]) != subject_type_token:
        bad(f"type does not match the subject token {subject_type_token!r}")
    recipients = env.get("recipients", [])
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        bad("recipients is not an array of strings")
    if env.get("priority", "normal") not in PRIORITIES:
        bad("unknown priority")
    if env.get("delivery_mode", "guaranteed") not in DELIVERY_MODES:
        bad("unknown delivery_mode")
    if not isinstance(env.get("requires_ack", False), bool):
        bad("requires_ack is not a boolean")
    created = env.get("created_at_ms")
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        bad("created_at_ms is not an integer")
    ttl = env.get("ttl_seconds")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0):
        bad("ttl_seconds is not an integer")
    policy = env.get("retry_policy")
    if policy is not None:
        keys = ("max_attempts", "initial_backoff_ms", "max_backoff_ms")
        if not isinstance(policy, dict) or not all(isinstance(policy.get(k), int) for k in keys):
            bad("retry_policy lacks one of " + ", ".join(keys))
    correlation = env.get("correlation_id")
    if correlation is not None and not isinstance(correlation, str):
        bad("correlation_id is not a string")
    if not isinstance(env.get("payload"), dict):
        bad("payload is not an object")


def is_expired(env):
    """§2 / §13.4: not to be acted upon after created_at_ms + ttl_seconds * 1000."""
    ttl = env.get("ttl_seconds")
    return ttl is not None and now_ms() > env["created_at_ms"] + ttl * 1000


class Messenger:
    def __init__(self, nc, agent_id, peer, prefix, timeout, raw_api):
        self.nc = nc
        self.js = nc.jetstream()
        self.agent_id = agent_id
        self.peer = peer
        self.prefix = prefix
        self.timeout = timeout
        self.raw_api = raw_api
        self.stream = f"{stream_prefix(prefix)}_MESSAGES"
        self.core = asyncio.Queue()
        # message_id -> whether we acknowledged it (§13.3: deduplicate on message_id, and
        # acknowledge a duplicate of an acknowledged message again).
        self.seen = {}
        self.report = {
            "agent_id": agent_id,
            "consumer_api": "raw" if raw_api else "nats-py",
            "stored": [],
            "expired": [],
            "forged": [],
            "acknowledged": [],
            "replied": [],
            "answered": [],
        }

    def envelope(self, type_, payload, recipient, **fields):
        env = {
            "protocol_version": PROTOCOL_VERSION,
            "message_id": str(uuid.uuid4()),
            "sender": self.agent_id,
            "recipients": [recipient],
            "type": type_,
            "priority": "normal",
            "delivery_mode": "guaranteed",
            "requires_ack": False,
            "created_at_ms": now_ms(),
            "payload": payload,
        }
        env.update(fields)
        return env

    # ---- setup -------------------------------------------------------------------------------

    async def on_core(self, msg):
        await self.core.put(msg)

    def consumer_config(self, name, priority):
        """§13.1: the inbox consumer of one priority."""
        return {
            "name": name,
            "durable_name": name,
            "description": f"inbox of {self.agent_id}, {priority} priority",
            "filter_subjects": [
                f"{self.prefix}.msg.*.{self.agent_id}.{priority}.*",
                f"{self.prefix}.msg.*.all.{priority}.*",
            ],
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": 60 * 1_000_000_000,  # nanoseconds in the JetStream API
            "max_ack_pending": INBOX_SIZE,
            "inactive_threshold": 86400 * 1_000_000_000,
        }

    async def create_consumer_raw(self, config):
        subject = f"$JS.API.CONSUMER.CREATE.{self.stream}.{config['name']}"
        body = {"stream_name": self.stream, "config": config}
        resp = await self.nc.request(subject, json.dumps(body).encode(), timeout=5)
        answer = json.loads(resp.data)
        if "error" in answer:
            raise AgentError(f"{subject}: {answer['error']}")

    async def create_consumer(self, config):
        supported = "filter_subjects" in ConsumerConfig.__dataclass_fields__
        if self.raw_api or not supported:
            self.report["consumer_api"] = "raw"
            await self.create_consumer_raw(config)
            return
        await self.js.add_consumer(
            self.stream,
            ConsumerConfig(
                name=config["name"],
                durable_name=config["durable_name"],
                description=config["description"],
                filter_subjects=config["filter_subjects"],
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=60,  # seconds here; nats-py converts
                max_ack_pending=INBOX_SIZE,
                inactive_threshold=86400,
            ),
        )

    async def bind_inbox(self, priority):
        """Creates the durable consumer of one priority, or binds to it if it exists."""
        name = f"msg_{self.agent_id}_{priority}"
        try:
            await self.js.consumer_info(self.stream, name)
        except NotFoundError:
            await self.create_consumer(self.consumer_config(name, priority))
        return await self.js.pull_subscribe_bind(durable=name, stream=self.stream)

    # ---- sending -----------------------------------------------------------------------------

    async def publish_stored(self, subject, env, msg_id):
        """JetStream publish, stored once per Nats-Msg-Id (§13.3)."""
        ack = await self.js.publish(
            subject, json.dumps(env).encode(), timeout=5, headers={"Nats-Msg-Id": msg_id}
        )
        if ack.stream != self.stream:
            raise AgentError(f"{subject} stored in {ack.stream}, not {self.stream}")

    async def send_ack(self, env):
        """§13.3: MESSAGE_ACK to coord.direct.message_ack.<sender>.<id> (core NATS)."""
        ack = self.envelope(
            "MESSAGE_ACK",
            {"message_id": env["message_id"], "agent_id": self.agent_id},
            env["sender"],
            correlation_id=env["message_id"],
            delivery_mode="fire_and_forget",
        )
        await self.nc.publish(
            f"{self.prefix}.direct.message_ack.{env['sender']}.{self.agent_id}",
            json.dumps(ack).encode(),
        )
        await self.nc.flush()
        self.seen[env["message_id"]] = True
        self.report["acknowledged"].append(env["message_id"])

    async def report_to(self, recipient, env, code, text):
        """§13.3: a stored ERROR_REPORT with `code` about `env` in `recipient`'s high inbox,
        unless nobody waits for an acknowledgment of it."""
        waiting = env.get("requires_ack", False) or env.get("delivery_mode") == "guaranteed"
        if not waiting or recipient == self.agent_id:
            return
        report = self.envelope(
            "ERROR_REPORT",
            {"code": code, "message": text},
            recipient,
            correlation_id=env["message_id"],
            priority="high",
        )
        subject = f"{self.prefix}.msg.error_report.{recipient}.high.{self.agent_id}"
        # Deterministic: a redelivered copy does not report twice.
        await self.publish_stored(subject, report, f"{env['message_id']}:{code}:{self.agent_id}")
        log(f"{env['message_id']}: {code}; reported to {recipient}")

    async def report_expired(self, env):
        """§13.4: a stored ERROR_REPORT `expired` in the sender's high-priority inbox."""
        self.report["expired"].append(env["message_id"])
        text = f"{env['message_id']} expired before {self.agent_id} received it"
        await self.report_to(env["sender"], env, "expired", text)

    async def sender_proven(self, subject, env):
        """§13.1: the envelope's sender must be the subject's last token (the publisher, which
        a secured deployment's permissions prove). Otherwise the message is dropped and the
        publisher told, if it waits for an acknowledgment."""
        publisher = subject.rsplit(".", 1)[-1]
        if env["sender"] == publisher:
            return True
        self.report["forged"].append(env["message_id"])
        text = (
            f"{env['message_id']} names {env['sender']} as its sender "
            f"but was published as {publisher}"
        )
        await self.report_to(publisher, env, "sender_mismatch", text)
        return False

    # ---- receiving ---------------------------------------------------------------------------

    async def on_stored(self, msg):
        # coord.msg.<type token>.<recipient>.<priority>.<sender>; the prefix may contain dots.
        token, recipient, priority, _sender = msg.subject[len(self.prefix) + len(".msg.") :].split(
            "."
        )
        env = json.loads(msg.data)
        check_envelope(env, token, msg.subject)
        if not await self.sender_proven(msg.subject, env):
            await msg.term()  # never redelivered
            return
        if env.get("priority", "normal") != priority:
            raise AgentError(f"{msg.subject}: priority {env.get('priority')} off its subject")
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        prefix = f"{env['message_id']}:{recipient}:"
        if not (msg_id or "").startswith(prefix) or not msg_id[len(prefix) :].isdigit():
            raise AgentError(f"{msg.subject}: Nats-Msg-Id {msg_id!r} is not {prefix}<attempt>")
        self.report["stored"].append(
            {
                "message_id": env["message_id"],
                "type": env["type"],
                "nats_msg_id": msg_id,
                "delivery_mode": env.get("delivery_mode", "guaranteed"),
            }
        )

        if is_expired(env):
            await msg.term()  # never redelivered
            await self.report_expired(env)
            return
        if env["message_id"] in self.seen:  # a retry: our acknowledgment went missing
            await msg.ack_sync(timeout=5)
            if self.seen[env["message_id"]]:
                await self.send_ack(env)
            return
        self.seen[env["message_id"]] = False
        # The application has it: acknowledge to JetStream, then to the sender if it asked.
        await msg.ack_sync(timeout=5)
        if env.get("requires_ack", False) or env.get("delivery_mode") == "guaranteed":
            await self.send_ack(env)
        log(f"took {env['type']} {env['message_id']} from {env['sender']}")

        text = env["payload"].get("m")
        if env["sender"] == self.peer and env["type"] == "STATUS_UPDATE" and text is not None:
            reply = self.envelope(
                "TASK_RESPONSE",
                {"echo": text},
                env["sender"],
                correlation_id=env["message_id"],
                delivery_mode="asynchronous",
                ttl_seconds=300,
            )
            subject = f"{self.prefix}.msg.task_response.{env['sender']}.normal.{self.agent_id}"
            await self.publish_stored(subject, reply, f"{reply['message_id']}:{env['sender']}:1")
            self.report["replied"].append(env["message_id"])
            log(f"replied to {env['message_id']} with {reply['message_id']}")

    async def on_core_message(self, msg):
        """Returns True on the final "bye"."""
        # coord.direct.<type token>.<recipient>.<sender>
        token, _recipient, _sender = msg.subject[len(self.prefix) + len(".direct.") :].split(".")
        env = json.loads(msg.data)
        check_envelope(env, token, msg.subject)
        if not await self.sender_proven(msg.subject, env):
            return False
        if env["type"] == "MESSAGE_ACK":  # we send nothing that asks for one
            return False
        if is_expired(env):
            await self.report_expired(env)
            return False
        text = env["payload"].get("m")
        if msg.reply:  # a synchronous request: answer on its reply subject (§13.2)
            if env.get("delivery_mode") != "synchronous":
                raise AgentError(f"{msg.subject}: a request that is not synchronous")
            answer = self.envelope(
                "TASK_RESPONSE",
                {"echo": text},
                env["sender"],
                correlation_id=env["message_id"],
                priority=env.get("priority", "normal"),
                delivery_mode="synchronous",
            )
            await self.nc.publish(msg.reply, json.dumps(answer).encode())
            await self.nc.flush()
            self.report["answered"].append(env["message_id"])
            log(f"answered request {env['message_id']}")
            return False
        if env.get("delivery_mode") != "fire_and_forget":
            raise AgentError(f"{msg.subject}: a core message that is neither request nor f&f")
        if env.get("requires_ack", False):
            await self.send_ack(env)
        if text != "bye":
            log(f"fire-and-forget {env['message_id']}: {text!r}")
            return False
        if not self.report["replied"] or not self.report["answered"]:
            raise AgentError(f"told to leave before answering both: {json.dumps(self.report)}")
        return True

    async def read_stored(self, sub):
        while True:
            try:
                msgs = await sub.fetch(batch=10, timeout=1)
            except asyncio.TimeoutError:  # nats-py's TimeoutError subclasses it
                continue
            for msg in msgs:
                await self.on_stored(msg)

    async def read_core(self):
        while True:
            if await self.on_core_message(await self.core.get()):
                return

    async def run(self):
        # Core first, so nothing addressed to us directly goes unheard (§13.1).
        for recipient in (self.agent_id, "all"):
            await self.nc.subscribe(f"{self.prefix}.direct.*.{recipient}.*", cb=self.on_core)
        inbox = await self.bind_inbox("normal")
        await self.nc.flush()
        print("READY", flush=True)

        stored = asyncio.create_task(self.read_stored(inbox))
        core = asyncio.create_task(self.read_core())
        try:
            done, _ = await asyncio.wait(
                {stored, core}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise AgentError(
                    f"no bye within {self.timeout:.0f}s; so far: {json.dumps(self.report)}"
                )
            for task in done:
                task.result()  # raises what the task raised
        finally:
            for task in (stored, core):
                task.cancel()
            await asyncio.gather(stored, core, return_exceptions=True)
        return self.report


async def main(args):
    async def on_error(e):
        log(f"nats: {e!r}")

    nc = await nats.connect(
        args.nats, connect_timeout=5, max_reconnect_attempts=3, error_cb=on_error
    )
    try:
        messenger = Messenger(
            nc, args.agent_id, args.peer, args.prefix, args.timeout, args.raw_consumer_api
        )
        return await messenger.run()
    finally:
        try:
            await asyncio.wait_for(nc.close(), timeout=5)
        except Exception as e:  # closing is best effort
            log(f"close: {e!r}")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server URL")
    p.add_argument("--agent-id", required=True, help="this agent: 1-64 of [A-Za-z0-9_-]")
    p.add_argument("--peer", required=True, help="the agent whose STATUS_UPDATEs are answered")
    p.add_argument("--prefix", default="coord", help="subject prefix")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the bye")
    p.add_argument(
        "--raw-consumer-api",
        action="store_true",
        help="create the inbox consumer with a raw $JS.API request instead of nats-py",
    )
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
