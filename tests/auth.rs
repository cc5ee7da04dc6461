//! A secured deployment, as `switchyard auth init` sets it up: nats-server in operator mode with
//! the generated trust chain, redis-server with the generated ACL file (default user off), an
//! optimizer with its `.creds` and its Redis user, and agents, an orchestrator and an operator
//! each with their own creds. The server itself refuses what an identity may not do (a
//! permissions violation), and what it refuses never reaches the events stream, so no optimizer
//! can apply it.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::secured::Secured;
use common::{OutputWithin, hget, next_grant, wait_for_state, within};
use serde_json::json;
use switchyard_auth::Role;
use switchyard_auth::directory::AuthDir;
use switchyard_client::transport::{NatsSecurity, connect_secured};
use switchyard_client::{Allocation, request_status};
use switchyard_protocol::{StatusQuery, Subjects, TaskSubmit};

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

    // Nobody without the optimizer's Redis login reads the task either.
    let anonymous = redis::Client::open(secured.cluster.servers.redis.url()).expect("url");
    let read: Result<Option<String>, _> = async {
        let mut conn = anonymous.get_multiplexed_async_connection().await?;
        redis::cmd("HGET")
            .arg(&task_key)
            .arg("state")
            .query_async(&mut conn)
            .await
    }
    .await;
    let refused = read.expect_err("the default user is off");
    assert!(refused.to_string().contains("NOAUTH"), "{refused}");
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

    // `switchyard status` with the operator's creds, as docs/security.md has it.
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
    let foreign = AuthDir::init(other.path(), Subjects::default(), "switchyard").expect("init");
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

/// docs/security.md's Python instructions: nats-py with the agent's `.creds` file and its inbox
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

/// `switchyard auth revoke` and a reload: the revoked agent's connection is closed and it cannot
/// connect again; the other agent goes on working; the name minted again is a new identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_cut_off_after_a_reload() {
    let secured = Secured::start().await;
    let revoked = secured.client(Role::Agent, "gone").await;
    let _kept = secured.agent("kept", 1.0).await;
    let stolen = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::copy(secured.auth.creds_path(Role::Agent, "gone"), stolen.path()).expect("copy");
    secured.auth.revoke(Role::Agent, "gone").expect("revoked");
    secured.cluster.servers.nats.reload().expect("reload");
    within(20, "the revoked connection to be closed", async {
        while revoked.connection_state() == async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let old_creds = secured.auth.creds_path(Role::Agent, "gone");
    assert!(!old_creds.exists(), "the creds file is removed");
    let security = NatsSecurity {
        creds_file: Some(stolen.path().to_path_buf()),
        ..NatsSecurity::default()
    };
    let url = secured.cluster.servers.nats.url();
    let attempt = connect_secured(&url, "gone", &security);
    let refused = within(20, "a copy of the revoked creds to be refused", attempt).await;
    assert!(
        refused.is_err(),
        "a copy of the revoked creds still connects"
    );

    // A fresh client with the kept agent's creds still works, and the name minted again too.
    let kept = secured.watched(Role::Agent, "kept").await;
    kept.client
        .publish("coord.heartbeat.kept", b"{}".to_vec().into())
        .await
        .expect("published");
    kept.client.flush().await.expect("flushed");
    let again = secured.agent("gone", 1.0).await;
    assert_eq!(again.agent_id(), "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_cancelled_by_its_submitter_or_an_operator_only() {
    let secured = Secured::start().await;
    let _a = secured.agent("a", 1.0).await;
    let orch = secured.orchestrator("orch").await;
    // Needs more than any agent has: it stays queued.
    let queued = orch
        .allocate_task(TaskSubmit::new("big").resource("cpu", 2.0))
        .await
        .expect("submitted");
    assert_eq!(queued, Allocation::Queued);

    // An orchestrator cancels only as itself, and cannot pose as an operator.
    let mut watched = secured.watched(Role::Orchestrator, "orch").await;
    watched
        .publish_refused("coord.task_cancel.someone-else")
        .await;
    watched
        .publish_refused("coord.task_cancel.operator.orch")
        .await;
    let intruder = secured.orchestrator("intruder").await;
    let refused = intruder.cancel_task("big").await.expect_err("not its task");
    assert_eq!(refused.reason_code(), Some("not_submitter"));

    // The operator may cancel any task, on its own subject.
    let client = secured.client(Role::Operator, "ops").await;
    let ops = switchyard_client::Coordinator::with_client(client, "ops", Subjects::default())
        .await
        .expect("operator client");
    let answer = ops
        .cancel_task_as_operator("big", Some("drain"))
        .await
        .expect("the operator cancels");
    assert_eq!(answer, switchyard_client::Cancellation::Cancelled);
    let mut operator = secured.watched(Role::Operator, "ops").await;
    operator.publish_refused("coord.task_cancel.ops").await;
}
