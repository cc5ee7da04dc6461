//! A secured deployment, as `switchyard auth init` sets it up: nats-server in operator mode with
//! the generated trust chain, an optimizer with its `.creds`, and agents, an orchestrator and an
//! operator each with their own. The server itself refuses what an identity may not do (a
//! permissions violation), and what it refuses never reaches the events stream, so no optimizer
//! can apply it.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use common::{Cluster, OutputWithin, config_for, hget, next_grant, wait_for_state, within};
use serde_json::json;
use switchyard_auth::Role;
use switchyard_auth::creds::identity_of;
use switchyard_auth::directory::AuthDir;
use switchyard_client::transport::{NatsSecurity, connect_secured};
use switchyard_client::{Agent, Allocation, Coordinator, request_status};
use switchyard_harness::{LocalServers, NatsAuth, NatsServer, RedisServer};
use switchyard_protocol::{AgentRegister, StatusQuery, Subjects, TaskSubmit};
use tokio::sync::mpsc;

/// A secured deployment with one optimizer replica, and the directory of its identities.
struct Secured {
    auth: AuthDir,
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl Secured {
    async fn start() -> Secured {
        common::init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = AuthDir::init(dir.path(), Subjects::default()).expect("auth init");
        let optimizer_creds = auth.creds_path(Role::Optimizer, "optimizer");
        let nats = NatsServer::start_secured(NatsAuth {
            config_file: auth.server_conf_path(),
            probe_creds: optimizer_creds.clone(),
        })
        .await
        .expect("secured nats-server starts");
        let redis = RedisServer::start().await.expect("redis starts");
        let servers = LocalServers { nats, redis };
        let mut config = config_for(&servers);
        config.nats.creds_file = optimizer_creds.display().to_string();
        let cluster = Cluster::start_on(servers, config, 1).await;
        Secured {
            auth,
            cluster,
            _dir: dir,
        }
    }

    /// Mints `role` `name` (if not yet) and answers its creds file.
    fn creds(&self, role: Role, name: &str) -> PathBuf {
        let path = self.auth.creds_path(role, name);
        if !path.exists() {
            self.auth.add(role, name).expect("identity added");
        }
        path
    }

    /// Connects as `role` `name` the way every Switchyard client does.
    async fn client(&self, role: Role, name: &str) -> async_nats::Client {
        let security = NatsSecurity {
            creds_file: Some(self.creds(role, name)),
            ..NatsSecurity::default()
        };
        connect_secured(&self.cluster.servers.nats.url(), name, &security)
            .await
            .expect("connects with its credentials")
    }

    /// Connects as `role` `name` and collects the errors the server reports to it.
    async fn watched(&self, role: Role, name: &str) -> Watched {
        let text = std::fs::read_to_string(self.creds(role, name)).expect("creds");
        let prefix = identity_of(&text).expect("identity").inbox_prefix();
        let (tx, errors) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::with_credentials(&text)
            .expect("creds parse")
            .custom_inbox_prefix(prefix)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(self.cluster.servers.nats.url())
            .await
            .expect("connects");
        Watched { client, errors }
    }

    async fn agent(&self, name: &str, cpu: f64) -> Agent {
        let registration = AgentRegister::new(name, "worker").capacity("cpu", cpu);
        let client = self.client(Role::Agent, name).await;
        within(
            30,
            "an agent to register with its own credentials",
            Agent::register(client, Subjects::default(), registration),
        )
        .await
        .expect("registers")
    }

    async fn orchestrator(&self, name: &str) -> Coordinator {
        let client = self.client(Role::Orchestrator, name).await;
        Coordinator::with_client(client, name, Subjects::default())
            .await
            .expect("coordinator")
    }
}

/// A client and the server errors (permissions violations) reported to it.
struct Watched {
    client: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Watched {
    /// Publishes on `subject` and expects the server to refuse it.
    async fn publish_refused(&mut self, subject: &str) {
        self.client
            .publish(subject.to_string(), b"{}".to_vec().into())
            .await
            .expect("handed to the connection");
        self.client.flush().await.expect("flushed");
        self.expect_violation(&format!("Publish to \"{subject}\""))
            .await;
    }

    /// Subscribes to `subject` and expects the server to refuse it.
    async fn subscribe_refused(&mut self, subject: &str) {
        let _sub = self
            .client
            .subscribe(subject.to_string())
            .await
            .expect("handed to the connection");
        self.client.flush().await.expect("flushed");
        self.expect_violation(&format!("Subscription to \"{subject}\""))
            .await;
    }

    /// Waits (at most 10 s) for a permissions violation naming `what`.
    async fn expect_violation(&mut self, what: &str) {
        within(10, &format!("a permissions violation for {what}"), async {
            loop {
                let error = self.errors.recv().await.expect("connection open");
                if error.contains("Permissions Violation") && error.contains(what) {
                    return;
                }
            }
        })
        .await;
    }
}

/// Publishes a completion of `task` as agent `b` would, from whatever client.
fn forged_completion(task: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "protocol_version": 1,
        "message_id": uuid::Uuid::new_v4(),
        "sender": "b",
        "type": "TASK_COMPLETE",
        "created_at_ms": switchyard_protocol::now_ms(),
        "payload": {"task_id": task, "agent_id": "b", "success": true, "duration_s": 1.0},
    }))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_acts_only_as_itself() {
    let secured = Secured::start().await;
    let b = secured.agent("b", 1.0).await;
    let mut b_grants = b.grants().await.expect("b's grants");
    let orch = secured.orchestrator("orch").await;
    let answer = orch
        .allocate_task(TaskSubmit::new("t1").resource("cpu", 1.0))
        .await
        .expect("submitted");
    assert!(matches!(answer, Allocation::Granted { .. }), "{answer:?}");
    let grant = next_grant(10, "b's grant", &mut b_grants).await;
    assert_eq!(grant.payload.task_id, "t1");

    // Agent `a` registers and works as itself...
    let _a = secured.agent("a", 1.0).await;
    let mut a = secured.watched(Role::Agent, "a").await;
    // ...but cannot complete b's task, act as b, read b's grants or inbox, or touch JetStream.
    a.client
        .publish("coord.task_complete.b", forged_completion("t1").into())
        .await
        .expect("handed over");
    a.expect_violation("Publish to \"coord.task_complete.b\"")
        .await;
    for subject in [
        "coord.heartbeat.b",
        "coord.agent_deregister.b",
        "coord.task_submit.a",
        "coord.task_request.b",
        "$JS.API.STREAM.CREATE.STOLEN",
        "$JS.API.STREAM.DELETE.COORD_EVENTS",
        "$JS.API.STREAM.PURGE.COORD_EVENTS",
        "$JS.API.CONSUMER.DELETE.COORD_MESSAGES.msg_b_high",
        "$JS.API.CONSUMER.CREATE.COORD_MESSAGES.msg_b_high",
        "$JS.API.CONSUMER.DELETE.COORD_EVENTS.optimizer",
    ] {
        a.publish_refused(subject).await;
    }
    for subject in [
        "coord.task_request.b",
        "coord.reply.b",
        "_INBOX_agent.b.>",
        "_INBOX_optimizer.optimizer.>",
        "coord.>",
        ">",
    ] {
        a.subscribe_refused(subject).await;
    }

    // What the server refused never reached the events stream: b's task is still b's.
    let nats = secured.client(Role::Optimizer, "optimizer").await;
    let mut events = jetstream::new(nats)
        .get_stream(Subjects::default().events_stream())
        .await
        .expect("the events stream is still there");
    assert!(
        events
            .get_last_raw_message_by_subject("coord.task_complete.b")
            .await
            .is_err(),
        "no completion for b was stored"
    );
    let stored = events.info().await.expect("info").state.last_sequence;
    assert!(stored > 0, "the stream holds the events that were allowed");
    let mut redis = secured.cluster.redis().await;
    let task_key = switchyard_server::state::Keys::new("switchyard").task("t1");
    assert_eq!(
        hget(&mut redis, &task_key, "state").await.as_deref(),
        Some("granted")
    );
    b.complete_grant(&grant.payload, true, 0.1)
        .await
        .expect("b completes its own task");
    wait_for_state(&mut redis, 10, "t1", "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrators_and_operators_cannot_act_as_agents() {
    let secured = Secured::start().await;
    let _a = secured.agent("a", 1.0).await;
    let mut orch = secured.watched(Role::Orchestrator, "orch").await;
    for subject in [
        "coord.agent_register.orch",
        "coord.heartbeat.a",
        "coord.task_complete.a",
        "coord.grant_ack.a",
        "coord.task_submit.someone-else",
        "$JS.API.STREAM.DELETE.COORD_EVENTS",
    ] {
        orch.publish_refused(subject).await;
    }
    orch.subscribe_refused("coord.task_request.a").await;
    // What an orchestrator is for still works.
    let coordinator = secured.orchestrator("orch").await;
    let answer = coordinator
        .allocate_task(TaskSubmit::new("o1").resource("cpu", 1.0))
        .await
        .expect("submitted");
    assert!(matches!(answer, Allocation::Granted { .. }), "{answer:?}");

    // The operator reads status and nothing else.
    let mut operator = secured.watched(Role::Operator, "operator").await;
    let status = request_status(
        &operator.client,
        &Subjects::default(),
        "operator",
        StatusQuery {
            include_agents: true,
            ..StatusQuery::default()
        },
        Duration::from_secs(10),
    )
    .await
    .expect("the operator reads the status");
    assert!(status.agents.iter().any(|agent| agent.agent_id == "a"));
    for subject in [
        "coord.task_submit.operator",
        "coord.agent_register.operator",
        "coord.heartbeat.a",
        "coord.task_request.a",
        "$JS.API.STREAM.DELETE.COORD_EVENTS",
        "$JS.API.CONSUMER.DELETE.COORD_EVENTS.optimizer",
    ] {
        operator.publish_refused(subject).await;
    }
    operator.subscribe_refused("coord.>").await;

    // `switchyard status` with the operator's creds, as the README has it.
    let creds = secured.creds(Role::Operator, "operator");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["status", "--json"])
        .env("NATS_URL", secured.cluster.servers.nats.url())
        .env("NATS_CREDS", &creds)
        .output_within(60, "switchyard status as the operator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert!(
        status["agents"]
            .as_array()
            .is_some_and(|agents| agents.iter().any(|a| a["agent_id"] == "a")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_added_while_running_works_without_a_restart() {
    let secured = Secured::start().await;
    let pid = secured.cluster.servers.nats.pid();
    let orch = secured.orchestrator("orch").await;
    // Minted after the server and the optimizer started: nothing reloads.
    let late = secured.agent("late", 2.0).await;
    let mut grants = late.grants().await.expect("grants");
    let answer = orch
        .allocate_task(TaskSubmit::new("l1").resource("cpu", 2.0))
        .await
        .expect("submitted");
    assert!(matches!(answer, Allocation::Granted { .. }), "{answer:?}");
    let grant = next_grant(10, "the late agent's grant", &mut grants).await;
    late.complete_grant(&grant.payload, true, 0.1)
        .await
        .expect("completes");
    let mut redis = secured.cluster.redis().await;
    wait_for_state(&mut redis, 10, "l1", "completed").await;
    assert_eq!(secured.cluster.servers.nats.pid(), pid, "no restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_refused() {
    let secured = Secured::start().await;
    let url = secured.cluster.servers.nats.url();
    let refused = |security: NatsSecurity, what: &'static str| {
        let url = url.clone();
        async move {
            let attempt = connect_secured(&url, "intruder", &security);
            let error = within(20, what, attempt)
                .await
                .expect_err("the server refuses it");
            error.to_string()
        }
    };
    let none = refused(NatsSecurity::default(), "a connection without credentials").await;
    assert!(none.to_lowercase().contains("authoriz"), "{none}");

    // Credentials from another deployment's trust chain.
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = AuthDir::init(other.path(), Subjects::default()).expect("init");
    let foreign_creds = foreign.add(Role::Agent, "a").expect("add");
    let error = refused(
        NatsSecurity {
            creds_file: Some(foreign_creds.clone()),
            ..NatsSecurity::default()
        },
        "a foreign agent",
    )
    .await;
    assert!(error.to_lowercase().contains("authoriz"), "{error}");

    // Our JWT with someone else's seed: the signature of the server's nonce does not match.
    let ours = std::fs::read_to_string(secured.creds(Role::Agent, "a")).expect("creds");
    let theirs = std::fs::read_to_string(&foreign_creds).expect("creds");
    let seed_of = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("SU"))
            .expect("a seed line")
            .to_string()
    };
    let spliced = ours.replace(&seed_of(&ours), &seed_of(&theirs));
    let spliced_path = other.path().join("spliced.creds");
    std::fs::write(&spliced_path, spliced).expect("write");
    let error = refused(
        NatsSecurity {
            creds_file: Some(spliced_path),
            ..NatsSecurity::default()
        },
        "a stolen JWT",
    )
    .await;
    assert!(error.to_lowercase().contains("authoriz"), "{error}");
}

/// The README's Python instructions: nats-py with the agent's `.creds` file and its inbox
/// prefix registers, takes a grant and completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_agent_works_with_its_creds_file() {
    common::require_python_nats();
    let secured = Secured::start().await;
    let creds = secured
        .creds(Role::Agent, "py-secure")
        .display()
        .to_string();
    let url = secured.cluster.servers.nats.url();
    let args = ["--nats", &url, "--tasks", "1", "--creds", &creds];
    let mut child = common::python::spawn_agent("py-secure", &args);
    let mut redis = secured.cluster.redis().await;
    common::python::registered(&mut child, &mut redis, "py-secure").await;
    let orch = secured.orchestrator("orch").await;
    orch.submit_task(TaskSubmit::new("py-secure-task").resource("cpu", 1.0))
        .await
        .expect("submitted");
    let out = within(60, "the python agent to finish", child.wait_with_output())
        .await
        .expect("agent output");
    let (result, line) = common::python::result_line(&out);
    assert_eq!(result["completed"], json!(["py-secure-task"]), "{line}");
}
