//! Messages between agents need no Rust SDK: `tests/python/messenger.py`, written from
//! `docs/protocol.md` (§2, §13) with nothing but `nats-py`, exchanges guaranteed, asynchronous,
//! synchronous and fire-and-forget messages with a Rust `CommunicationProtocol`, and drops (and
//! reports) a stored message past its TTL and one whose sender is not its subject's sender token.
//! NATS only: no optimizer, no Redis.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use common::{require_python_nats, within};
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_client::comm::{
    CommunicationProtocol, DeliveryStatus, OutgoingMessage, ProtocolOptions,
};
use switchyard_harness::NatsServer;
use switchyard_protocol::{DeliveryMode, Envelope, MessagePriority, MessageType, Subjects, now_ms};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::task::JoinHandle;
use uuid::Uuid;

const RUST_ID: &str = "rust-a";
const PY_ID: &str = "py-b";

/// Collects the Python agent's stderr as it comes, and prints it if the test fails anywhere.
struct Stderr {
    text: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Stderr {
    fn collect(pipe: tokio::process::ChildStderr) -> Stderr {
        let text = Arc::new(Mutex::new(String::new()));
        let reader = tokio::spawn({
            let text = text.clone();
            async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut text) = text.lock() {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
            }
        });
        Stderr {
            text,
            reader: Some(reader),
        }
    }

    /// Everything, once the process has exited and the pipe is drained.
    async fn finish(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = within(10, "the python agent's stderr to close", reader).await;
        }
        self.so_far()
    }

    fn so_far(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Drop for Stderr {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of messenger.py ---\n{}--- end of stderr ---",
                self.so_far()
            );
        }
    }
}

fn envelope_of(message: &Envelope<Value>) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_agent_exchanges_messages_with_a_rust_agent() {
    require_python_nats();
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let client = async_nats::connect(nats.url())
        .await
        .expect("nats connects");

    // 1. The Rust agent; connecting also creates the COORD_MESSAGES stream.
    let rust_a = CommunicationProtocol::connect(
        client.clone(),
        Subjects::default(),
        RUST_ID,
        ProtocolOptions::default(),
    )
    .await
    .expect("rust-a connects");
    let stale_id = publish_stale_message(&client).await;
    let forged_id = publish_forged_message(&client).await;
    // py-b's acknowledgments, seen on the wire as well as by rust-a.
    let mut acks = client
        .subscribe(Subjects::default().direct(MessageType::MessageAck, RUST_ID, PY_ID))
        .await
        .expect("subscribes to acknowledgments");
    client.flush().await.expect("flush");

    // 2. The Python agent: READY once it listens on its core subjects and its consumer.
    let mut py_b = PythonAgent::start(&nats.url()).await;

    // 3. A guaranteed message: py-b takes it, acknowledges it and replies asynchronously.
    let hello_id = a_guaranteed_message_is_acknowledged(&rust_a, &mut acks).await;
    rust_a_gets_the_reply_and_the_reports(&rust_a, &hello_id, &stale_id, &forged_id).await;

    // 4. A synchronous request, answered on its reply subject.
    let ping_id = a_synchronous_request_is_answered(&rust_a).await;

    // 5. Fire-and-forget: py-b leaves when told.
    rust_a
        .send_message(
            OutgoingMessage::new(MessageType::StatusUpdate, json!({ "m": "bye" }))
                .to(PY_ID)
                .delivery(DeliveryMode::FireAndForget),
        )
        .await
        .expect("bye sent");
    let (result, line) = py_b.result().await;
    assert_eq!(result["agent_id"], PY_ID, "{line}");
    assert_eq!(result["expired"], json!([stale_id]), "{line}");
    assert_eq!(result["forged"], json!([forged_id]), "{line}");
    assert_eq!(result["replied"], json!([hello_id]), "{line}");
    assert_eq!(result["answered"], json!([ping_id]), "{line}");
    py_b_acknowledged_and_stored_hello(&result, &line, &hello_id);
    py_b_consumer_is_the_documented_one(&client).await;
}

/// A stored message that is already past its TTL when py-b reads it (as if sent a minute ago
/// with a one-second TTL): py-b must drop it and, since it asked for an acknowledgment, report
/// it back as `expired` (§13.4). Answers its message id.
async fn publish_stale_message(client: &async_nats::Client) -> String {
    let mut stale = Envelope::new(
        RUST_ID,
        MessageType::StatusUpdate,
        json!({ "m": "stale" }),
        now_ms() - 60_000,
    )
    .with_recipient(PY_ID);
    stale.requires_ack = true;
    stale.ttl_seconds = Some(1);
    store_for_py_b(client, &stale, RUST_ID).await
}

/// A stored message for py-b published as rust-a (the subject's sender token) whose envelope
/// names another sender: py-b must drop it and, since it asks for an acknowledgment, report it
/// to rust-a as `sender_mismatch` (§13.1). Answers its message id.
async fn publish_forged_message(client: &async_nats::Client) -> String {
    let mut forged = Envelope::new(
        "someone-else",
        MessageType::StatusUpdate,
        json!({ "m": "forged" }),
        now_ms(),
    )
    .with_recipient(PY_ID);
    forged.requires_ack = true;
    store_for_py_b(client, &forged, RUST_ID).await
}

/// Stores `envelope` in py-b's normal-priority inbox under the sender token `publisher`.
async fn store_for_py_b(
    client: &async_nats::Client,
    envelope: &Envelope<Value>,
    publisher: &str,
) -> String {
    let js = async_nats::jetstream::new(client.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{}:{PY_ID}:1", envelope.message_id).as_str(),
    );
    let subject = Subjects::default().message(
        envelope.message_type,
        PY_ID,
        MessagePriority::Normal,
        publisher,
    );
    within(10, "the message to be stored", async {
        js.publish_with_headers(
            subject,
            headers,
            serde_json::to_vec(envelope).expect("encodes").into(),
        )
        .await
        .expect("message sent")
        .await
    })
    .await
    .expect("message stored");
    envelope.message_id.to_string()
}

/// The Python agent (messenger.py) with its stdout lines and its collected stderr.
struct PythonAgent {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Stderr,
}

impl PythonAgent {
    /// Starts messenger.py and waits (at most 30 s) for its READY line.
    async fn start(nats_url: &str) -> PythonAgent {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/messenger.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--nats", nats_url])
            .args(["--agent-id", PY_ID, "--peer", RUST_ID, "--prefix", "coord"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        let mut stderr = Stderr::collect(child.stderr.take().expect("stderr piped"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let first = within(30, "the python agent to be READY", stdout.next_line())
            .await
            .expect("stdout readable");
        if first.as_deref() != Some("READY") {
            let exit = within(10, "the python agent to exit", child.wait()).await;
            panic!(
                "the python agent did not get ready (first line {first:?}, exit {exit:?}); stderr:\n{}",
                stderr.finish().await
            );
        }
        PythonAgent {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the agent to exit (it must succeed); answers its JSON result line.
    async fn result(&mut self) -> (Value, String) {
        let status = within(30, "the python agent to exit", self.child.wait())
            .await
            .expect("wait for the python agent");
        let mut lines = Vec::new();
        let what = "the python agent's stdout to close";
        while let Some(line) = within(10, what, self.stdout.next_line())
            .await
            .expect("stdout readable")
        {
            lines.push(line);
        }
        let stderr_text = self.stderr.finish().await;
        assert!(
            status.success(),
            "the python agent failed ({status}); stderr:\n{stderr_text}\nstdout:\n{}",
            lines.join("\n")
        );
        let line = lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("no result line on stdout; stderr:\n{stderr_text}"));
        let result: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("result line is not JSON ({e}): {line}"));
        (result, line.clone())
    }
}

/// rust-a sends `hello` guaranteed; it is delivered and acknowledged by py-b with exactly the
/// §13.3 MESSAGE_ACK envelope. Answers hello's message id.
async fn a_guaranteed_message_is_acknowledged(
    rust_a: &CommunicationProtocol,
    acks: &mut async_nats::Subscriber,
) -> String {
    let hello = rust_a
        .send_message(
            OutgoingMessage::new(MessageType::StatusUpdate, json!({ "m": "hello" }))
                .to(PY_ID)
                .delivery(DeliveryMode::Guaranteed),
        )
        .await
        .expect("guaranteed message stored");
    let record = rust_a
        .wait_delivery(&hello.message_id, Duration::from_secs(30))
        .await
        .expect("delivery settles");
    assert_eq!(record.status, DeliveryStatus::Delivered, "{record:?}");
    assert_eq!(record.acknowledged_by, [PY_ID], "{record:?}");

    let raw_ack = within(10, "py-b's MESSAGE_ACK on the wire", acks.next())
        .await
        .expect("subscription open");
    let ack: Value = serde_json::from_slice(&raw_ack.payload).expect("the ack is JSON");
    let hello_id = hello.message_id.to_string();
    the_ack_is_the_documented_envelope(&ack, &hello_id);
    hello_id
}

fn the_ack_is_the_documented_envelope(ack: &Value, hello_id: &str) {
    let fields: BTreeSet<&str> = ack
        .as_object()
        .expect("the ack is an object")
        .keys()
        .map(String::as_str)
        .collect();
    let documented: BTreeSet<&str> = [
        "protocol_version",
        "message_id",
        "correlation_id",
        "sender",
        "recipients",
        "type",
        "priority",
        "delivery_mode",
        "requires_ack",
        "created_at_ms",
        "payload",
    ]
    .into();
    assert_eq!(fields, documented, "{ack}");
    let ack_id = ack["message_id"].as_str().expect("message_id");
    assert_eq!(
        Uuid::parse_str(ack_id).map(|u| u.hyphenated().to_string()),
        Ok(ack_id.to_string()),
        "a canonical uuid: {ack}"
    );
    assert_ne!(ack_id, hello_id, "the ack has an id of its own: {ack}");
    assert_eq!(ack["protocol_version"], 1, "{ack}");
    assert_eq!(ack["correlation_id"], hello_id, "{ack}");
    assert_eq!(ack["sender"], PY_ID, "{ack}");
    assert_eq!(ack["recipients"], json!([RUST_ID]), "{ack}");
    assert_eq!(ack["type"], "MESSAGE_ACK", "{ack}");
    assert_eq!(ack["priority"], "normal", "{ack}");
    assert_eq!(ack["delivery_mode"], "fire_and_forget", "{ack}");
    assert_eq!(ack["requires_ack"], false, "{ack}");
    assert!(ack["created_at_ms"].is_u64(), "{ack}");
    assert_eq!(
        ack["payload"],
        json!({ "message_id": hello_id, "agent_id": PY_ID }),
        "{ack}"
    );
}

/// rust-a's inbox: the reply to `hello`, the expiry report of the stale message and the
/// mismatch report of the forged one.
async fn rust_a_gets_the_reply_and_the_reports(
    rust_a: &CommunicationProtocol,
    hello_id: &str,
    stale_id: &str,
    forged_id: &str,
) {
    let mut inbox = Vec::new();
    for _ in 0..3 {
        let message = within(30, "a message from py-b", rust_a.recv())
            .await
            .expect("inbox open");
        inbox.push(message.envelope);
    }
    let reply = inbox
        .iter()
        .find(|e| e.message_type == MessageType::TaskResponse)
        .unwrap_or_else(|| panic!("no TASK_RESPONSE in {inbox:?}"));
    assert_eq!(reply.sender, PY_ID, "{}", envelope_of(reply));
    assert_eq!(reply.recipients, [RUST_ID], "{}", envelope_of(reply));
    assert_eq!(
        reply.correlation_id.as_deref(),
        Some(hello_id),
        "{}",
        envelope_of(reply)
    );
    assert_eq!(reply.delivery_mode, DeliveryMode::Asynchronous);
    assert_eq!(reply.payload, json!({ "echo": "hello" }));
    let report_on = |id: &str| {
        inbox.iter().find(|e| {
            e.message_type == MessageType::ErrorReport && e.correlation_id.as_deref() == Some(id)
        })
    };
    let mismatch = report_on(forged_id)
        .unwrap_or_else(|| panic!("no ERROR_REPORT for the forged message in {inbox:?}"));
    assert_eq!(mismatch.sender, PY_ID, "{}", envelope_of(mismatch));
    let code = &mismatch.payload["code"];
    assert_eq!(code, "sender_mismatch", "{}", envelope_of(mismatch));
    let expired = report_on(stale_id)
        .unwrap_or_else(|| panic!("no ERROR_REPORT for the stale message in {inbox:?}"));
    assert_eq!(expired.sender, PY_ID, "{}", envelope_of(expired));
    assert_eq!(
        expired.correlation_id.as_deref(),
        Some(stale_id),
        "{}",
        envelope_of(expired)
    );
    assert_eq!(expired.priority, MessagePriority::High);
    let code = &expired.payload["code"];
    assert_eq!(code, "expired", "{}", envelope_of(expired));
}

/// A synchronous request, answered on its reply subject; answers the request's message id.
async fn a_synchronous_request_is_answered(rust_a: &CommunicationProtocol) -> String {
    let ping = within(
        30,
        "py-b to answer the synchronous request",
        rust_a.send_message(
            OutgoingMessage::new(MessageType::TaskRequest, json!({ "m": "ping" }))
                .to(PY_ID)
                .delivery(DeliveryMode::Synchronous),
        ),
    )
    .await
    .expect("py-b answers");
    assert_eq!(ping.responses.len(), 1, "{:?}", ping.responses);
    let answer = &ping.responses[0];
    assert_eq!(answer.message_type, MessageType::TaskResponse);
    assert_eq!(answer.sender, PY_ID);
    let ping_id = ping.message_id.to_string();
    assert_eq!(
        answer.correlation_id.as_deref(),
        Some(ping_id.as_str()),
        "{}",
        envelope_of(answer)
    );
    assert_eq!(answer.payload, json!({ "echo": "ping" }));
    ping_id
}

/// Only hello asked for an acknowledgment and was taken; each stored copy carries
/// `Nats-Msg-Id: <message_id>:<recipient>:<attempt>` (§13.3).
fn py_b_acknowledged_and_stored_hello(result: &Value, line: &str, hello_id: &str) {
    let acknowledged = result["acknowledged"].as_array().expect("acknowledged");
    assert!(
        acknowledged.iter().all(|id| *id == hello_id) && !acknowledged.is_empty(),
        "only hello asked for an acknowledgment and was taken: {line}"
    );
    let first_copy = result["stored"]
        .as_array()
        .expect("stored")
        .iter()
        .find(|s| s["message_id"] == hello_id)
        .unwrap_or_else(|| panic!("hello not among the stored messages: {line}"));
    assert_eq!(
        first_copy["nats_msg_id"],
        format!("{hello_id}:{PY_ID}:1"),
        "{line}"
    );
    assert_eq!(first_copy["delivery_mode"], "guaranteed", "{line}");
}

/// py-b's consumer is the one §13.1 describes, and everything on it was acknowledged.
async fn py_b_consumer_is_the_documented_one(client: &async_nats::Client) {
    let js = async_nats::jetstream::new(client.clone());
    let mut inbox_consumer = js
        .get_consumer_from_stream::<consumer::pull::Config, _, _>(
            format!("msg_{PY_ID}_normal"),
            "COORD_MESSAGES",
        )
        .await
        .expect("py-b created its durable consumer");
    let info = inbox_consumer.info().await.expect("consumer info").clone();
    let mut filters = info.config.filter_subjects.clone();
    filters.sort();
    assert_eq!(
        filters,
        ["coord.msg.*.all.normal.*", "coord.msg.*.py-b.normal.*"],
        "{info:?}"
    );
    assert_eq!(info.config.durable_name.as_deref(), Some("msg_py-b_normal"));
    assert_eq!(info.config.ack_policy, AckPolicy::Explicit);
    assert_eq!(info.config.deliver_policy, DeliverPolicy::All);
    assert_eq!(info.config.ack_wait, Duration::from_secs(60));
    assert_eq!(info.config.inactive_threshold, Duration::from_secs(86_400));
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 0),
        "every stored message delivered and settled"
    );
}
