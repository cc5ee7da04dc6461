//! Handoffs and resource requests end to end, with raw JSON envelopes over NATS as any agent
//! would send them (docs/protocol.md, "Handoffs and resource requests"): the optimizer's answers
//! are read from the agents' inboxes in the messages stream and from their error-report subjects,
//! and the effect is checked in Redis.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use common::{Cluster, events_drained, hget, hget_i64, next_grant, within};
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_client::Agent;
use switchyard_protocol::{MessagePriority, MessageType, Subjects, TaskSubmit, now_ms};
use switchyard_server::state::Keys;
use uuid::Uuid;

/// An agent speaking the wire protocol by hand: raw envelopes out, its error reports and its
/// inbox (every priority) in.
struct RawAgent {
    id: String,
    js: jetstream::Context,
    errors: async_nats::Subscriber,
    replies: async_nats::Subscriber,
    inbox: consumer::pull::Stream,
}

impl RawAgent {
    async fn new(cluster: &Cluster, id: &str) -> RawAgent {
        let nats = cluster.nats().await;
        let subjects = cluster.subjects();
        let errors = nats
            .subscribe(subjects.addressed(MessageType::ErrorReport, id))
            .await
            .expect("subscribe error reports");
        let replies = nats
            .subscribe(subjects.addressed(MessageType::CoordinatorReply, id))
            .await
            .expect("subscribe replies");
        let js = jetstream::new(nats);
        let stream = js
            .get_stream(subjects.messages_stream())
            .await
            .expect("messages stream");
        let filter_subjects = [
            MessagePriority::Low,
            MessagePriority::Normal,
            MessagePriority::High,
            MessagePriority::Critical,
        ]
        .into_iter()
        .flat_map(|p| subjects.message_filters(id, p))
        .collect();
        let inbox = stream
            .create_consumer(consumer::pull::Config {
                filter_subjects,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .expect("inbox consumer")
            .messages()
            .await
            .expect("inbox messages");
        RawAgent {
            id: id.to_string(),
            js,
            errors,
            replies,
            inbox,
        }
    }

    /// Publishes an envelope of `type_` on `<prefix>.<token>.<own id>`; returns its message id.
    async fn send(&self, token: &str, type_: &str, payload: Value) -> Uuid {
        let id = Uuid::new_v4();
        let envelope = json!({
            "protocol_version": 1,
            "message_id": id.to_string(),
            "sender": self.id,
            "type": type_,
            "priority": "high",
            "created_at_ms": now_ms(),
            "payload": payload,
        });
        self.publish(token, id, &envelope).await;
        id
    }

    async fn publish(&self, token: &str, msg_id: Uuid, envelope: &Value) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.to_string().as_str());
        let bytes = serde_json::to_vec(envelope).expect("json");
        self.js
            .publish_with_headers(format!("coord.{token}.{}", self.id), headers, bytes.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    /// The next message in this agent's inbox, with its subject.
    async fn next_message(&mut self) -> (String, Value) {
        let message = within(10, "an inbox message", self.inbox.next())
            .await
            .expect("inbox open")
            .expect("inbox message");
        let value = serde_json::from_slice(&message.payload).expect("inbox JSON");
        (message.subject.to_string(), value)
    }

    async fn next_error(&mut self) -> Value {
        let message = within(10, "an error report", self.errors.next())
            .await
            .expect("subscription open");
        serde_json::from_slice(&message.payload).expect("error report JSON")
    }

    async fn next_reply(&mut self) -> Value {
        let message = within(10, "a reply", self.replies.next())
            .await
            .expect("subscription open");
        serde_json::from_slice(&message.payload).expect("reply JSON")
    }
}

/// How many messages the messages stream holds on subjects matching `filter`.
async fn stored(cluster: &Cluster, filter: &str) -> u64 {
    let js = jetstream::new(cluster.nats().await);
    let stream = js
        .get_stream(cluster.subjects().messages_stream())
        .await
        .expect("messages stream");
    let mut info = stream
        .info_with_subjects(filter)
        .await
        .expect("stream info");
    within(10, &format!("the message counts of {filter}"), async {
        let mut total = 0;
        while let Some(Ok((_, n))) = info.next().await {
            total += n as u64;
        }
        total
    })
    .await
}

/// A cluster with `holder` (4 cpu) running task `job` (2 cpu, grant 1), and `receiver` with
/// `receiver_cpu` cpu, both registered through the Rust client.
struct Scene {
    cluster: Cluster,
    keys: Keys,
    _agents: Vec<Agent>,
}

async fn scene(receiver_cpu: f64) -> Scene {
    let cluster = Cluster::start(1).await;
    let holder = cluster.agent("holder", "worker", 4.0, 1024.0).await;
    let mut grants = holder.grants().await.expect("grants");
    cluster
        .coordinator("orch")
        .await
        .submit_task(TaskSubmit::new("job").resource("cpu", 2.0))
        .await
        .expect("submitted");
    let grant = next_grant(10, "the grant to holder", &mut grants).await;
    assert_eq!(grant.payload.grant_seq, 1);
    let receiver = cluster
        .agent("receiver", "worker", receiver_cpu, 1024.0)
        .await;
    let keys = Keys::new(cluster.config.redis.key_prefix.clone());
    Scene {
        cluster,
        keys,
        _agents: vec![holder, receiver],
    }
}

impl Scene {
    async fn res_cpu(&self, agent: &str) -> i64 {
        let mut redis = self.cluster.redis().await;
        hget_i64(&mut redis, &self.keys.agent(agent), "res_cpu").await
    }

    async fn owner(&self) -> Option<String> {
        let mut redis = self.cluster.redis().await;
        hget(&mut redis, &self.keys.task("job"), "agent").await
    }
}

fn initiate(handoff_id: &str, timeout_s: f64) -> Value {
    json!({
        "handoff_id": handoff_id,
        "from_agent": "holder",
        "to_agent": "receiver",
        "task_id": "job",
        "grant_seq": 1,
        "task_state": {"step": 3, "checkpoint": "s3://bucket/job/3"},
        "intermediate_results": [{"chunk": 1, "rows": 120}, {"chunk": 2, "rows": 98}],
        "resource_transfer": {"cpu": 2},
        "reason": "rebalancing",
        "timeout_s": timeout_s,
    })
}

fn acknowledge(handoff_id: &str, accepted: bool) -> Value {
    json!({
        "handoff_id": handoff_id,
        "agent_id": "receiver",
        "accepted": accepted,
        "response_data": {"eta_s": 5},
    })
}

fn complete(agent: &str, grant_seq: u64) -> Value {
    json!({
        "task_id": "job", "agent_id": agent, "success": true, "execution_time_s": 1.0,
        "grant_seq": grant_seq,
    })
}

/// Reads the forwarded initiate from the receiver's inbox and checks it arrived intact.
async fn forwarded(receiver: &mut RawAgent, initiate_id: Uuid) {
    let (subject, env) = receiver.next_message().await;
    assert_eq!(
        subject,
        Subjects::default().message(
            MessageType::HandoffInitiate,
            "receiver",
            MessagePriority::High,
            "holder"
        )
    );
    assert_eq!(env["type"], "HANDOFF_INITIATE");
    assert_eq!(env["sender"], "holder");
    assert_eq!(env["message_id"], initiate_id.to_string());
    assert_eq!(
        env["payload"]["task_state"]["checkpoint"],
        "s3://bucket/job/3"
    );
    assert_eq!(env["payload"]["intermediate_results"][1]["rows"], 98);
}

/// Reads a verdict from an inbox and returns its outcome.
async fn verdict(agent: &mut RawAgent, handoff_id: &str) -> Value {
    let (subject, env) = agent.next_message().await;
    assert!(
        subject.starts_with("coord.msg.handoff_acknowledge."),
        "{subject}"
    );
    assert_eq!(env["type"], "HANDOFF_ACKNOWLEDGE");
    assert_eq!(env["sender"], "optimizer");
    assert_eq!(env["correlation_id"], handoff_id);
    env["payload"]["outcome"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_handoff_moves_the_task_its_reservation_and_its_state() {
    let scene = scene(4.0).await;
    let mut holder = RawAgent::new(&scene.cluster, "holder").await;
    let mut receiver = RawAgent::new(&scene.cluster, "receiver").await;

    let initiate_id = holder
        .send(
            "handoff_initiate",
            "HANDOFF_INITIATE",
            initiate("h-1", 30.0),
        )
        .await;
    forwarded(&mut receiver, initiate_id).await;
    assert_eq!(
        scene.res_cpu("holder").await,
        2000,
        "nothing moves before the answer"
    );
    receiver
        .send(
            "handoff_acknowledge",
            "HANDOFF_ACKNOWLEDGE",
            acknowledge("h-1", true),
        )
        .await;

    for agent in [&mut holder, &mut receiver] {
        let outcome = verdict(agent, "h-1").await;
        assert_eq!(outcome["status"], "accepted");
        assert_eq!(outcome["grant_seq"], 2);
        assert_eq!(outcome["task_id"], "job");
        assert_eq!(
            (outcome["from_agent"].as_str(), outcome["to_agent"].as_str()),
            (Some("holder"), Some("receiver"))
        );
        assert!(outcome["duration_s"].as_f64().is_some_and(|d| d >= 0.0));
    }
    assert_eq!(scene.owner().await.as_deref(), Some("receiver"));
    assert_eq!(scene.res_cpu("holder").await, 0);
    assert_eq!(scene.res_cpu("receiver").await, 2000);

    // The old agent's late completion is refused; the new owner's, with the new grant, is not.
    let late = holder
        .send("task_complete", "TASK_COMPLETE", complete("holder", 1))
        .await;
    let report = holder.next_error().await;
    assert_eq!(report["payload"]["code"], "stale_grant");
    assert_eq!(report["correlation_id"], late.to_string());
    receiver
        .send("task_complete", "TASK_COMPLETE", complete("receiver", 2))
        .await;
    let reply = receiver.next_reply().await;
    assert_eq!(reply["payload"]["status"], "completed");
    assert_eq!(scene.res_cpu("receiver").await, 0);
    let observed = scene.cluster.metrics[0]
        .handoff_duration
        .with_label_values(&["accepted"])
        .get_sample_count();
    assert_eq!(observed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_handoff_leaves_the_task_with_its_agent() {
    let scene = scene(4.0).await;
    let mut holder = RawAgent::new(&scene.cluster, "holder").await;
    let mut receiver = RawAgent::new(&scene.cluster, "receiver").await;

    let initiate_id = holder
        .send(
            "handoff_initiate",
            "HANDOFF_INITIATE",
            initiate("h-2", 30.0),
        )
        .await;
    forwarded(&mut receiver, initiate_id).await;
    receiver
        .send(
            "handoff_acknowledge",
            "HANDOFF_ACKNOWLEDGE",
            acknowledge("h-2", false),
        )
        .await;
    for agent in [&mut holder, &mut receiver] {
        let outcome = verdict(agent, "h-2").await;
        assert_eq!(outcome["status"], "rejected");
        assert!(outcome.get("grant_seq").is_none());
    }
    assert_eq!(scene.owner().await.as_deref(), Some("holder"));
    assert_eq!(scene.res_cpu("holder").await, 2000);
    assert_eq!(scene.res_cpu("receiver").await, 0);
    holder
        .send("task_complete", "TASK_COMPLETE", complete("holder", 1))
        .await;
    assert_eq!(holder.next_reply().await["payload"]["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_answered_after_its_deadline_is_refused_and_the_task_stays() {
    let scene = scene(4.0).await;
    let holder = RawAgent::new(&scene.cluster, "holder").await;
    let mut receiver = RawAgent::new(&scene.cluster, "receiver").await;

    let initiate_id = holder
        .send("handoff_initiate", "HANDOFF_INITIATE", initiate("h-3", 1.0))
        .await;
    forwarded(&mut receiver, initiate_id).await;
    let mut redis = scene.cluster.redis().await;
    let key = scene.keys.handoff("h-3");
    within(10, "the handoff to expire", async {
        loop {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .expect("EXISTS");
            if exists == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let late = receiver
        .send(
            "handoff_acknowledge",
            "HANDOFF_ACKNOWLEDGE",
            acknowledge("h-3", true),
        )
        .await;
    let report = receiver.next_error().await;
    assert_eq!(report["payload"]["code"], "unknown_handoff");
    assert_eq!(report["correlation_id"], late.to_string());
    let outcome = verdict(&mut receiver, "h-3").await;
    assert_eq!(outcome["status"], "refused");
    assert_eq!(outcome["code"], "unknown_handoff");
    assert_eq!(scene.owner().await.as_deref(), Some("holder"));
    assert_eq!(scene.res_cpu("holder").await, 2000);
    assert_eq!(scene.res_cpu("receiver").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_to_an_agent_without_room_is_refused() {
    let scene = scene(1.0).await;
    let mut holder = RawAgent::new(&scene.cluster, "holder").await;
    let _receiver = RawAgent::new(&scene.cluster, "receiver").await;

    let initiate_id = holder
        .send(
            "handoff_initiate",
            "HANDOFF_INITIATE",
            initiate("h-4", 30.0),
        )
        .await;
    let report = holder.next_error().await;
    assert_eq!(report["payload"]["code"], "insufficient_capacity");
    assert_eq!(report["correlation_id"], initiate_id.to_string());
    let outcome = verdict(&mut holder, "h-4").await;
    assert_eq!(outcome["status"], "refused");
    assert_eq!(outcome["code"], "insufficient_capacity");
    events_drained(&scene.cluster.nats().await).await;
    assert_eq!(
        stored(&scene.cluster, "coord.msg.*.receiver.*.*").await,
        0,
        "nothing was forwarded"
    );
    assert_eq!(scene.owner().await.as_deref(), Some("holder"));
    assert_eq!(scene.res_cpu("holder").await, 2000);
    assert_eq!(scene.res_cpu("receiver").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_requests_are_granted_from_free_capacity_or_refused() {
    let scene = scene(4.0).await;
    let mut holder = RawAgent::new(&scene.cluster, "holder").await;
    let request = |cpu: f64| {
        json!({
            "agent_id": "holder", "task_id": "job", "grant_seq": 1,
            "additional_resources": {"cpu": cpu},
        })
    };

    let first = holder
        .send("resource_request", "RESOURCE_REQUEST", request(1.0))
        .await;
    let (subject, grant) = holder.next_message().await;
    assert_eq!(subject, "coord.msg.resource_grant.holder.high.optimizer");
    assert_eq!(grant["type"], "RESOURCE_GRANT");
    assert_eq!(grant["correlation_id"], first.to_string());
    assert_eq!(grant["payload"]["granted"], true);
    assert_eq!(grant["payload"]["resources"]["cpu"], 3.0);
    assert_eq!(scene.res_cpu("holder").await, 3000);

    // The same request resent later under a new Nats-Msg-Id (past JetStream's dedupe): the
    // optimizer recognises its message_id and does not grow the reservation again.
    let resend = json!({
        "protocol_version": 1, "message_id": first.to_string(), "sender": "holder",
        "type": "RESOURCE_REQUEST", "priority": "high", "created_at_ms": now_ms(),
        "payload": request(1.0),
    });
    holder
        .publish("resource_request", Uuid::new_v4(), &resend)
        .await;

    let refused = holder
        .send("resource_request", "RESOURCE_REQUEST", request(2.0))
        .await;
    let report = holder.next_error().await;
    assert_eq!(report["payload"]["code"], "insufficient_capacity");
    assert_eq!(report["correlation_id"], refused.to_string());
    let (_, answer) = holder.next_message().await;
    assert_eq!(answer["correlation_id"], refused.to_string());
    assert_eq!(answer["payload"]["granted"], false);
    assert_eq!(answer["payload"]["code"], "insufficient_capacity");
    assert_eq!(answer["payload"]["resources"]["cpu"], 3.0);
    events_drained(&scene.cluster.nats().await).await;
    assert_eq!(scene.res_cpu("holder").await, 3000, "granted once");
    assert_eq!(
        stored(&scene.cluster, "coord.msg.resource_grant.holder.*.*").await,
        2,
        "the resend's answer was a JetStream duplicate"
    );

    // Completion releases the grown reservation whole.
    holder
        .send("task_complete", "TASK_COMPLETE", complete("holder", 1))
        .await;
    assert_eq!(holder.next_reply().await["payload"]["status"], "completed");
    assert_eq!(scene.res_cpu("holder").await, 0);
}
