//! The demo's closing announcement: the orchestrator tells groups of the fleet how the run went,
//! each group in the pattern [`recommend_pattern`] picks for its size and shape, over the
//! inter-agent protocol. It shows every pattern in use and measures its deliveries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use switchyard_client::comm::{CommunicationPattern, WorkflowShape, recommend_pattern};
use switchyard_client::comm::{CommunicationProtocol, OutgoingMessage, ProtocolOptions};
use switchyard_client::error::Error;
use switchyard_protocol::{MessagePriority, MessageType, Subjects, now_ms};

/// One group's announcement, as the demo reports it.
#[derive(Debug, Clone, Serialize)]
pub struct AnnouncementRow {
    pub group: String,
    pub members: usize,
    pub pattern: String,
    pub delivered: usize,
    /// Slowest delivery of the group, creation to hand-over (ms).
    pub max_latency_ms: f64,
}

struct Group {
    name: String,
    members: Vec<String>,
    pattern: CommunicationPattern,
}

/// Groups: the whole fleet, each agent type, the first pair, and a three-stage pipeline (one
/// agent of each of the first three types).
fn groups(agent_types: &BTreeMap<String, String>) -> Vec<Group> {
    let mut by_type: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (agent, kind) in agent_types {
        by_type.entry(kind).or_default().push(agent.clone());
    }
    let all: Vec<String> = agent_types.keys().cloned().collect();
    let mut groups = vec![group("fleet", all.clone(), WorkflowShape::Parallel)];
    for (kind, members) in &by_type {
        groups.push(group(kind, members.clone(), WorkflowShape::Parallel));
    }
    groups.push(group(
        "pair",
        all.iter().take(2).cloned().collect(),
        WorkflowShape::Parallel,
    ));
    let stages: Vec<String> = by_type
        .values()
        .filter_map(|m| m.first().cloned())
        .take(3)
        .collect();
    groups.push(group("pipeline", stages, WorkflowShape::Sequential));
    groups.retain(|g| !g.members.is_empty());
    groups
}

fn group(name: &str, members: Vec<String>, shape: WorkflowShape) -> Group {
    Group {
        name: name.to_string(),
        pattern: recommend_pattern(members.len(), shape),
        members,
    }
}

/// A delivery seen by a fleet endpoint: (group, latency).
type Seen = (String, Duration);

/// Announces `summary` to the fleet's groups and reports what arrived.
pub(crate) async fn announce_run(
    client: async_nats::Client,
    subjects: &Subjects,
    orchestrator: &str,
    agent_types: &BTreeMap<String, String>,
    summary: Value,
) -> Result<Vec<AnnouncementRow>, Error> {
    let options = ProtocolOptions {
        message_buffer_size: 64,
        ack_timeout: Duration::from_secs(2),
        ..ProtocolOptions::default()
    };
    let (seen_tx, mut seen_rx) = mpsc::channel::<Seen>(1024);
    let mut endpoints = Vec::new();
    for agent in agent_types.keys() {
        let endpoint = CommunicationProtocol::connect(
            client.clone(),
            subjects.clone(),
            agent,
            options.clone(),
        )
        .await?;
        let endpoint = Arc::new(endpoint);
        endpoints.push((
            endpoint.clone(),
            tokio::spawn(listen(endpoint, seen_tx.clone())),
        ));
    }
    let sender =
        CommunicationProtocol::connect(client, subjects.clone(), orchestrator, options).await?;
    let groups = groups(agent_types);
    let mut expected = 0;
    let mut sync_seen = Vec::new();
    for g in &groups {
        expected += send_to(&sender, g, &summary, &mut sync_seen).await?;
    }
    let mut seen: HashMap<String, Vec<Duration>> = HashMap::new();
    for (name, latency) in sync_seen {
        seen.entry(name).or_default().push(latency);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut received = 0;
    while received < expected {
        match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
            Ok(Some((name, latency))) => {
                seen.entry(name).or_default().push(latency);
                received += 1;
            }
            _ => break,
        }
    }
    for (endpoint, task) in endpoints {
        endpoint.close();
        task.abort();
    }
    Ok(groups
        .iter()
        .map(|g| row_of(g, seen.get(&g.name)))
        .collect())
}

fn row_of(g: &Group, seen: Option<&Vec<Duration>>) -> AnnouncementRow {
    let seen = seen.map(Vec::as_slice).unwrap_or_default();
    AnnouncementRow {
        group: g.name.clone(),
        members: g.members.len(),
        pattern: g.pattern.as_str().to_string(),
        delivered: seen.len(),
        max_latency_ms: seen
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .fold(0.0, f64::max),
    }
}

/// Sends one group's announcement; returns how many deliveries the fleet endpoints will report
/// (synchronous answers are counted here, from the responses).
async fn send_to(
    sender: &CommunicationProtocol,
    g: &Group,
    summary: &Value,
    sync_seen: &mut Vec<Seen>,
) -> Result<usize, Error> {
    let body = json!({ "group": g.name, "summary": summary, "next": g.members.iter().skip(1).collect::<Vec<_>>() });
    let message = OutgoingMessage::new(MessageType::StatusUpdate, body)
        .priority(MessagePriority::Normal)
        .delivery(g.pattern.delivery_mode())
        .ttl_seconds(60);
    let started = Instant::now();
    match g.pattern {
        CommunicationPattern::Broadcast => {
            // The broadcast group is the whole fleet: every endpoint hears it.
            sender.send_message(message.to_all()).await?;
            Ok(g.members.len())
        }
        CommunicationPattern::Pipeline => {
            // Only the first stage hears from the orchestrator; each stage passes it on.
            let first = g.members.first().cloned().unwrap_or_default();
            sender.send_message(message.to(first)).await?;
            Ok(g.members.len())
        }
        CommunicationPattern::Synchronous => {
            let sent = sender
                .send_message(message.to_many(g.members.clone()))
                .await?;
            for _ in &sent.responses {
                sync_seen.push((g.name.clone(), started.elapsed()));
            }
            Ok(0)
        }
        CommunicationPattern::Asynchronous => {
            sender
                .send_message(message.to_many(g.members.clone()))
                .await?;
            Ok(g.members.len())
        }
    }
}

/// A fleet endpoint: answers synchronous requests, passes pipeline messages to the next stage,
/// and reports each announcement it gets.
async fn listen(endpoint: Arc<CommunicationProtocol>, seen: mpsc::Sender<Seen>) {
    while let Some(message) = endpoint.recv().await {
        let env = &message.envelope;
        let group = env.payload["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if message.reply_subject.is_some() {
            let _ = endpoint
                .respond(&message, MessageType::TaskResponse, json!({ "ok": true }))
                .await;
            continue;
        }
        let latency = Duration::from_millis(now_ms().saturating_sub(env.created_at_ms));
        if group == "pipeline" {
            forward_stage(&endpoint, env).await;
        }
        let _ = seen.send((group, latency)).await;
    }
}

async fn forward_stage(
    endpoint: &CommunicationProtocol,
    env: &switchyard_protocol::Envelope<Value>,
) {
    let next: Vec<String> = env.payload["next"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let Some((head, rest)) = next.split_first() else {
        return;
    };
    let mut body = env.payload.clone();
    body["next"] = json!(rest);
    let message = OutgoingMessage::new(MessageType::StatusUpdate, body)
        .delivery(CommunicationPattern::Pipeline.delivery_mode())
        .ttl_seconds(60)
        .to(head.clone());
    if let Err(e) = endpoint.send_message(message).await {
        tracing::warn!(agent_id = %endpoint.agent_id(), error = %e, "pipeline stage not passed on");
    }
}
