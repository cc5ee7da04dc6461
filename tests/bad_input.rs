//! Hostile input against a running optimizer: raw bytes published straight into JetStream. Each
//! bad message must be refused with an ERROR_REPORT to its sender carrying a stable reason code,
//! counted in `switchyard_rejected_messages_total`, and terminated (no redelivery loop); and the
//! optimizer must keep serving valid traffic afterwards.
//!
//! The cases are a table (the `cases!` block below): one row per bad message, each run as its own
//! test on its own servers, so every failing row is reported. To add a case, add a row.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use common::{Cluster, hget, hget_i64, within};
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_client::{Agent, Allocation, Coordinator};
use switchyard_protocol::{Envelope, ErrorReport, TaskSubmit, now_ms};
use switchyard_server::state::Keys;
use uuid::Uuid;

const SUBMIT: &str = "coord.task_submit.orch";

/// Every reason code the table expects; the total of their counters must be exactly one per case.
const CODES: [&str; 10] = [
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
];

/// What the error report's correlation_id must be.
#[derive(Clone, Copy, Debug)]
enum Correlation {
    /// None: the bytes could not be read as an envelope.
    Absent,
    /// The offending message's id.
    MessageId,
    /// Not checked (an oversized message is refused before it is read).
    NotChecked,
}

/// What exists before the bad message is sent; it must be untouched afterwards.
#[derive(Clone, Copy, Debug)]
enum Scene {
    /// Only the optimizer.
    Empty,
    /// Agent `a1` (4 cpu) registered.
    AgentA1,
    /// Task `held` (1 cpu) granted to `a1` by `boss`; agent `a2` registered too.
    HeldByA1,
    /// Task `dup` (1 cpu) submitted by `boss` and granted to `a1`.
    DupGranted,
}

/// One bad message and what it must produce.
struct Case {
    /// The subject it is published on.
    subject: &'static str,
    /// Its raw bytes and the message id they carry (a fresh, unused one when they carry none).
    message: fn() -> (Uuid, Vec<u8>),
    /// The reason code of the refusal.
    code: &'static str,
    /// The error report goes to `coord.error_report.<to>`.
    to: &'static str,
    correlation: Correlation,
    scene: Scene,
    /// The task the message tried to submit: it must leave no trace.
    no_trace: Option<&'static str>,
}

/// Defines the table (`cases()`) and one test per row, named after the row.
macro_rules! cases {
    ($($(#[doc = $doc:literal])* $name:ident: $case:expr,)*) => {
        /// Every row of the table, by name.
        fn cases() -> Vec<(&'static str, Case)> {
            vec![$((stringify!($name), $case)),*]
        }
        $(
            $(#[doc = $doc])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_case(stringify!($name)).await;
            }
        )*
    };
}

cases! {
    /// Malformed JSON: nothing can be read, so the report goes by the subject's sender token.
    malformed_json: Case {
        subject: SUBMIT,
        message: || (Uuid::new_v4(), b"{not json".to_vec()),
        code: "malformed_json",
        to: "orch",
        correlation: Correlation::Absent,
        scene: Scene::Empty,
        no_trace: None,
    },
    /// A completion from an agent that never registered.
    unknown_agent: Case {
        subject: "coord.task_complete.ghost",
        message: || complete("ghost", "t-ghost"),
        code: "unknown_agent",
        to: "ghost",
        correlation: Correlation::MessageId,
        scene: Scene::Empty,
        no_trace: None,
    },
    /// A negative resource.
    negative_resource: Case {
        subject: SUBMIT,
        message: || orch_submit("neg", json!({"cpu": -1})),
        code: "negative_resource",
        to: "orch",
        correlation: Correlation::MessageId,
        scene: Scene::Empty,
        no_trace: Some("neg"),
    },
    /// An absurdly large resource.
    absurd_resource: Case {
        subject: SUBMIT,
        message: || orch_submit("huge", json!({"cpu": 1e300})),
        code: "resource_too_large",
        to: "orch",
        correlation: Correlation::MessageId,
        scene: Scene::Empty,
        no_trace: Some("huge"),
    },
    /// A resource kind nobody has.
    unknown_resource_kind: Case {
        subject: SUBMIT,
        message: || orch_submit("gpu-task", json!({"gpu": 1})),
        code: "unknown_resource",
        to: "orch",
        correlation: Correlation::MessageId,
        scene: Scene::Empty,
        no_trace: Some("gpu-task"),
    },
    /// NaN is not JSON.
    nan: Case {
        subject: SUBMIT,
        message: nan_submit,
        code: "malformed_json",
        to: "orch",
        correlation: Correlation::Absent,
        scene: Scene::Empty,
        no_trace: Some("nan-task"),
    },
    /// A registered agent completes a task nobody submitted.
    unknown_task: Case {
        subject: "coord.task_complete.a1",
        message: || complete("a1", "never-submitted"),
        code: "unknown_task",
        to: "a1",
        correlation: Correlation::MessageId,
        scene: Scene::AgentA1,
        no_trace: None,
    },
    /// A task granted to a1 is completed by a2: refused, a1's reservation untouched.
    wrong_agent: Case {
        subject: "coord.task_complete.a2",
        message: || complete("a2", "held"),
        code: "wrong_agent",
        to: "a2",
        correlation: Correlation::MessageId,
        scene: Scene::HeldByA1,
        no_trace: None,
    },
    /// A valid submit padded past the 64 KiB limit.
    oversized: Case {
        subject: SUBMIT,
        message: oversized_submit,
        code: "payload_too_large",
        to: "orch",
        correlation: Correlation::NotChecked,
        scene: Scene::Empty,
        no_trace: Some("big"),
    },
    /// Created ten minutes ago with a five second ttl.
    expired: Case {
        subject: SUBMIT,
        message: expired_submit,
        code: "expired",
        to: "orch",
        correlation: Correlation::MessageId,
        scene: Scene::Empty,
        no_trace: Some("expired-task"),
    },
    /// The same task id from a different message: the first submit still owns the task.
    task_exists: Case {
        subject: "coord.task_submit.boss",
        message: || submit(
            "boss",
            json!({"task_id": "dup", "priority": 9, "required_resources": {"cpu": 3}}),
        ),
        code: "task_exists",
        to: "boss",
        correlation: Correlation::MessageId,
        scene: Scene::DupGranted,
        no_trace: None,
    },
}

/// The table itself: eleven rows (two of them malformed JSON) covering every reason code.
#[test]
fn the_table_covers_every_reason_code() {
    let cases = cases();
    assert_eq!(cases.len(), 11, "eleven bad messages");
    let codes: BTreeSet<&str> = cases.iter().map(|(_, case)| case.code).collect();
    assert_eq!(codes, CODES.into_iter().collect::<BTreeSet<_>>());
    let malformed = cases.iter().filter(|(_, c)| c.code == "malformed_json");
    assert_eq!(malformed.count(), 2);
}

/// One row: set its scene up, send the bad message, check the refusal, check the scene is
/// untouched, and check the optimizer still serves valid traffic.
async fn run_case(name: &str) {
    let (_, case) = cases()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no case {name} in the table"));
    let mut bench = Bench::start().await;
    let granted = bench.set_scene(case.scene).await;
    bench.refused(name, &case).await;
    bench.scene_untouched(case.scene).await;
    bench.still_serves(name, &case, &granted).await;
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

fn submit(sender: &str, task: Value) -> (Uuid, Vec<u8>) {
    let (id, env) = envelope(sender, "TASK_SUBMIT", task);
    (id, bytes(&env))
}

/// A submit from `orch` of `task_id` needing `resources`.
fn orch_submit(task_id: &str, resources: Value) -> (Uuid, Vec<u8>) {
    submit(
        "orch",
        json!({"task_id": task_id, "required_resources": resources}),
    )
}

fn complete(agent: &str, task_id: &str) -> (Uuid, Vec<u8>) {
    let payload = json!({
        "task_id": task_id, "agent_id": agent, "success": true, "execution_time_s": 1.0
    });
    let (id, env) = envelope(agent, "TASK_COMPLETE", payload);
    (id, bytes(&env))
}

fn nan_submit() -> (Uuid, Vec<u8>) {
    let id = Uuid::new_v4();
    let nan = format!(
        r#"{{"protocol_version":1,"message_id":"{id}","sender":"orch","type":"TASK_SUBMIT","created_at_ms":{},"payload":{{"task_id":"nan-task","required_resources":{{"cpu":NaN}}}}}}"#,
        now_ms()
    );
    (id, nan.into_bytes())
}

fn oversized_submit() -> (Uuid, Vec<u8>) {
    let task = json!({"task_id": "big", "required_resources": {"cpu": 1}});
    let (id, mut env) = envelope("orch", "TASK_SUBMIT", task);
    env["padding"] = Value::String("x".repeat(100 * 1024));
    (id, bytes(&env))
}

fn expired_submit() -> (Uuid, Vec<u8>) {
    let task = json!({"task_id": "expired-task", "required_resources": {"cpu": 1}});
    let (id, mut env) = envelope("orch", "TASK_SUBMIT", task);
    env["created_at_ms"] = json!(now_ms() - 600_000);
    env["ttl_seconds"] = json!(5);
    (id, bytes(&env))
}

/// The optimizer under attack, with the raw publishing side, the error-report subscription,
/// a coordinator for valid traffic, and a Redis connection to look at the state.
struct Bench {
    cluster: Cluster,
    js: jetstream::Context,
    reports: async_nats::Subscriber,
    events: jetstream::stream::Stream,
    boss: Coordinator,
    agents: Vec<Agent>,
    redis: redis::aio::MultiplexedConnection,
    keys: Keys,
    /// The message id that owns task `dup` (Scene::DupGranted).
    dup_msg_id: Option<String>,
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
        let boss = cluster.coordinator("boss").await;
        let redis = cluster.redis().await;
        let keys = Keys::new(cluster.config.redis.key_prefix.clone());
        Bench {
            cluster,
            js,
            reports,
            events,
            boss,
            agents: Vec::new(),
            redis,
            keys,
            dup_msg_id: None,
        }
    }

    async fn add_agent(&mut self, id: &str, cpu: f64) {
        let agent = self.cluster.agent(id, "worker", cpu, 4096.0).await;
        self.agents.push(agent);
    }

    /// `boss` submits `task` (cpu) and it must be granted to `agent`.
    async fn granted(&self, task: &str, cpu: f64, agent: &str) {
        let allocation = self
            .boss
            .allocate_task(TaskSubmit::new(task).resource("cpu", cpu))
            .await
            .unwrap_or_else(|e| panic!("{task} submitted: {e}"));
        let want = Allocation::Granted {
            agent_id: agent.into(),
        };
        assert_eq!(allocation, want, "{task}");
    }

    async fn agent_i64(&mut self, agent: &str, field: &str) -> i64 {
        hget_i64(&mut self.redis, &self.keys.agent(agent), field).await
    }

    async fn task_field(&mut self, task: &str, field: &str) -> Option<String> {
        hget(&mut self.redis, &self.keys.task(task), field).await
    }

    /// Sets `scene` up; returns the tasks it had granted.
    async fn set_scene(&mut self, scene: Scene) -> Vec<&'static str> {
        match scene {
            Scene::Empty => Vec::new(),
            Scene::AgentA1 => {
                self.add_agent("a1", 4.0).await;
                Vec::new()
            }
            Scene::HeldByA1 => {
                self.add_agent("a1", 4.0).await;
                self.granted("held", 1.0, "a1").await;
                self.add_agent("a2", 4.0).await;
                assert_eq!(self.agent_i64("a1", "res_cpu").await, 1000);
                vec!["held"]
            }
            Scene::DupGranted => {
                self.add_agent("a1", 4.0).await;
                self.granted("dup", 1.0, "a1").await;
                self.dup_msg_id = self.task_field("dup", "submit_msg_id").await;
                assert!(self.dup_msg_id.is_some(), "dup has a submit message id");
                vec!["dup"]
            }
        }
    }

    /// The refused message changed nothing of what `scene` set up.
    async fn scene_untouched(&mut self, scene: Scene) {
        match scene {
            Scene::Empty | Scene::AgentA1 => {}
            Scene::HeldByA1 => self.held_untouched().await,
            Scene::DupGranted => {
                assert_eq!(
                    self.task_field("dup", "submit_msg_id").await,
                    self.dup_msg_id,
                    "the first submit still owns the task"
                );
                let req_cpu = self.task_field("dup", "req_cpu").await;
                assert_eq!(req_cpu.as_deref(), Some("1000"));
            }
        }
    }

    async fn held_untouched(&mut self) {
        let res_cpu = self.agent_i64("a1", "res_cpu").await;
        assert_eq!(res_cpu, 1000, "a1's reservation untouched");
        assert_eq!(self.agent_i64("a1", "active_tasks").await, 1);
        let state = self.task_field("held", "state").await;
        assert_eq!(state.as_deref(), Some("granted"));
        let agent = self.task_field("held", "agent").await;
        assert_eq!(agent.as_deref(), Some("a1"));
        let status = self.boss.status().await.expect("status");
        let a1 = status.agents.iter().find(|a| a.agent_id == "a1");
        let a1 = a1.expect("a1 listed");
        assert!(a1.reserved.get("cpu").copied().unwrap_or(0.0) >= 1.0);
    }

    /// Publishes arbitrary bytes into the events stream and waits until JetStream stored them.
    async fn publish_raw(&self, subject: &str, payload: Vec<u8>) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            Uuid::new_v4().to_string().as_str(),
        );
        let what = format!("JetStream to store a message on {subject}");
        within(10, &what, async {
            self.js
                .publish_with_headers(subject.to_string(), headers, payload.into())
                .await
                .expect("publish")
                .await
        })
        .await
        .expect("JetStream stored the message");
    }

    fn rejected(&self, code: &str) -> u64 {
        self.cluster.metrics[0]
            .rejected
            .with_label_values(&[code])
            .get()
    }

    /// Sends the bad message of `case` and checks its report, its count, and that the
    /// consumers drained.
    async fn refused(&mut self, name: &str, case: &Case) {
        let before = self.rejected(case.code);
        let (id, payload) = (case.message)();
        let max = self.cluster.config.messages.max_message_bytes;
        assert_eq!(
            payload.len() > max,
            case.code == "payload_too_large",
            "{name}: {} bytes against a limit of {max}",
            payload.len()
        );
        self.publish_raw(case.subject, payload).await;
        let message = within(10, &format!("error report for {name}"), self.reports.next())
            .await
            .expect("subscription open");
        check_report(name, case, id, &message);
        assert_eq!(
            self.rejected(case.code),
            before + 1,
            "{name}: counted once under reason {}",
            case.code
        );
        self.assert_drained(name).await;
    }

    /// A new agent and a task only it can carry are served; what the scene granted is still
    /// granted, the refused submit left no trace, and this was the only refusal.
    async fn still_serves(&mut self, name: &str, case: &Case, granted: &[&str]) {
        self.add_agent("final", 16.0).await;
        self.granted("after", 8.0, "final").await;
        for task in granted.iter().chain(&["after"]) {
            let state = self.task_field(task, "state").await;
            assert_eq!(state.as_deref(), Some("granted"), "{name}: {task}");
        }
        if let Some(task) = case.no_trace {
            let state = self.task_field(task, "state").await;
            assert_eq!(state, None, "{name}: {task} must not exist");
        }
        let status = self.boss.status().await.expect("status");
        let valid = granted.len() as u64 + 1;
        assert_eq!(status.counters.get("submitted"), Some(&valid), "{name}");
        assert_eq!(status.counters.get("granted"), Some(&valid), "{name}");
        assert_eq!(status.queue_depth, 0, "{name}");
        self.assert_drained(&format!("the valid traffic after {name}"))
            .await;
        let total: u64 = CODES.iter().map(|code| self.rejected(code)).sum();
        assert_eq!(total, 1, "{name}: exactly one refusal, no others");
    }

    /// Every event has been acknowledged (or terminated) and none was delivered twice.
    async fn assert_drained(&self, case: &str) {
        let subjects = self.cluster.subjects();
        for lane in [
            subjects.optimizer_consumer(),
            subjects.optimizer_control_consumer(),
        ] {
            let info = self.lane_drained(&lane, case).await;
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

    /// Waits (bounded) until `lane` has nothing pending or unacknowledged.
    async fn lane_drained(&self, lane: &str, case: &str) -> jetstream::consumer::Info {
        within(10, &format!("{lane} drained after {case}"), async {
            loop {
                let info = self
                    .events
                    .consumer_info(lane)
                    .await
                    .expect("consumer info");
                if info.num_ack_pending == 0 && info.num_pending == 0 {
                    return info;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// The report goes to the sender, carries the case's code, names the offending subject and
/// (when the case says so) correlates to the offending message.
fn check_report(name: &str, case: &Case, id: Uuid, message: &async_nats::Message) {
    assert_eq!(
        message.subject.as_str(),
        format!("coord.error_report.{}", case.to),
        "{name}: report goes to the sender"
    );
    let report: Envelope<ErrorReport> =
        serde_json::from_slice(&message.payload).expect("report is an ERROR_REPORT envelope");
    assert_eq!(report.payload.code, case.code, "{name}: {report:?}");
    assert_eq!(
        report.payload.subject.as_deref(),
        Some(case.subject),
        "{name}: report names the offending subject"
    );
    let want = match case.correlation {
        Correlation::Absent => None,
        Correlation::MessageId => Some(id.to_string()),
        Correlation::NotChecked => return,
    };
    assert_eq!(report.correlation_id, want, "{name}: correlation id");
}
