//! Handoffs and resource requests through the Rust `CommunicationProtocol`, against a real
//! optimizer, nats-server and redis-server.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, next_grant, within};
use serde_json::json;
use switchyard_client::comm::{CommunicationProtocol, HandoffRequest, ProtocolOptions};
use switchyard_client::error::ErrorKind;
use switchyard_client::{Agent, Allocation};
use switchyard_protocol::{
    HandoffInitiate, HandoffStatus, MessageType, StatusQuery, TaskGrant, TaskSubmit,
};

async fn endpoint(cluster: &Cluster, id: &str) -> CommunicationProtocol {
    let options = ProtocolOptions {
        handoff_grace: Duration::from_millis(500),
        ..ProtocolOptions::default()
    };
    CommunicationProtocol::connect(cluster.nats().await, cluster.subjects(), id, options)
        .await
        .expect("protocol connects")
}

/// `holder` (cpu 4) holds task `t1` (cpu 2); `taker` registers afterwards with `taker_cpu`.
async fn held_task(cluster: &Cluster, taker_cpu: f64) -> (Agent, Agent, TaskGrant) {
    let holder = cluster.agent("holder", "worker", 4.0, 4096.0).await;
    let mut grants = holder.grants().await.expect("grants");
    let orch = cluster.coordinator("orch").await;
    let task = TaskSubmit::new("t1").resource("cpu", 2.0);
    let allocation = orch.allocate_task(task).await.expect("allocated");
    assert_eq!(
        allocation,
        Allocation::Granted {
            agent_id: "holder".into()
        }
    );
    let grant = next_grant(10, "the grant", &mut grants).await;
    let taker = cluster.agent("taker", "worker", taker_cpu, 4096.0).await;
    (holder, taker, grant.payload)
}

async fn reserved_cpu(from: &CommunicationProtocol, agent: &str) -> f64 {
    let sync = from
        .request_sync(StatusQuery::default())
        .await
        .expect("snapshot");
    sync.agents
        .iter()
        .find(|a| a.agent_id == agent)
        .and_then(|a| a.reserved.get("cpu").copied())
        .unwrap_or(0.0)
}

fn request(grant: &TaskGrant) -> HandoffRequest {
    HandoffRequest {
        grant_seq: Some(grant.grant_seq),
        task_state: json!({ "progress": 0.5, "checkpoint": "phase_2" }),
        intermediate_results: json!({ "processed_records": 1000 }),
        reason: "load_balancing".into(),
        ..HandoffRequest::new("taker", &grant.task_id)
    }
}

#[tokio::test]
async fn an_accepted_handoff_moves_ownership_reservation_and_state() {
    let cluster = Cluster::start(1).await;
    let (holder, taker, grant) = held_task(&cluster, 4.0).await;
    let from = endpoint(&cluster, "holder").await;
    let to = endpoint(&cluster, "taker").await;

    let handoff_id = from.initiate_handoff(request(&grant)).await.expect("sent");
    let offer = within(10, "the offer", to.recv()).await.expect("open");
    assert_eq!(offer.envelope.message_type, MessageType::HandoffInitiate);
    let offer: HandoffInitiate = serde_json::from_value(offer.envelope.payload).expect("payload");
    assert_eq!(offer.handoff_id, handoff_id);
    assert_eq!(offer.task_state["checkpoint"], "phase_2");
    assert_eq!(offer.intermediate_results["processed_records"], 1000);

    let verdict = to
        .acknowledge_handoff(&handoff_id, true, json!({ "estimated_completion": 120 }))
        .await
        .expect("verdict");
    assert_eq!(verdict.status, HandoffStatus::Accepted);
    assert_eq!(verdict.grant_seq, Some(grant.grant_seq + 1));
    let seen_by_holder = from.handoff_outcome(&handoff_id).await.expect("outcome");
    assert!(seen_by_holder.accepted());

    assert_eq!(reserved_cpu(&from, "holder").await, 0.0);
    assert_eq!(reserved_cpu(&from, "taker").await, 2.0);
    let late = holder
        .complete_task_confirmed("t1", true, 1.0)
        .await
        .expect_err("the old holder no longer owns t1");
    assert_eq!(late.kind(), ErrorKind::Rejected);
    taker
        .complete_task_confirmed("t1", true, 1.0)
        .await
        .expect("the new owner completes it");
    assert_eq!(reserved_cpu(&from, "taker").await, 0.0);
    let histogram = from.metrics().handoff.with_label_values(&["accepted"]);
    assert_eq!(histogram.get_sample_count(), 1);
}

#[tokio::test]
async fn a_rejected_handoff_leaves_the_task_where_it_was() {
    let cluster = Cluster::start(1).await;
    let (_holder, _taker, grant) = held_task(&cluster, 4.0).await;
    let from = endpoint(&cluster, "holder").await;
    let to = endpoint(&cluster, "taker").await;
    let handoff_id = from.initiate_handoff(request(&grant)).await.expect("sent");
    within(10, "the offer", to.recv()).await.expect("open");
    let verdict = to
        .acknowledge_handoff(&handoff_id, false, json!({ "why": "busy" }))
        .await
        .expect("verdict");
    assert_eq!(verdict.status, HandoffStatus::Rejected);
    let outcome = from.handoff_outcome(&handoff_id).await.expect("outcome");
    assert_eq!(outcome.status, HandoffStatus::Rejected);
    assert_eq!(reserved_cpu(&from, "holder").await, 2.0);
    assert_eq!(reserved_cpu(&from, "taker").await, 0.0);
}

#[tokio::test]
async fn an_unanswered_handoff_times_out_and_a_late_acceptance_is_refused() {
    let cluster = Cluster::start(1).await;
    let (_holder, _taker, grant) = held_task(&cluster, 4.0).await;
    let from = endpoint(&cluster, "holder").await;
    let to = endpoint(&cluster, "taker").await;
    let quick = HandoffRequest {
        timeout: Duration::from_secs(1),
        ..request(&grant)
    };
    let handoff_id = from.initiate_handoff(quick).await.expect("sent");
    within(10, "the offer", to.recv()).await.expect("open");
    let timed_out = from
        .handoff_outcome(&handoff_id)
        .await
        .expect_err("nobody answered");
    assert_eq!(timed_out.kind(), ErrorKind::Timeout);
    let late = to
        .acknowledge_handoff(&handoff_id, true, json!({}))
        .await
        .expect("an answer");
    assert_eq!(late.status, HandoffStatus::Refused);
    assert_eq!(late.code.as_deref(), Some("unknown_handoff"), "{late:?}");
    assert_eq!(reserved_cpu(&from, "holder").await, 2.0);
    assert_eq!(reserved_cpu(&from, "taker").await, 0.0);
}

#[tokio::test]
async fn a_handoff_to_an_agent_without_capacity_is_refused() {
    let cluster = Cluster::start(1).await;
    let (_holder, _taker, grant) = held_task(&cluster, 1.0).await;
    let from = endpoint(&cluster, "holder").await;
    let handoff_id = from.initiate_handoff(request(&grant)).await.expect("sent");
    let outcome = from.handoff_outcome(&handoff_id).await.expect("verdict");
    assert_eq!(outcome.status, HandoffStatus::Refused);
    assert_eq!(outcome.code.as_deref(), Some("insufficient_capacity"));
    assert_eq!(reserved_cpu(&from, "holder").await, 2.0);
}

#[tokio::test]
async fn resource_requests_are_granted_from_free_capacity_or_refused() {
    let cluster = Cluster::start(1).await;
    let (holder, _taker, grant) = held_task(&cluster, 4.0).await;
    let from = endpoint(&cluster, "holder").await;
    let more = BTreeMap::from([("cpu".to_string(), 1.0)]);
    let granted = from
        .request_resources("t1", Some(grant.grant_seq), more)
        .await
        .expect("answer");
    assert!(granted.granted, "{granted:?}");
    assert_eq!(granted.resources.get("cpu"), Some(&3.0));
    assert_eq!(reserved_cpu(&from, "holder").await, 3.0);

    let too_much = BTreeMap::from([("cpu".to_string(), 2.0)]);
    let refused = from
        .request_resources("t1", Some(grant.grant_seq), too_much)
        .await
        .expect("answer");
    assert!(!refused.granted);
    assert_eq!(refused.code.as_deref(), Some("insufficient_capacity"));
    assert_eq!(reserved_cpu(&from, "holder").await, 3.0);

    holder
        .complete_task_confirmed("t1", true, 1.0)
        .await
        .expect("completed");
    assert_eq!(
        reserved_cpu(&from, "holder").await,
        0.0,
        "the grown reservation is released"
    );
}
