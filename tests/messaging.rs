//! The inter-agent protocol's delivery modes over a real nats-server (JetStream on), with two
//! or more agents per test. No optimizer is needed: agents talk to each other directly.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::within;
use serde_json::{Value, json};
use switchyard_client::comm::{
    AckMode, CommunicationProtocol, DeliveryStatus, InboxMessage, OutgoingMessage, ProtocolOptions,
};
use switchyard_client::error::ErrorKind;
use switchyard_harness::NatsServer;
use switchyard_protocol::{
    DeliveryMode, Envelope, MessagePriority, MessageType, RetryPolicy, Subjects, now_ms,
};

async fn agent(nats: &NatsServer, id: &str, options: ProtocolOptions) -> CommunicationProtocol {
    let client = async_nats::connect(nats.url())
        .await
        .expect("nats connects");
    CommunicationProtocol::connect(client, Subjects::default(), id, options)
        .await
        .expect("protocol connects")
}

fn marker(message: &InboxMessage) -> String {
    message.envelope.payload["m"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn note(mode: DeliveryMode, to: &str, m: &str) -> OutgoingMessage {
    OutgoingMessage::new(MessageType::StatusUpdate, json!({ "m": m }))
        .to(to)
        .delivery(mode)
}

async fn next_marker(agent: &CommunicationProtocol) -> String {
    let message = within(10, "a message arrives", agent.recv()).await;
    marker(&message.expect("inbox open"))
}

#[tokio::test]
async fn an_offline_recipient_gets_stored_modes_when_back_but_not_fire_and_forget() {
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let sender = agent(&nats, "a1", ProtocolOptions::default()).await;
    // a2 has been here before (its consumers exist), then went offline.
    agent(&nats, "a2", ProtocolOptions::default())
        .await
        .shutdown()
        .await;

    let guaranteed = sender
        .send_message(note(DeliveryMode::Guaranteed, "a2", "guaranteed"))
        .await
        .expect("guaranteed stored");
    sender
        .send_message(note(DeliveryMode::Asynchronous, "a2", "asynchronous"))
        .await
        .expect("asynchronous stored");
    sender
        .send_message(note(DeliveryMode::FireAndForget, "a2", "lost"))
        .await
        .expect("fire-and-forget handed to the client");

    let receiver = agent(&nats, "a2", ProtocolOptions::default()).await;
    let mut got = vec![next_marker(&receiver).await, next_marker(&receiver).await];
    got.sort();
    assert_eq!(got, ["asynchronous", "guaranteed"]);
    // Core messages from one connection arrive in order: if the offline fire-and-forget had
    // been kept anywhere, it would come before this one.
    sender
        .send_message(note(DeliveryMode::FireAndForget, "a2", "online"))
        .await
        .expect("sent");
    assert_eq!(next_marker(&receiver).await, "online");

    let record = sender
        .wait_delivery(&guaranteed.message_id, Duration::from_secs(10))
        .await
        .expect("delivery settles");
    assert_eq!(record.status, DeliveryStatus::Delivered);
    assert_eq!(record.acknowledged_by, ["a2"]);
    assert_eq!(sender.metrics().ack_rate.get(), 1.0);
}

#[tokio::test]
async fn synchronous_returns_each_response_or_a_timeout_error() {
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let asker = agent(&nats, "a1", ProtocolOptions::default()).await;
    let responder = std::sync::Arc::new(agent(&nats, "a2", ProtocolOptions::default()).await);
    let serving = tokio::spawn({
        let responder = responder.clone();
        async move {
            while let Some(request) = responder.recv().await {
                let echo = json!({ "echo": request.envelope.payload["m"] });
                let _ = responder
                    .respond(&request, MessageType::TaskResponse, echo)
                    .await;
            }
        }
    });
    let sent = asker
        .send_message(note(DeliveryMode::Synchronous, "a2", "ping"))
        .await
        .expect("a2 responds");
    assert_eq!(sent.responses.len(), 1);
    let response = &sent.responses[0];
    assert_eq!(response.payload["echo"], "ping");
    assert_eq!(response.sender, "a2");
    assert_eq!(response.message_type, MessageType::TaskResponse);
    assert_eq!(
        response.correlation_id.as_deref(),
        Some(sent.message_id.to_string().as_str())
    );

    let nobody = asker
        .send_message(note(DeliveryMode::Synchronous, "a9", "anyone?"))
        .await
        .expect_err("a9 is offline");
    assert_eq!(nobody.kind(), ErrorKind::Timeout, "{nobody}");
    responder.close();
    serving.abort();
}

fn impatient() -> ProtocolOptions {
    ProtocolOptions {
        ack_timeout: Duration::from_millis(300),
        retry_policy: RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 50,
            max_backoff_ms: 100,
        },
        ..ProtocolOptions::default()
    }
}

#[tokio::test]
async fn unacknowledged_guaranteed_message_is_retried_reported_and_reaches_the_app_once() {
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let sender = agent(&nats, "a1", impatient()).await;
    let explicit = ProtocolOptions {
        ack_mode: AckMode::Explicit,
        ..ProtocolOptions::default()
    };
    let receiver = agent(&nats, "a2", explicit).await;

    let sent = sender
        .send_message(note(DeliveryMode::Guaranteed, "a2", "please-ack"))
        .await
        .expect("stored");
    // The application sees the message, and never acknowledges it.
    assert_eq!(next_marker(&receiver).await, "please-ack");

    let record = sender
        .wait_delivery(&sent.message_id, Duration::from_secs(15))
        .await
        .expect("delivery settles");
    assert_eq!(record.status, DeliveryStatus::Failed("ack_timeout".into()));
    assert_eq!(record.attempts, 3);
    let report = within(10, "the error report", sender.recv())
        .await
        .expect("inbox open");
    assert_eq!(report.envelope.message_type, MessageType::ErrorReport);
    assert_eq!(report.envelope.payload["code"], "ack_timeout");
    assert_eq!(
        report.envelope.correlation_id.as_deref(),
        Some(sent.message_id.to_string().as_str())
    );

    // All three copies were stored before this marker, on the same consumer: the two retries
    // would come first if the duplicate check let them through.
    sender
        .send_message(note(DeliveryMode::Asynchronous, "a2", "after"))
        .await
        .expect("stored");
    assert_eq!(next_marker(&receiver).await, "after");
    let m = receiver.metrics();
    assert_eq!(m.duplicates.get(), 2);
    let s = sender.metrics();
    assert_eq!(s.retries.get(), 2);
    assert_eq!(s.dead_lettered.get(), 1);
    assert_eq!(s.ack_rate.get(), 0.0);
    assert!(
        s.render()
            .contains("agent_message_acks_total{outcome=\"timed_out\"} 1")
    );
}

#[tokio::test]
async fn an_expired_message_is_counted_reported_and_never_handed_over() {
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let sender = agent(&nats, "a1", ProtocolOptions::default()).await;
    let receiver = agent(&nats, "a2", ProtocolOptions::default()).await;
    // A guaranteed message whose 1 s TTL ran out in transit (created 10 s ago).
    let subjects = Subjects::default();
    let mut stale = Envelope::new(
        "a1",
        MessageType::StatusUpdate,
        json!({ "m": "stale" }),
        now_ms() - 10_000,
    )
    .with_recipient("a2")
    .with_ttl(1);
    stale.requires_ack = true;
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    let subject = subjects.message(
        MessageType::StatusUpdate,
        "a2",
        MessagePriority::Normal,
        "a1",
    );
    js.publish(subject, serde_json::to_vec(&stale).expect("json").into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    sender
        .send_message(note(DeliveryMode::Asynchronous, "a2", "fresh"))
        .await
        .expect("stored");

    assert_eq!(next_marker(&receiver).await, "fresh");
    assert_eq!(receiver.metrics().expired.get(), 1);
    let report = within(10, "the expiry report", sender.recv())
        .await
        .expect("open");
    assert_eq!(report.envelope.payload["code"], "expired");
    assert_eq!(report.envelope.sender, "a2");
    assert_eq!(
        report.envelope.correlation_id,
        Some(stale.message_id.to_string())
    );
}

/// Messages whose envelope names a sender other than their subject's sender token (what a
/// secured deployment's permissions prove): stored, core and requests are all dropped, counted
/// and, where the publisher waits, reported to the publisher as `sender_mismatch`.
#[tokio::test]
async fn a_message_whose_sender_is_not_its_subject_token_is_dropped_and_reported() {
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let publisher = agent(&nats, "a1", ProtocolOptions::default()).await;
    let receiver = agent(&nats, "a2", ProtocolOptions::default()).await;
    let subjects = Subjects::default();
    let client = async_nats::connect(nats.url()).await.expect("connects");
    // Published as a1 (the subject's last token), claiming to come from a3.
    let mut forged = Envelope::new(
        "a3",
        MessageType::StatusUpdate,
        json!({ "m": "forged" }),
        now_ms(),
    )
    .with_recipient("a2");
    forged.requires_ack = true;
    let stored = subjects.message(
        MessageType::StatusUpdate,
        "a2",
        MessagePriority::Normal,
        "a1",
    );
    let js = async_nats::jetstream::new(client.clone());
    let bytes: bytes::Bytes = serde_json::to_vec(&forged).expect("json").into();
    js.publish(stored, bytes.clone())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let direct = subjects.direct(MessageType::StatusUpdate, "a2", "a1");
    client
        .publish(direct.clone(), bytes.clone())
        .await
        .expect("published");
    let answer = within(
        10,
        "the refused request's answer",
        client.request(direct, bytes),
    )
    .await
    .expect("answered");
    let answer: Envelope<Value> = serde_json::from_slice(&answer.payload).expect("envelope");
    assert_eq!(answer.message_type, MessageType::ErrorReport);
    assert_eq!(answer.payload["code"], "sender_mismatch");
    publisher
        .send_message(note(DeliveryMode::Asynchronous, "a2", "genuine"))
        .await
        .expect("stored");

    assert_eq!(next_marker(&receiver).await, "genuine");
    let report = within(10, "the mismatch report", publisher.recv())
        .await
        .expect("open");
    assert_eq!(report.envelope.payload["code"], "sender_mismatch");
    assert_eq!(report.envelope.sender, "a2");
    assert_eq!(
        report.envelope.correlation_id,
        Some(forged.message_id.to_string())
    );
    assert_eq!(receiver.metrics().sender_mismatch.get(), 3);
    assert!(
        receiver
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_none(),
        "no forged message reached the application"
    );
}

#[tokio::test]
async fn a_backed_up_inbox_delivers_higher_priority_first_and_holds_no_more_than_its_bound() {
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let sender = agent(&nats, "a1", ProtocolOptions::default()).await;
    let small = ProtocolOptions {
        message_buffer_size: 4,
        ..ProtocolOptions::default()
    };
    let receiver = agent(&nats, "a2", small).await;
    for i in 0..20 {
        let m = note(DeliveryMode::Asynchronous, "a2", &format!("low-{i}"))
            .priority(MessagePriority::Low);
        sender.send_message(m).await.expect("stored");
    }
    within(10, "the inbox fills", async {
        while receiver.inbox_len() < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    for i in 0..3 {
        let m = note(DeliveryMode::Asynchronous, "a2", &format!("critical-{i}"))
            .priority(MessagePriority::Critical);
        sender.send_message(m).await.expect("stored");
    }
    // The critical messages have reached the client (waiting for a slot) before reading starts.
    critical_messages_reach_the_client(&nats, "a2").await;
    assert_eq!(receiver.inbox_len(), 4, "the bound holds");

    let mut order = Vec::new();
    for _ in 0..23 {
        order.push(next_marker(&receiver).await);
    }
    let first_critical = order.iter().position(|m| m.starts_with("critical"));
    let last_critical = order.iter().rposition(|m| m.starts_with("critical"));
    assert!(
        first_critical <= Some(1) && last_critical <= Some(5),
        "critical messages overtake the backlog: {order:?}"
    );
    assert_eq!(
        order.iter().filter(|m| m.starts_with("low")).count(),
        20,
        "nothing dropped: {order:?}"
    );
    let latency = receiver.metrics().latency.with_label_values(&["critical"]);
    assert_eq!(latency.get_sample_count(), 3);
}

/// Waits (at most 10 s) until `agent`'s critical consumer has handed a message to the client.
async fn critical_messages_reach_the_client(nats: &NatsServer, agent: &str) {
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    let subjects = Subjects::default();
    within(10, "critical messages reach the client", async {
        loop {
            let stream = js
                .get_stream(subjects.messages_stream())
                .await
                .expect("stream");
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(&subjects.message_consumer(agent, MessagePriority::Critical))
                .await
                .expect("consumer");
            let info = consumer.info().await.expect("info");
            if info.num_ack_pending >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_broadcast_reaches_every_agent() {
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let sender = agent(&nats, "a1", ProtocolOptions::default()).await;
    let b = agent(&nats, "b", ProtocolOptions::default()).await;
    let c = agent(&nats, "c", ProtocolOptions::default()).await;
    let all = OutgoingMessage::new(MessageType::Broadcast, json!({ "m": "hello-all" }))
        .to_all()
        .delivery(DeliveryMode::Asynchronous);
    sender.send_message(all).await.expect("stored");
    assert_eq!(next_marker(&b).await, "hello-all");
    assert_eq!(next_marker(&c).await, "hello-all");
    b.broadcast_status(json!({ "m": "b-is-busy" }))
        .await
        .expect("stored");
    let update = within(10, "b's status", c.recv()).await.expect("open");
    assert_eq!(update.envelope.message_type, MessageType::StatusUpdate);
    assert_eq!(update.envelope.sender, "b");
    assert_eq!(marker(&update), "b-is-busy");
    // The sender's own consumers see the broadcast too, but it is not handed back to it: the
    // next thing b gets is a1's direct note.
    sender
        .send_message(note(DeliveryMode::Asynchronous, "b", "after-status"))
        .await
        .expect("stored");
    assert_eq!(next_marker(&b).await, "after-status");
    let guaranteed_broadcast = OutgoingMessage::new(MessageType::Broadcast, Value::Null).to_all();
    let refused = sender
        .send_message(guaranteed_broadcast)
        .await
        .expect_err("guaranteed needs known recipients");
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn acknowledgments_get_through_while_the_senders_own_inbox_is_full() {
    common::init_tracing();
    let nats = NatsServer::start().await.expect("nats starts");
    let tiny = ProtocolOptions {
        message_buffer_size: 2,
        ..ProtocolOptions::default()
    };
    let sender = agent(&nats, "a1", tiny).await;
    let receiver = agent(&nats, "a2", ProtocolOptions::default()).await;
    let chatty = agent(&nats, "a3", ProtocolOptions::default()).await;
    // a1 does not read: its inbox fills, and a direct message waits for a slot.
    for i in 0..4 {
        chatty
            .send_message(note(
                DeliveryMode::Asynchronous,
                "a1",
                &format!("noise-{i}"),
            ))
            .await
            .expect("stored");
    }
    chatty
        .send_message(note(DeliveryMode::FireAndForget, "a1", "direct-noise"))
        .await
        .expect("sent");
    within(10, "a1's inbox fills", async {
        while sender.inbox_len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let sent = sender
        .send_message(note(DeliveryMode::Guaranteed, "a2", "needs-ack"))
        .await
        .expect("stored");
    assert_eq!(next_marker(&receiver).await, "needs-ack");
    let record = sender
        .wait_delivery(&sent.message_id, Duration::from_secs(10))
        .await
        .expect("settles");
    assert_eq!(record.status, DeliveryStatus::Delivered);
    assert_eq!(record.attempts, 1, "acknowledged at the first attempt");
    assert_eq!(sender.inbox_len(), 2, "the bound held meanwhile");
}
