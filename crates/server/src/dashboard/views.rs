//! The JSON views the page polls. Each reads through the [`crate::state::Store`] what
//! `switchyard status` shows, plus what only the dashboard needs (leases, departed agents, depth
//! per priority).
//!
//! Two views stand in for reads another part of the service will provide; each is one function
//! here, so swapping is local:
//! * [`timeline`]: today the serving process's own samples (`timeline.rs`); to become
//!   `Store::timeline(last_seconds)` (per-10-s buckets the scripts write).
//! * [`task_story`]: today the task's record and why it waits; its `story` field is to be
//!   filled from `Store::task_story(task_id)` (the task's event history).

use serde_json::{Value, json};
use switchyard_protocol::{AgentStatusView, MAX_STATUS_TASKS, StatusQuery};

use super::{Dashboard, ViewError};
use crate::optimizer::http::message::Request;
use crate::state::{AgentLease, DepartedAgent};

/// Departed agents listed at most.
const DEPARTED_SHOWN: usize = 200;
/// Tasks listed in the queue panel unless the page asks for another number.
const TASKS_SHOWN: u32 = 50;
/// The span of the throughput panel.
const TIMELINE_SECONDS: u64 = 600;
/// A task id longer than this is refused before it reaches Redis.
const MAX_ID_LEN: usize = 256;

/// Fleet, queue, budgets, tenants, counters and timeline in one answer: the page's main poll.
pub(super) async fn overview(d: &Dashboard) -> Result<Value, ViewError> {
    let store = &d.inner.store;
    let query = StatusQuery {
        include_agents: true,
        include_patterns: false,
        include_tasks: 0,
        task_id: None,
    };
    let sync = store.coordination_sync(&query).await?;
    let ids: Vec<String> = sync.agents.iter().map(|a| a.agent_id.clone()).collect();
    let leases = store.agent_leases(&ids).await?;
    let mut agents: Vec<Value> = sync
        .agents
        .iter()
        .zip(leases)
        .map(|(a, lease)| active_agent(a, lease))
        .collect();
    agents.extend(
        store
            .departed_agents(DEPARTED_SHOWN)
            .await?
            .iter()
            .map(departed_agent),
    );
    // The counters are in `sync`; only the clock the page measures leases against is read here.
    let now_ms = store.redis_now_ms().await?;
    Ok(json!({
        "now_ms": now_ms,
        "queue_depth": sync.queue_depth,
        "waiting_depth": sync.waiting_depth,
        "queue_by_priority": store
            .queue_depth_by_priority()
            .await?
            .into_iter()
            .map(|(priority, depth)| json!({"priority": priority, "depth": depth}))
            .collect::<Vec<_>>(),
        "counters": sync.counters,
        "agents": agents,
        "tenants": sync.tenants,
        "budgets": sync.budgets,
        "timeline": timeline(d, TIMELINE_SECONDS).await?,
        "allow_replay": d.inner.allow_replay,
    }))
}

fn active_agent(a: &AgentStatusView, lease: AgentLease) -> Value {
    let mut v = json!(a);
    if let Value::Object(map) = &mut v {
        map.insert("lease_ms".into(), json!(lease.lease_ms));
        map.insert("lease_deadline_ms".into(), json!(lease.deadline_ms));
    }
    v
}

fn departed_agent(d: &DepartedAgent) -> Value {
    let mut v = json!(d.agent);
    if let Value::Object(map) = &mut v {
        map.insert("left_at_ms".into(), json!(d.left_at_ms));
    }
    v
}

/// The first `limit` waiting and queued tasks (at most [`MAX_STATUS_TASKS`]), each with why it
/// waits.
pub(super) async fn tasks(d: &Dashboard, request: &Request) -> Result<Value, ViewError> {
    let limit = match request.param("limit") {
        Some(raw) => raw
            .parse::<u32>()
            .map_err(|_| ViewError::BadRequest("limit must be a whole number".into()))?,
        None => TASKS_SHOWN,
    };
    let query = StatusQuery {
        include_agents: false,
        include_patterns: false,
        include_tasks: limit.min(MAX_STATUS_TASKS),
        task_id: None,
    };
    Ok(json!({ "tasks": d.inner.store.task_waits(&query).await? }))
}

/// The throughput timeline of the last `last_seconds`: per-10-s buckets of submitted, granted,
/// completed and failed, with submit→grant latency percentiles, as the transition scripts record
/// them for the whole deployment (`Store::timeline`).
pub(super) async fn timeline(d: &Dashboard, last_seconds: u64) -> Result<Value, ViewError> {
    let points = d.inner.store.timeline(last_seconds).await?;
    let buckets: Vec<Value> = points.iter().map(timeline_bucket).collect();
    Ok(json!({
        "bucket_ms": switchyard_protocol::TIMELINE_BUCKET_S * 1000,
        "source": "every replica, recorded in Redis",
        "buckets": buckets,
    }))
}

/// One timeline point in the page's shape: counts by name, percentiles when there were grants.
fn timeline_bucket(p: &switchyard_protocol::TimelinePoint) -> Value {
    json!({
        "at_ms": p.start_ms,
        "counts": {
            "submitted": p.submitted,
            "granted": p.granted,
            "completed": p.completed,
            "failed": p.failed,
        },
        "p50_ms": p.p50_ms,
        "p95_ms": p.p95_ms,
        "p99_ms": p.p99_ms,
    })
}

/// One task: its state, why it waits (if it does), its record, and its story (every transition
/// with its time, as the scripts recorded it).
pub(super) async fn task_story(d: &Dashboard, request: &Request) -> Result<Value, ViewError> {
    let id = request
        .param("id")
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN)
        .ok_or_else(|| ViewError::BadRequest("id must be a task id".into()))?;
    let store = &d.inner.store;
    let record = store.task_record(id).await?;
    let query = StatusQuery {
        include_agents: false,
        include_patterns: false,
        include_tasks: 0,
        task_id: Some(id.to_string()),
    };
    let wait = store.task_waits(&query).await?.into_iter().next();
    let Some(record) = record else {
        return Err(ViewError::NotFound(format!(
            "no task {id} (unknown, or finished and past its retention)"
        )));
    };
    Ok(json!({
        "task_id": id,
        "state": record.get("state"),
        "wait": wait,
        "record": record,
        "story": store.task_story(id).await?,
    }))
}
