//! Allocation that learns, on the real path: over a real optimizer, NATS and Redis, a fleet with a
//! fast reliable agent type and a slow, failure-prone one. After a warm-up batch, `adaptive` has
//! learned the difference from the completions and sends the slow type fewer of the measured
//! tasks than `round_robin`, which cannot learn.
//!
//! Why this is deterministic rather than lucky:
//!
//! * Every agent has room for 64 tasks and each task needs 1 cpu, so no agent is ever full: a
//!   strategy's choice is never overruled by capacity.
//! * `round_robin` turns by queue sequence over the four agents sorted by id, so the 40 measured
//!   tasks (consecutive sequence numbers) give exactly 20 to the two slow agents.
//! * `adaptive` ranks by expected time `ratio / success × (1 + 0.5 × load)`. The slow type runs 3×
//!   its estimate and fails half the time (by a seeded hash of the task id, not by timing), so
//!   once it has even one observation its cost is about 2.5× the fast type's or more (one
//!   success: ratio 2, success 0.75, so 2.67, against about 1 / 0.96 for the fast type after a
//!   dozen successes), above the largest load penalty (1.5×; with 40 tasks on 128 cpus, at most
//!   1.31×). Before anything is learned both types are expected to run as estimated, so the
//!   warm-up spreads over them and always observes the slow type, and the measured batch is submitted only after the optimizer has confirmed every
//!   warm-up completion (the replies arrive after the Redis commit that updates the patterns).

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, within};
use switchyard::fleet::{FleetEvent, SubmitClock, WorkModel, spawn_sim_agent, stop_fleet};
use switchyard_client::{ClientEvent, Coordinator};
use switchyard_decision::StrategyKind;
use switchyard_protocol::{AgentRegister, ReplyStatus, TaskGrant, TaskSubmit};
use switchyard_sim::rng::SplitMix;
use tokio::sync::{broadcast, mpsc, watch};

/// Estimated duration of every task; the fast type takes exactly this.
const ESTIMATE_S: f64 = 0.05;
/// The slow type takes this many times the estimate.
const SLOW_FACTOR: f64 = 3.0;
/// Percent of the slow type's tasks that fail.
const SLOW_FAILURE_PCT: u64 = 50;
const WARM_UP_TASKS: usize = 24;
const MEASURED_TASKS: usize = 40;
const SEED: u64 = 20_240_611;

/// How an agent of `agent_type` works: fast agents finish on time and never fail; slow ones
/// take `SLOW_FACTOR` × the estimate and fail `SLOW_FAILURE_PCT`% of tasks, chosen by a seeded
/// hash of the task id so the outcome does not depend on timing or on which agent ran it.
fn work_model(agent_type: &'static str) -> WorkModel {
    Arc::new(move |grant: &TaskGrant| {
        if agent_type == "fast" {
            return (Duration::from_secs_f64(grant.estimated_duration_s), true);
        }
        let hash = grant.task_id.bytes().fold(SEED, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        let fails = SplitMix::new(hash).next_u64() % 100 < SLOW_FAILURE_PCT;
        let took = Duration::from_secs_f64(grant.estimated_duration_s * SLOW_FACTOR);
        (took, !fails)
    })
}

/// Submits `count` tasks named `<phase>-<i>` with `strategy` and waits until the optimizer has
/// answered each with `until` (grant, or finish); returns who got each task.
async fn run_phase(
    orch: &Coordinator,
    events: &mut broadcast::Receiver<ClientEvent>,
    phase: &str,
    count: usize,
    strategy: StrategyKind,
    until: &[ReplyStatus],
) -> BTreeMap<String, String> {
    for i in 0..count {
        let task = TaskSubmit::new(format!("{phase}-{i:03}"))
            .resource("cpu", 1.0)
            .estimated_duration(ESTIMATE_S)
            .strategy(strategy);
        orch.submit_task(task).await.expect("submit stored");
    }
    let mut granted = BTreeMap::new();
    let mut answered = HashSet::new();
    let what = format!("{phase}: {count} answers");
    within(15, &what, async {
        while answered.len() < count {
            let event = events.recv().await.expect("orchestrator events");
            let ClientEvent::Reply(reply) = event else {
                panic!("refused: {event:?}");
            };
            let reply = reply.payload;
            let Some(task_id) = reply.task_id.filter(|t| t.starts_with(phase)) else {
                continue;
            };
            if reply.status == ReplyStatus::Granted {
                granted.insert(task_id.clone(), reply.agent_id.unwrap_or_default());
            }
            if until.contains(&reply.status) {
                answered.insert(task_id);
            }
        }
    })
    .await;
    granted
}

/// Tasks per agent type (`fast`, `slow`) among grants by task id.
fn share(grants: &BTreeMap<String, String>) -> BTreeMap<&'static str, usize> {
    let mut share = BTreeMap::from([("fast", 0), ("slow", 0)]);
    for agent in grants.values() {
        let agent_type = if agent.starts_with("fast") {
            "fast"
        } else {
            "slow"
        };
        *share.entry(agent_type).or_default() += 1;
    }
    share
}

/// Tasks per agent type in the warm-up and in the measured batch.
struct Shares {
    warm_up: BTreeMap<&'static str, usize>,
    measured: BTreeMap<&'static str, usize>,
}

/// Runs the warm-up and the measured batch under `strategy` on a fresh deployment.
async fn shares(strategy: StrategyKind) -> Shares {
    let cluster = Cluster::start(1).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (fleet_tx, mut fleet_rx) = mpsc::channel::<FleetEvent>(1024);
    // Nobody needs the fleet's own reports here; drain them so agents never block on them.
    tokio::spawn(async move { while fleet_rx.recv().await.is_some() {} });
    let mut agents = Vec::new();
    for (id, agent_type) in [
        ("fast-0", "fast"),
        ("fast-1", "fast"),
        ("slow-0", "slow"),
        ("slow-1", "slow"),
    ] {
        let registration = AgentRegister::new(id, agent_type).capacity("cpu", 64.0);
        let agent = spawn_sim_agent(
            cluster.nats().await,
            cluster.subjects(),
            registration,
            work_model(agent_type),
            SubmitClock::default(),
            fleet_tx.clone(),
            stop_rx.clone(),
        )
        .await
        .expect("agent registers");
        agents.push(agent);
    }
    let orch = cluster.coordinator("learner").await;
    let mut events = orch.events();
    let finished = [ReplyStatus::Completed, ReplyStatus::Failed];
    let warm_up = run_phase(
        &orch,
        &mut events,
        "warm",
        WARM_UP_TASKS,
        strategy,
        &finished,
    )
    .await;
    assert_eq!(
        warm_up.len(),
        WARM_UP_TASKS,
        "every warm-up task was granted"
    );
    let measured = run_phase(
        &orch,
        &mut events,
        "measured",
        MEASURED_TASKS,
        strategy,
        &[ReplyStatus::Granted],
    )
    .await;
    stop_fleet(&stop_tx, agents).await;
    Shares {
        warm_up: share(&warm_up),
        measured: share(&measured),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_sends_the_slow_failing_type_fewer_tasks_than_round_robin() {
    let round_robin = shares(StrategyKind::RoundRobin).await;
    let adaptive = shares(StrategyKind::Adaptive).await;
    eprintln!(
        "tasks per agent type, warm-up then measured: round_robin {:?} {:?}, adaptive {:?} {:?}",
        round_robin.warm_up, round_robin.measured, adaptive.warm_up, adaptive.measured
    );
    assert_eq!(round_robin.measured.values().sum::<usize>(), MEASURED_TASKS);
    assert_eq!(adaptive.measured.values().sum::<usize>(), MEASURED_TASKS);
    // Adaptive did try the slow type (what it avoids later it learned, not assumed).
    assert!(adaptive.warm_up["slow"] > 0, "{:?}", adaptive.warm_up);
    // Round-robin cannot learn: the slow pair gets its turn, exactly every other task.
    assert_eq!(round_robin.measured["slow"], MEASURED_TASKS / 2);
    assert!(
        adaptive.measured["slow"] < round_robin.measured["slow"],
        "adaptive gave the slow type {} measured tasks, round_robin {}",
        adaptive.measured["slow"],
        round_robin.measured["slow"]
    );
}

/// Exploration on the real path: with one agent type known to run at half the estimate and one
/// never seen, every ordinary task goes to the known type and the one task in 50 that explores
/// (by queue sequence) goes to the unseen type, and the grant script counts it in the pair's
/// pattern (`explorations`), so the dispatcher must have passed the explored type along with the
/// grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exploring_task_goes_to_the_unseen_type_and_is_counted() {
    const TASKS: usize = 50;
    let cluster = Cluster::start(1).await;
    let _known = cluster.agent("known-1", "known", 64.0, 65536.0).await;
    let _unseen = cluster.agent("unseen-1", "unseen", 64.0, 65536.0).await;
    let mut redis = cluster.redis().await;
    let keys = switchyard_server::state::Keys::new("switchyard");
    let _: i64 = redis::cmd("HSET")
        .arg(keys.patterns())
        .arg(&[
            ("default|known|attempts", "10"),
            ("default|known|successes", "10"),
            ("default|known|success_ema", "1"),
            ("default|known|duration_ratio_ema", "0.5"),
        ])
        .query_async(&mut redis)
        .await
        .expect("HSET patterns");
    let orch = cluster.coordinator("orch").await;
    for i in 0..TASKS {
        let task = TaskSubmit::new(format!("job-{i}"))
            .resource("cpu", 1.0)
            .estimated_duration(1.0)
            .strategy(StrategyKind::Adaptive);
        orch.submit_task(task).await.expect("submit");
    }
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..TASKS {
        let task = format!("job-{i}");
        common::wait_for_state(&mut redis, 10, &task, "granted").await;
        let agent = common::hget(&mut redis, &keys.task(&task), "agent").await;
        *on.entry(agent.unwrap_or_default()).or_default() += 1;
    }
    assert_eq!(on.get("unseen-1"), Some(&1), "grants per agent: {on:?}");
    assert_eq!(on.get("known-1"), Some(&(TASKS - 1)), "{on:?}");
    let explorations =
        common::hget_i64(&mut redis, &keys.patterns(), "default|unseen|explorations").await;
    assert_eq!(explorations, 1, "the exploring grant is counted");
}
