//! Messages between agents in a secured deployment: agents message each other through
//! `CommunicationProtocol` as themselves, and only as themselves. The sender is the subject's last
//! token, which the agent role may set only to its own id; an agent reads its messages through the
//! consumers the optimizer created when it registered, and can neither create a consumer nor pull
//! from or acknowledge on someone else's.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::secured::{Secured, Watched};
use common::within;
use serde_json::json;
use switchyard_auth::Role;
use switchyard_client::comm::{
    CommunicationProtocol, DeliveryStatus, InboxMessage, OutgoingMessage, ProtocolOptions,
};
use switchyard_client::error::ErrorKind;
use switchyard_protocol::{DeliveryMode, Envelope, MessagePriority, MessageType, Subjects, now_ms};

/// Connects `name`'s messaging endpoint with its own credentials (after it registered).
async fn endpoint(secured: &Secured, name: &str) -> CommunicationProtocol {
    let client = secured.client(Role::Agent, name).await;
    within(
        30,
        &format!("{name}'s messaging endpoint to connect"),
        CommunicationProtocol::connect(
            client,
            Subjects::default(),
            name,
            ProtocolOptions::default(),
        ),
    )
    .await
    .expect("connects with its own consumers")
}

fn note(mode: DeliveryMode, to: &str, m: &str) -> OutgoingMessage {
    OutgoingMessage::new(MessageType::StatusUpdate, json!({ "m": m }))
        .to(to)
        .delivery(mode)
}

/// Waits until everything `agent`'s consumer of `priority` delivered was acknowledged to
/// JetStream (the acknowledgments, on `$JS.ACK.…`, got through).
async fn settled(secured: &Secured, agent: &str, priority: MessagePriority) {
    let subjects = Subjects::default();
    let js = async_nats::jetstream::new(secured.client(Role::Optimizer, "optimizer").await);
    let mut consumer = js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            subjects.message_consumer(agent, priority),
            subjects.messages_stream(),
        )
        .await
        .expect("the consumer the optimizer created");
    within(10, &format!("{agent}'s acknowledgments to settle"), async {
        loop {
            let info = consumer.info().await.expect("consumer info");
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence > 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Publishes on `subject`, then on a subject `a` may not use: the first error the server reports
/// must be the second's (errors come in order), so the first was allowed.
async fn publish_allowed(a: &mut Watched, subject: &str) {
    let refused = "coord.heartbeat.not-a";
    for s in [subject, refused] {
        a.client
            .publish(s.to_string(), b"{}".to_vec().into())
            .await
            .expect("handed to the connection");
    }
    a.client.flush().await.expect("flushed");
    let error = within(10, "the refusal after an allowed publish", a.errors.recv())
        .await
        .expect("connection open");
    assert!(error.contains(refused), "{subject}: {error}");
}

async fn next(agent: &CommunicationProtocol, what: &str) -> InboxMessage {
    within(10, what, agent.recv()).await.expect("inbox open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_message_each_other_in_a_secured_deployment() {
    let secured = Secured::start().await;
    let _agents = (
        secured.agent("a", 1.0).await,
        secured.agent("b", 1.0).await,
        secured.agent("c", 1.0).await,
    );
    let a = endpoint(&secured, "a").await;
    let b = endpoint(&secured, "b").await;

    // Asynchronous (stored) and guaranteed (stored, acknowledged on core NATS).
    a.send_message(note(DeliveryMode::Asynchronous, "b", "stored"))
        .await
        .expect("stored");
    let stored = next(&b, "the asynchronous message").await;
    assert_eq!(stored.envelope.sender, "a");
    assert_eq!(stored.envelope.payload["m"], "stored");
    let sent = a
        .send_message(note(DeliveryMode::Guaranteed, "b", "guaranteed"))
        .await
        .expect("stored");
    assert_eq!(
        next(&b, "the guaranteed message").await.envelope.payload["m"],
        "guaranteed"
    );
    let record = a
        .wait_delivery(&sent.message_id, Duration::from_secs(10))
        .await
        .expect("settles");
    assert_eq!(record.status, DeliveryStatus::Delivered, "{record:?}");
    settled(&secured, "b", MessagePriority::Normal).await;

    // Synchronous: b answers on a's reply inbox (one response to a request it received).
    let responder = tokio::spawn(async move {
        let request = next(&b, "the synchronous request").await;
        b.respond(
            &request,
            MessageType::TaskResponse,
            json!({ "echo": "ping" }),
        )
        .await
        .expect("responds");
        b
    });
    let ping = a
        .send_message(note(DeliveryMode::Synchronous, "b", "ping"))
        .await
        .expect("b answers");
    assert_eq!(ping.responses.len(), 1);
    assert_eq!(ping.responses[0].sender, "b");
    assert_eq!(ping.responses[0].payload["echo"], "ping");
    let b = within(10, "the responder", responder)
        .await
        .expect("joined");

    // A broadcast from c reaches both a and b (stored, and fire-and-forget on core NATS).
    let c = endpoint(&secured, "c").await;
    c.broadcast_status(json!({ "m": "stored-broadcast" }))
        .await
        .expect("broadcast");
    let core = OutgoingMessage::new(MessageType::StatusUpdate, json!({ "m": "core-broadcast" }))
        .to_all()
        .delivery(DeliveryMode::FireAndForget);
    c.send_message(core).await.expect("broadcast");
    for (name, agent) in [("a", &a), ("b", &b)] {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let message = next(agent, &format!("c's broadcasts at {name}")).await;
            assert_eq!(message.envelope.sender, "c");
            seen.push(
                message.envelope.payload["m"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        seen.sort();
        assert_eq!(seen, ["core-broadcast", "stored-broadcast"], "{name}");
        assert_eq!(agent.metrics().sender_mismatch.get(), 0);
    }
}

/// What the server refuses agent `a` (a permissions violation each), and what the receiver
/// drops when `a` publishes as itself but writes `b` into the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_messages_only_as_itself_and_reads_only_its_own_messages() {
    let secured = Secured::start().await;
    let _agents = (secured.agent("a", 1.0).await, secured.agent("b", 1.0).await);
    let b = endpoint(&secured, "b").await;
    let mut a = secured.watched(Role::Agent, "a").await;
    for subject in [
        "coord.msg.status_update.b.normal.b",
        "coord.msg.status_update.a.normal.b",
        "coord.msg.broadcast.all.normal.b",
        "coord.direct.status_update.b.b",
        "coord.direct.message_ack.b.b",
        "coord.dead_letter.status_update.b",
        "$JS.API.CONSUMER.CREATE.COORD_MESSAGES",
        "$JS.API.CONSUMER.CREATE.COORD_MESSAGES.msg_a_high",
        "$JS.API.CONSUMER.CREATE.COORD_MESSAGES.msg_a_high.coord.msg.*.b.high.*",
        "$JS.API.CONSUMER.DURABLE.CREATE.COORD_MESSAGES.msg_a_high",
        "$JS.API.CONSUMER.INFO.COORD_MESSAGES.msg_b_high",
        "$JS.API.CONSUMER.MSG.NEXT.COORD_MESSAGES.msg_b_high",
        "$JS.ACK.COORD_MESSAGES.msg_b_high.1.1.1.1700000000000000000.0",
    ] {
        a.publish_refused(subject).await;
    }
    // Allowed, even past the one-reply-per-delivery window of `resp` (a message may wait in the
    // inbox for minutes before the application takes and acknowledges it).
    for subject in [
        "$JS.ACK.COORD_MESSAGES.msg_a_high.1.1.1.1700000000000000000.0",
        "$JS.API.CONSUMER.INFO.COORD_MESSAGES.msg_a_low",
        "coord.dead_letter.status_update.a",
    ] {
        publish_allowed(&mut a, subject).await;
    }
    for subject in [
        "coord.direct.*.b.*",
        "coord.direct.status_update.b.a",
        "coord.direct.>",
        "coord.msg.>",
    ] {
        a.subscribe_refused(subject).await;
    }

    // As itself, `a` may publish; a `sender` of `b` inside is dropped by the receiver, counted,
    // and reported to the one who really published it.
    let mut forged = Envelope::new(
        "b",
        MessageType::StatusUpdate,
        json!({ "m": "forged" }),
        now_ms(),
    )
    .with_recipient("b");
    forged.requires_ack = true;
    let subject =
        Subjects::default().message(MessageType::StatusUpdate, "b", MessagePriority::Normal, "a");
    let js = async_nats::jetstream::new(a.client.clone());
    js.publish(subject, serde_json::to_vec(&forged).expect("json").into())
        .await
        .expect("published as a")
        .await
        .expect("stored");
    within(10, "b to drop the forged message", async {
        while b.metrics().sender_mismatch.get() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(b.recv_timeout(Duration::from_millis(300)).await.is_none());

    // a's own endpoint still works, and the report of its forgery is waiting there.
    let a_endpoint = endpoint(&secured, "a").await;
    let report = next(&a_endpoint, "the mismatch report").await;
    assert_eq!(report.envelope.message_type, MessageType::ErrorReport);
    assert_eq!(report.envelope.payload["code"], "sender_mismatch");
    assert_eq!(report.envelope.sender, "b");
    a_endpoint
        .send_message(note(DeliveryMode::Asynchronous, "b", "genuine"))
        .await
        .expect("stored");
    assert_eq!(next(&b, "a's genuine message").await.envelope.sender, "a");
}

/// An agent that never registered has no consumers, and may not create them: connecting its
/// endpoint fails with an error that says to register first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_agent_is_told_to_register_first() {
    let secured = Secured::start().await;
    let client = secured.client(Role::Agent, "stranger").await;
    let options = ProtocolOptions {
        consumer_wait: Duration::from_secs(1),
        ..ProtocolOptions::default()
    };
    let attempt = CommunicationProtocol::connect(client, Subjects::default(), "stranger", options);
    let error = within(30, "the endpoint to give up", attempt)
        .await
        .err()
        .expect("no consumers without a registration");
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("register"), "{error}");
}
