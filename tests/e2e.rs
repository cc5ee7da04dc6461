//! End to end over a real nats-server (JetStream) and redis-server: agents register, tasks are
//! granted on the agents' own subjects, completions free resources, and the queue drains
//! highest priority first.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::HashMap;

use common::{Cluster, hget, hget_i64, next_grant, within};
use switchyard_client::{Agent, Allocation, Coordinator, GrantStream};
use switchyard_protocol::TaskSubmit;
use switchyard_server::state::Keys;

/// Priorities of the seven tasks that queue behind the full fleet.
const QUEUED_PRIORITIES: [u8; 7] = [3, 9, 1, 7, 9, 5, 2];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_ten_tasks_priority_order_and_release() {
    let cluster = Cluster::start(1).await;
    let agents = [
        cluster.agent("alpha", "backend", 2.0, 4096.0).await,
        cluster.agent("beta", "backend", 2.0, 4096.0).await,
        cluster.agent("gamma", "frontend", 2.0, 4096.0).await,
    ];
    let mut streams = Vec::new();
    for agent in &agents {
        streams.push(agent.grants().await.expect("grant stream"));
    }
    let orch = cluster.coordinator("orch").await;
    let holders = three_tasks_fill_the_fleet(&orch).await;

    // Each agent receives exactly its own grant on its own subject.
    for (agent, stream) in agents.iter().zip(streams.iter_mut()) {
        let grant = next_grant(10, "grant", stream).await;
        assert_eq!(grant.payload.agent_id, agent.agent_id());
        assert_eq!(holders[&grant.payload.task_id], agent.agent_id());
    }

    // Seven more, mixed priorities: all must queue.
    for (i, p) in QUEUED_PRIORITIES.iter().enumerate() {
        let task = TaskSubmit::new(format!("q-{i}"))
            .priority(*p)
            .resource("cpu", 2.0);
        assert_eq!(
            orch.allocate_task(task).await.expect("submitted"),
            Allocation::Queued,
            "q-{i}"
        );
    }
    let alpha_task = holders
        .iter()
        .find(|(_, a)| *a == "alpha")
        .map(|(t, _)| t.clone())
        .expect("alpha task");
    let last = alpha_takes_the_queue_highest_priority_first(
        &cluster,
        &agents[0],
        &mut streams[0],
        alpha_task,
    )
    .await;
    alpha_released_everything_and_its_type_learned(&cluster, &orch, &agents[0], &last).await;
}

/// Three tasks fill the fleet (each needs a whole agent); answers who holds which.
async fn three_tasks_fill_the_fleet(orch: &Coordinator) -> HashMap<String, String> {
    let mut holders = HashMap::new();
    for i in 0..3 {
        let task = TaskSubmit::new(format!("fill-{i}"))
            .priority(5)
            .resource("cpu", 2.0)
            .resource("memory", 1024.0);
        match orch.allocate_task(task).await.expect("allocated") {
            Allocation::Granted { agent_id } => holders.insert(format!("fill-{i}"), agent_id),
            other => panic!("fill-{i} should be granted at once, got {other:?}"),
        };
    }
    let distinct: std::collections::HashSet<_> = holders.values().collect();
    assert_eq!(
        distinct.len(),
        3,
        "least-loaded spreads the three tasks over three agents"
    );
    holders
}

/// Completes one task at a time on alpha; each completion lets the best queued task in, and
/// alpha never holds more than one. Answers the task alpha holds at the end.
async fn alpha_takes_the_queue_highest_priority_first(
    cluster: &Cluster,
    alpha: &Agent,
    grants: &mut GrantStream,
    mut current: String,
) -> String {
    let mut redis = cluster.redis().await;
    let keys = Keys::new("switchyard");
    let mut granted_order = Vec::new();
    for _ in 0..QUEUED_PRIORITIES.len() {
        alpha
            .complete_task_confirmed(&current, true, 1.0)
            .await
            .expect("completion accepted");
        let grant = next_grant(10, "next grant on alpha", grants).await;
        granted_order.push(grant.payload.priority);
        current = grant.payload.task_id.clone();
        assert_eq!(
            hget_i64(&mut redis, &keys.agent("alpha"), "res_cpu").await,
            2000,
            "one task's cpu reserved"
        );
    }
    let mut expected: Vec<u8> = QUEUED_PRIORITIES.to_vec();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        granted_order, expected,
        "queued tasks granted highest priority first"
    );
    current
}

/// The last completion releases everything alpha holds, and what the fleet learned is
/// visible: alpha (a backend) completed 8 default-type tasks.
async fn alpha_released_everything_and_its_type_learned(
    cluster: &Cluster,
    orch: &Coordinator,
    alpha: &Agent,
    last: &str,
) {
    alpha
        .complete_task_confirmed(last, true, 1.0)
        .await
        .expect("last completion");
    let mut redis = cluster.redis().await;
    let keys = Keys::new("switchyard");
    assert_eq!(
        hget_i64(&mut redis, &keys.agent("alpha"), "res_cpu").await,
        0
    );
    let res_memory = hget_i64(&mut redis, &keys.agent("alpha"), "res_memory").await;
    assert_eq!(res_memory, 0);
    let state = hget(&mut redis, &keys.task(last), "state").await;
    assert_eq!(state.as_deref(), Some("completed"));
    let status = orch.status().await.expect("status");
    assert_eq!(status.queue_depth, 0);
    assert_eq!(status.counters.get("completed"), Some(&8));
    let query = switchyard_protocol::StatusQuery {
        include_agents: true,
        include_patterns: true,
        ..switchyard_protocol::StatusQuery::default()
    };
    let learned = orch.status_with(query).await.expect("status with patterns");
    let row = learned
        .patterns
        .iter()
        .find(|r| r.task_type == "default" && r.agent_type == "backend")
        .expect("pattern row for default on backend");
    assert_eq!((row.attempts, row.successes), (8, 8));
    // Warm-up: the neutral prior (0.5) counts as one observation, so 8 successes give 8.5 / 9.
    assert!((row.success_ema - 8.5 / 9.0).abs() < 1e-9, "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_wait_and_failures_cascade() {
    let cluster = Cluster::start(1).await;
    let agent = cluster.agent("solo", "worker", 8.0, 8192.0).await;
    let mut grants = agent.grants().await.expect("grants");
    let orch = cluster.coordinator("orch").await;
    extract_transform_load_submitted(&orch).await;

    let g = next_grant(10, "extract grant", &mut grants).await;
    assert_eq!(g.payload.task_id, "extract");
    agent
        .complete_task_confirmed("extract", true, 0.5)
        .await
        .expect("extract done");
    let g = next_grant(10, "transform grant", &mut grants).await;
    assert_eq!(
        g.payload.task_id, "transform",
        "dependency met: transform granted"
    );

    // transform fails: load fails with a reason naming it, and is never granted.
    let mut events = orch.events();
    agent
        .complete_task_confirmed("transform", false, 0.5)
        .await
        .expect("failure reported");
    let reason = within(10, "load failed", async {
        loop {
            if let Ok(switchyard_client::ClientEvent::Reply(r)) = events.recv().await {
                if r.payload.task_id.as_deref() == Some("load") {
                    return r.payload;
                }
            }
        }
    })
    .await;
    load_failed_because_transform_did(&cluster, &orch, reason).await;
}

/// extract is granted at once; transform waits for it, load for transform.
async fn extract_transform_load_submitted(orch: &Coordinator) {
    let first = orch
        .allocate_task(TaskSubmit::new("extract").resource("cpu", 1.0))
        .await
        .expect("extract");
    assert!(matches!(first, Allocation::Granted { .. }));
    let transform = TaskSubmit::new("transform")
        .resource("cpu", 1.0)
        .depends_on("extract");
    let second = orch.allocate_task(transform).await.expect("transform");
    assert_eq!(second, Allocation::Waiting, "waits for its dependency");
    let third = orch
        .allocate_task(TaskSubmit::new("load").depends_on("transform"))
        .await
        .expect("load");
    assert_eq!(third, Allocation::Waiting);
}

async fn load_failed_because_transform_did(
    cluster: &Cluster,
    orch: &Coordinator,
    reason: switchyard_protocol::CoordinatorReply,
) {
    assert_eq!(reason.status, switchyard_protocol::ReplyStatus::Failed);
    assert_eq!(
        reason.detail.as_deref(),
        Some("dependency_failed:transform")
    );
    let mut redis = cluster.redis().await;
    let state = hget(&mut redis, &Keys::new("switchyard").task("load"), "state").await;
    assert_eq!(state.as_deref(), Some("failed"));

    // A task submitted after its dependency failed fails at once.
    let late = orch
        .allocate_task(TaskSubmit::new("late").depends_on("transform"))
        .await
        .expect("late");
    assert_eq!(
        late,
        Allocation::Failed {
            reason: "dependency_failed:transform".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_can_ask_for_its_own_strategy() {
    use switchyard_decision::StrategyKind;
    let cluster = Cluster::start(1).await;
    let _a = cluster.agent("a", "worker", 8.0, 8192.0).await;
    let _b = cluster.agent("b", "worker", 8.0, 8192.0).await;
    let orch = cluster.coordinator("orch").await;
    let mut placed = Vec::new();
    for i in 0..4 {
        // Queue sequence numbers 1..=4: round-robin starts at seq % 2 among [a, b].
        let task = TaskSubmit::new(format!("rr-{i}"))
            .resource("cpu", 1.0)
            .strategy(StrategyKind::RoundRobin);
        match orch.allocate_task(task).await.expect("allocated") {
            Allocation::Granted { agent_id } => placed.push(agent_id),
            other => panic!("rr-{i}: {other:?}"),
        }
    }
    // Least-loaded (the default) would have answered a, b, a, b.
    assert_eq!(placed, ["b", "a", "b", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_broadcast_one_coordination_sync_per_interval() {
    use futures::StreamExt;
    let mut cluster = Cluster::start(0).await;
    cluster.config.coordination.optimization_interval_s = 0.3;
    cluster.add_replica().await;
    cluster.add_replica().await;
    let nats = cluster.nats().await;
    let mut syncs = nats
        .subscribe("coord.coordination_sync")
        .await
        .expect("subscribe");
    let _agent = cluster.agent("watched", "worker", 2.0, 512.0).await;
    let snapshot = within(10, "a sync", async {
        let message = syncs.next().await.expect("subscription open");
        let env: switchyard_protocol::Envelope<switchyard_protocol::CoordinationSync> =
            serde_json::from_slice(&message.payload).expect("a COORDINATION_SYNC envelope");
        env
    })
    .await;
    // The periodic broadcast carries the totals, not the agent table (reading every agent each
    // interval would make an idle fleet's cost grow with its size); a status query has it.
    assert!(
        snapshot.payload.agents.is_empty(),
        "{:?}",
        snapshot.payload.agents
    );
    let status = cluster
        .coordinator("ops")
        .await
        .status()
        .await
        .expect("status");
    assert!(status.agents.iter().any(|a| a.agent_id == "watched"));
    assert_eq!(
        snapshot.message_type,
        switchyard_protocol::MessageType::CoordinationSync
    );
    // The replica that published counted it (the lease itself is checked in state_scripts).
    let published: u64 = cluster
        .metrics
        .iter()
        .map(|m| {
            m.messages
                .with_label_values(&["coordination_sync", "out"])
                .get()
        })
        .sum();
    assert!(published >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_explains_its_decision_only_when_asked() {
    let cluster = Cluster::start(1).await;
    let ids = ["ex-a", "ex-b", "ex-c"];
    let mut agents = Vec::new();
    let mut streams = Vec::new();
    for id in ids {
        let agent = cluster.agent(id, "worker", 4.0, 4096.0).await;
        streams.push(agent.grants().await.expect("grant stream"));
        agents.push(agent);
    }
    let orch = cluster.coordinator("orch").await;
    let granted_to = |allocation: Allocation| match allocation {
        Allocation::Granted { agent_id } => agent_id,
        other => panic!("expected a grant, got {other:?}"),
    };

    // Not asked: no explanation. Half of one agent's cpu is now reserved.
    let plain = TaskSubmit::new("plain").resource("cpu", 2.0);
    let plain_agent = granted_to(orch.allocate_task(plain).await.expect("plain"));
    let at = |agent: &str| ids.iter().position(|id| *id == agent).expect("known agent");
    let grant = next_grant(10, "plain grant", &mut streams[at(&plain_agent)]).await;
    assert_eq!(grant.payload.task_id, "plain");
    assert_eq!(grant.payload.explanation, None);

    // Asked: the grant names the granted agent and ranks every agent the task fits on.
    let asked = TaskSubmit::new("asked").resource("cpu", 1.0).explain(true);
    let asked_agent = granted_to(orch.allocate_task(asked).await.expect("asked"));
    let grant = next_grant(10, "explained grant", &mut streams[at(&asked_agent)]).await;
    assert_eq!(grant.payload.task_id, "asked");
    let explanation = grant.payload.explanation.expect("an explanation");
    assert_eq!(explanation.strategy, "least_loaded");
    assert_eq!(explanation.chosen, asked_agent);
    assert_eq!(explanation.chosen, grant.payload.agent_id);
    let ranked: Vec<&str> = explanation
        .candidates
        .iter()
        .map(|c| c.agent_id.as_str())
        .collect();
    assert_eq!(ranked.len(), 3, "{explanation:?}");
    assert_eq!(ranked[0], asked_agent, "the chosen agent comes first");
    assert_eq!(ranked[2], plain_agent, "the loaded agent comes last");
    for pair in explanation.candidates.windows(2) {
        assert!(
            pair[0].score >= pair[1].score,
            "best first: {explanation:?}"
        );
    }
    // Least-loaded scores 1 - peak utilization after placing: 3 of 4 cpus free on an idle
    // agent, 1 of 4 on the one holding "plain".
    assert!((explanation.candidates[0].score - 0.75).abs() < 1e-9);
    assert!((explanation.candidates[2].score - 0.25).abs() < 1e-9);
}
