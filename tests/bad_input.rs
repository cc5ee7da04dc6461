//! Hostile input against a running optimizer: raw bytes published straight into JetStream. Each
//! bad message must be refused with an ERROR_REPORT to its sender carrying a stable reason code,
//! counted in `switchyard_rejected_messages_total`, and terminated (no redelivery loop); and the
//! optimizer must keep serving valid traffic afterwards.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::{Cluster, hget, hget_i64, within};
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_client::Allocation;
use switchyard_protocol::{Envelope, ErrorReport, TaskSubmit, now_ms};
use switchyard_server::state::Keys;
use uuid::Uuid;

/// The optimizer under attack, with the raw publishing side and the error-report subscription.
struct Bench {
    cluster: Cluster,
    js: jetstream::Context,
    reports: async_nats::Subscriber,
    events: jetstream::stream::Stream,
}

/// What one bad message must produce.
struct Expect<'a> {
    /// The error report goes to `coord.error_report.<to>`.
    to: &'a str,
    code: &'a str,
    /// `Some(id)`: the report's correlation_id is the offending message's id. `None`: not checked.
    correlation: Option<Option<Uuid>>,
}

/// A JSON envelope of `message_type` from `sender`, created now; returns its message id too.
fn envelope(sender: &str, message_type: &str, payload: Value) -> (Uuid, Value) {
    let id = Uuid::new_v4();
    let env = json!({
        "protocol_version": 1,
        "message_id": id.to_string(),
        "sender": sender,
        "type": message_type,
        "created_at_ms": now_ms(),
        "payload": payload,
    });
    (id, env)
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializes")
}

impl Bench {
    async fn start() -> Bench {
        let cluster = Cluster::start(1).await;
        let client = cluster.nats().await;
        let reports = client
            .subscribe("coord.error_report.>")
            .await
            .expect("subscribe to error reports");
        client.flush().await.expect("subscription registered");
        let js = jetstream::new(client);
        let events = js
            .get_stream(cluster.subjects().events_stream())
            .await
            .expect("events stream exists");
        Bench {
            cluster,
            js,
            reports,
            events,
        }
    }

    /// Publishes arbitrary bytes into the events stream and waits until JetStream stored them.
    async fn publish_raw(&self, subject: &str, payload: Vec<u8>) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            Uuid::new_v4().to_string().as_str(),
        );
        self.js
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("JetStream stored the message");
    }

    fn rejected(&self, code: &str) -> u64 {
        self.cluster.metrics[0]
            .rejected
            .with_label_values(&[code])
            .get()
    }

    /// Sends one bad message and checks its report, its count, and that the consumer drained.
    async fn refused(&mut self, case: &str, subject: &str, payload: Vec<u8>, expect: Expect<'_>) {
        let before = self.rejected(expect.code);
        self.publish_raw(subject, payload).await;
        let message = within(10, &format!("error report for {case}"), self.reports.next())
            .await
            .expect("subscription open");
        assert_eq!(
            message.subject.as_str(),
            format!("coord.error_report.{}", expect.to),
            "{case}: report goes to the sender"
        );
        let report: Envelope<ErrorReport> =
            serde_json::from_slice(&message.payload).expect("report is an ERROR_REPORT envelope");
        assert_eq!(report.payload.code, expect.code, "{case}: {report:?}");
        assert_eq!(
            report.payload.subject.as_deref(),
            Some(subject),
            "{case}: report names the offending subject"
        );
        if let Some(correlation) = expect.correlation {
            assert_eq!(
                report.correlation_id,
                correlation.map(|id| id.to_string()),
                "{case}: correlation id"
            );
        }
        assert_eq!(
            self.rejected(expect.code),
            before + 1,
            "{case}: counted once under reason {}",
            expect.code
        );
        self.assert_drained(case).await;
    }

    /// Every event has been acknowledged (or terminated) and none was delivered twice.
    async fn assert_drained(&self, case: &str) {
        let subjects = self.cluster.subjects();
        for lane in [
            subjects.optimizer_consumer(),
            subjects.optimizer_control_consumer(),
        ] {
            let info = within(10, &format!("{lane} drained after {case}"), async {
                loop {
                    let info = self
                        .events
                        .consumer_info(lane.as_str())
                        .await
                        .expect("consumer info");
                    if info.num_ack_pending == 0 && info.num_pending == 0 {
                        return info;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert_eq!(info.num_redelivered, 0, "{case}: redelivered {info:?}");
        }
        assert_eq!(
            self.cluster.metrics[0].redeliveries.get(),
            0,
            "{case}: an event was delivered more than once"
        );
        let stream = self.events.get_info().await.expect("stream info");
        assert_eq!(
            stream.state.messages, 0,
            "{case}: work queue empty, nothing left behind"
        );
    }
}

fn submit(sender: &str, task: Value) -> (Uuid, Value) {
    envelope(sender, "TASK_SUBMIT", task)
}

fn complete(agent: &str, task_id: &str) -> (Uuid, Value) {
    envelope(
        agent,
        "TASK_COMPLETE",
        json!({"task_id": task_id, "agent_id": agent, "success": true, "execution_time_s": 1.0}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_reported_and_not_redelivered() {
    let mut bench = Bench::start().await;
    let submit_subject = "coord.task_submit.orch";

    // Malformed JSON: nothing can be read, so the report goes by the subject's sender token.
    bench
        .refused(
            "malformed json",
            submit_subject,
            b"{not json".to_vec(),
            Expect {
                to: "orch",
                code: "malformed_json",
                correlation: Some(None),
            },
        )
        .await;

    // A completion from an agent that never registered.
    let (id, env) = complete("ghost", "t-ghost");
    bench
        .refused(
            "unknown agent",
            "coord.task_complete.ghost",
            bytes(&env),
            Expect {
                to: "ghost",
                code: "unknown_agent",
                correlation: Some(Some(id)),
            },
        )
        .await;

    // Negative, absurdly large, and unknown resources.
    let (id, env) = submit(
        "orch",
        json!({"task_id": "neg", "required_resources": {"cpu": -1}}),
    );
    bench
        .refused(
            "negative resource",
            submit_subject,
            bytes(&env),
            Expect {
                to: "orch",
                code: "negative_resource",
                correlation: Some(Some(id)),
            },
        )
        .await;
    let (id, env) = submit(
        "orch",
        json!({"task_id": "huge", "required_resources": {"cpu": 1e300}}),
    );
    bench
        .refused(
            "absurd resource",
            submit_subject,
            bytes(&env),
            Expect {
                to: "orch",
                code: "resource_too_large",
                correlation: Some(Some(id)),
            },
        )
        .await;
    let (id, env) = submit(
        "orch",
        json!({"task_id": "gpu-task", "required_resources": {"gpu": 1}}),
    );
    bench
        .refused(
            "unknown resource kind",
            submit_subject,
            bytes(&env),
            Expect {
                to: "orch",
                code: "unknown_resource",
                correlation: Some(Some(id)),
            },
        )
        .await;

    // NaN is not JSON.
    let nan = format!(
        r#"{{"protocol_version":1,"message_id":"{}","sender":"orch","type":"TASK_SUBMIT","created_at_ms":{},"payload":{{"task_id":"nan-task","required_resources":{{"cpu":NaN}}}}}}"#,
        Uuid::new_v4(),
        now_ms()
    );
    bench
        .refused(
            "NaN",
            submit_subject,
            nan.into_bytes(),
            Expect {
                to: "orch",
                code: "malformed_json",
                correlation: Some(None),
            },
        )
        .await;

    // A registered agent completes a task nobody submitted.
    let a1 = bench.cluster.agent("a1", "worker", 4.0, 4096.0).await;
    let (id, env) = complete("a1", "never-submitted");
    bench
        .refused(
            "unknown task",
            "coord.task_complete.a1",
            bytes(&env),
            Expect {
                to: "a1",
                code: "unknown_task",
                correlation: Some(Some(id)),
            },
        )
        .await;

    // A task granted to a1 is completed by a2: refused, a1's reservation untouched.
    let boss = bench.cluster.coordinator("boss").await;
    let held = boss
        .allocate_task(TaskSubmit::new("held").resource("cpu", 1.0))
        .await
        .expect("held submitted");
    assert_eq!(
        held,
        Allocation::Granted {
            agent_id: "a1".into()
        }
    );
    let _a2 = bench.cluster.agent("a2", "worker", 4.0, 4096.0).await;
    let mut redis = bench.cluster.redis().await;
    let keys = Keys::new(bench.cluster.config.redis.key_prefix.clone());
    assert_eq!(
        hget_i64(&mut redis, &keys.agent("a1"), "res_cpu").await,
        1000
    );
    let (id, env) = complete("a2", "held");
    bench
        .refused(
            "wrong agent",
            "coord.task_complete.a2",
            bytes(&env),
            Expect {
                to: "a2",
                code: "wrong_agent",
                correlation: Some(Some(id)),
            },
        )
        .await;
    assert_eq!(
        hget_i64(&mut redis, &keys.agent("a1"), "res_cpu").await,
        1000,
        "a1's reservation untouched"
    );
    assert_eq!(
        hget_i64(&mut redis, &keys.agent("a1"), "active_tasks").await,
        1
    );
    assert_eq!(
        hget(&mut redis, &keys.task("held"), "state")
            .await
            .as_deref(),
        Some("granted")
    );
    assert_eq!(
        hget(&mut redis, &keys.task("held"), "agent")
            .await
            .as_deref(),
        Some("a1")
    );

    // A valid submit padded past the 64 KiB limit.
    let (_, mut env) = submit(
        "orch",
        json!({"task_id": "big", "required_resources": {"cpu": 1}}),
    );
    env["padding"] = Value::String("x".repeat(100 * 1024));
    let padded = bytes(&env);
    assert!(padded.len() > bench.cluster.config.messages.max_message_bytes);
    bench
        .refused(
            "oversized",
            submit_subject,
            padded,
            Expect {
                to: "orch",
                code: "payload_too_large",
                correlation: None,
            },
        )
        .await;

    // Created ten minutes ago with a five second ttl.
    let (id, mut env) = submit(
        "orch",
        json!({"task_id": "expired-task", "required_resources": {"cpu": 1}}),
    );
    env["created_at_ms"] = json!(now_ms() - 600_000);
    env["ttl_seconds"] = json!(5);
    bench
        .refused(
            "expired",
            submit_subject,
            bytes(&env),
            Expect {
                to: "orch",
                code: "expired",
                correlation: Some(Some(id)),
            },
        )
        .await;

    // The same task id from a different message.
    let first = boss
        .allocate_task(TaskSubmit::new("dup").resource("cpu", 1.0))
        .await
        .expect("dup submitted");
    assert!(
        matches!(first, Allocation::Granted { .. }),
        "dup granted: {first:?}"
    );
    let first_msg_id = hget(&mut redis, &keys.task("dup"), "submit_msg_id").await;
    let (id, env) = submit(
        "boss",
        json!({"task_id": "dup", "priority": 9, "required_resources": {"cpu": 3}}),
    );
    bench
        .refused(
            "task exists",
            "coord.task_submit.boss",
            bytes(&env),
            Expect {
                to: "boss",
                code: "task_exists",
                correlation: Some(Some(id)),
            },
        )
        .await;
    assert_eq!(
        hget(&mut redis, &keys.task("dup"), "submit_msg_id").await,
        first_msg_id,
        "the first submit still owns the task"
    );
    assert_eq!(
        hget(&mut redis, &keys.task("dup"), "req_cpu")
            .await
            .as_deref(),
        Some("1000")
    );

    // The optimizer is still up and nothing was lost: a new agent and a task only it can carry.
    let _fin = bench.cluster.agent("final", "worker", 16.0, 4096.0).await;
    let after = boss
        .allocate_task(TaskSubmit::new("after").resource("cpu", 8.0))
        .await
        .expect("after submitted");
    assert_eq!(
        after,
        Allocation::Granted {
            agent_id: "final".into()
        }
    );
    for task in ["held", "dup", "after"] {
        assert_eq!(
            hget(&mut redis, &keys.task(task), "state").await.as_deref(),
            Some("granted"),
            "{task}"
        );
    }
    // Refused submits left no trace.
    for task in ["neg", "huge", "gpu-task", "nan-task", "big", "expired-task"] {
        assert_eq!(
            hget(&mut redis, &keys.task(task), "state").await,
            None,
            "{task} must not exist"
        );
    }
    let status = boss.status().await.expect("status");
    assert_eq!(status.counters.get("submitted"), Some(&3));
    assert_eq!(status.counters.get("granted"), Some(&3));
    assert_eq!(status.queue_depth, 0);
    let a1_status = status
        .agents
        .iter()
        .find(|a| a.agent_id == "a1")
        .expect("a1 listed");
    assert!(a1_status.reserved.get("cpu").copied().unwrap_or(0.0) >= 1.0);
    bench.assert_drained("the valid traffic").await;

    // Exactly the eleven refusals, no others.
    let total: u64 = [
        "malformed_json",
        "unknown_agent",
        "negative_resource",
        "resource_too_large",
        "unknown_resource",
        "unknown_task",
        "wrong_agent",
        "payload_too_large",
        "expired",
        "task_exists",
    ]
    .iter()
    .map(|code| bench.rejected(code))
    .sum();
    assert_eq!(total, 11);
    assert_eq!(bench.rejected("malformed_json"), 2);
    drop(a1);
}
