//! What is learned per agent beyond its type, on a real Redis: `complete_tasks.lua` folds each
//! report into the agent's pace, failure excess and change test with exactly
//! `AgentLearning::record`'s arithmetic (given the type's pattern as it was just before the
//! report), the agent hash, the fleet log (a replica's `FleetCache`) and the status read carry the
//! values, and a change in pace is counted.
//!
//! The sequence: on-estimate runs with a little noise, then runs 8× slower (the change test must
//! fire at the first), a failure, and two reports in one call (the second must see the pattern
//! as the first left it in memory). Durations stay far from the change test's thresholds, so
//! the 14-significant-digit storage cannot tip a decision.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use common::scripts::{Fixture, RETENTION_S, cpu, fixture, submit_req};
use common::{Cluster, hget, next_grant, wait_for_state};
use switchyard_decision::{AgentLearning, Completion as Outcome, PatternStats, StrategyKind};
use switchyard_protocol::{StatusQuery, TaskSubmit};
use switchyard_server::state::{
    CompleteOutcome, Completion, Deadline, DeadlineKind, DeadlineOutcome, FleetCache, Keys,
    SubmitOutcome,
};

/// The agent hash fields of the learned values (rows.rs LEARNED_FIELDS), as operators see them.
const FIELDS: [&str; 7] = [
    "pace_n",
    "pace",
    "pace_fast",
    "pace_var",
    "fail_excess",
    "drifts",
    "learned_at",
];

/// (success, estimated s, actual s) per report.
const RUNS: [(bool, f64, f64); 11] = [
    (true, 10.0, 10.0),
    (true, 10.0, 11.0),
    (true, 20.0, 19.0),
    (true, 10.0, 10.5),
    (true, 10.0, 9.6),
    (true, 10.0, 10.2),
    // 8× slower: the change test fires here...
    (true, 10.0, 80.0),
    // ...and not again while the agent stays there.
    (true, 10.0, 84.0),
    (false, 10.0, 3.0),
    (true, 5.0, 41.0),
    // An unknown estimate teaches the failure excess only.
    (true, 0.0, 7.0),
];

/// The learning rate: well below the change test's fast rate (0.5), as in production (at 0.5 the
/// two estimates would move together and the test could never fire).
const LR: f64 = 0.1;

/// Reports folded one per call, then the rest two at a time.
const SINGLE: usize = 8;

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1e-3)
}

/// The learned values as stored in the agent's hash.
async fn stored(f: &Fixture, agent: &str) -> AgentLearning {
    let mut v = Vec::new();
    for field in FIELDS {
        v.push(f.agent_field(agent, field).await);
    }
    let real = |i: usize| v[i].parse::<f64>().unwrap_or(0.0);
    AgentLearning {
        observations: v[0].parse().unwrap_or(0),
        pace: real(1),
        pace_fast: real(2),
        pace_var: real(3),
        failure_excess: real(4),
        drifts: v[5].parse().unwrap_or(0),
        learned_at_ms: v[6].parse().unwrap_or(0),
    }
}

fn assert_matches(got: &AgentLearning, want: &AgentLearning, what: &str) {
    let ok = got.observations == want.observations
        && got.drifts == want.drifts
        && close(got.pace, want.pace)
        && close(got.pace_fast, want.pace_fast)
        && close(got.pace_var, want.pace_var)
        && close(got.failure_excess, want.failure_excess);
    assert!(ok, "{what}: stored {got:?}, reference {want:?}");
}

/// Submits `task` with an estimate and grants it to `agent`.
async fn granted(f: &Fixture, task: &str, agent: &str, estimate: f64) {
    let mut req = submit_req(task, &format!("m-{task}"), 5, cpu(100));
    req.estimated_duration_s = estimate;
    assert_eq!(f.submit(&req).await, SubmitOutcome::Queued, "{task}");
    let outcome = f.grant(task, &[agent]).await;
    assert!(
        matches!(
            outcome,
            switchyard_server::state::GrantOutcome::Granted { .. }
        ),
        "{outcome:?}"
    );
}

fn report<'a>(task: &'a str, agent: &'a str, run: (bool, f64, f64)) -> Completion<'a> {
    Completion {
        task_id: task,
        agent_id: agent,
        success: run.0,
        execution_time_s: run.2,
        grant_seq: None,
        usage: None,
    }
}

/// The reference: the pattern of (default, worker) and the agent's learning, folded in order.
struct Reference {
    lr: f64,
    pattern: PatternStats,
    learned: AgentLearning,
    drifts_seen: u64,
}

impl Reference {
    fn fold(&mut self, (success, estimated_s, actual_s): (bool, f64, f64)) {
        let outcome = Outcome {
            success,
            estimated_s,
            actual_s,
        };
        let before = self.learned.drifts;
        self.learned.record(
            outcome,
            self.pattern.duration_ratio_ema,
            self.pattern.success_ema,
            self.lr,
        );
        self.drifts_seen += self.learned.drifts - before;
        self.pattern.record(success, estimated_s, actual_s, self.lr);
    }
}

#[tokio::test]
async fn completions_teach_the_agent_its_pace_as_the_reference_does() {
    let f = fixture().await;
    f.register("a1", cpu(4000)).await;
    let mut cache = FleetCache::new();
    cache.refresh(&f.store).await.expect("first refresh");
    assert_eq!(cache.agents()[0].learned, AgentLearning::default());
    let mut reference = Reference {
        lr: LR,
        pattern: PatternStats::neutral(),
        learned: AgentLearning::default(),
        drifts_seen: 0,
    };
    let tasks: Vec<String> = (0..RUNS.len()).map(|i| format!("t{i}")).collect();
    for (i, run) in RUNS.iter().enumerate().take(SINGLE) {
        granted(&f, &tasks[i], "a1", run.1).await;
        let batch = f
            .store
            .complete_tasks(&[report(&tasks[i], "a1", *run)], LR, RETENTION_S)
            .await
            .expect("complete_tasks");
        assert!(matches!(
            batch.outcomes[0],
            CompleteOutcome::Finished { .. }
        ));
        let before = reference.learned.drifts;
        reference.fold(*run);
        assert_eq!(batch.drifts, reference.learned.drifts - before, "run {i}");
        assert_matches(&stored(&f, "a1").await, &reference.learned, &tasks[i]);
        if i == 6 {
            // Restarted from the slow run: about 8× its type, not a moving average's 1.2×.
            let factor = reference.learned.pace_factor();
            assert!((factor - 8.0).abs() < 0.5, "{factor}");
        }
    }
    assert_eq!(reference.learned.drifts, 1, "the slowdown is one change");

    // The rest two reports per call (and one task of another type, whose neutral pattern
    // counts): each must see the pattern as the report before it left it.
    for pair in (SINGLE..RUNS.len()).collect::<Vec<_>>().chunks(2) {
        for &i in pair {
            granted(&f, &tasks[i], "a1", RUNS[i].1).await;
        }
        let reports: Vec<Completion> = pair
            .iter()
            .map(|&i| report(&tasks[i], "a1", RUNS[i]))
            .collect();
        let batch = f
            .store
            .complete_tasks(&reports, LR, RETENTION_S)
            .await
            .expect("complete_tasks");
        assert_eq!(batch.outcomes.len(), pair.len());
        for &i in pair {
            reference.fold(RUNS[i]);
        }
        assert_matches(&stored(&f, "a1").await, &reference.learned, "a batch");
    }
    let want = reference.learned;

    // The same values reach a replica through the fleet log, a full read, and the status.
    let refresh = cache.refresh(&f.store).await.expect("refresh");
    assert!(!refresh.full && refresh.entries > 0, "{refresh:?}");
    assert_matches(&cache.agents()[0].learned, &want, "fleet log");
    let snapshot = f.store.agent_snapshot().await.expect("snapshot");
    assert_matches(&snapshot[0].learned, &want, "full read");
    let status = f
        .store
        .coordination_sync(&StatusQuery::default())
        .await
        .expect("status");
    let agent = &status.agents[0];
    assert!(close(agent.pace_factor, want.pace_factor()), "{agent:?}");
    assert!(close(agent.failure_excess, want.failure_excess));
    assert_eq!(agent.drifts, 1);
    eprintln!("status after the sequence: {agent:?}");
    // The only agent of its type: the type's ratio follows it too, so its pace against the type
    // shrinks after the change, but stays well above 1.
    assert!(agent.pace_factor > 2.0, "a slower agent shows as such");

    // Re-registering keeps what was learned, and logs it for replicas that dropped the agent.
    let mut fresh = FleetCache::new();
    fresh.refresh(&f.store).await.expect("fresh refresh");
    f.register("a1", cpu(4000)).await;
    fresh
        .refresh(&f.store)
        .await
        .expect("refresh after register");
    assert_matches(&fresh.agents()[0].learned, &want, "after re-registering");
}

#[tokio::test]
async fn a_cancel_confirmation_teaches_nothing() {
    let f = fixture().await;
    f.register("a1", cpu(4000)).await;
    granted(&f, "t1", "a1", 10.0).await;
    f.store
        .cancel_task("t1", "orch", false, "test", RETENTION_S)
        .await
        .expect("cancel_task");
    let batch = f
        .store
        .complete_tasks(&[report("t1", "a1", (false, 10.0, 1.0))], LR, RETENTION_S)
        .await
        .expect("complete_tasks");
    assert!(
        matches!(batch.outcomes[0], CompleteOutcome::Cancelled { .. }),
        "{:?}",
        batch.outcomes
    );
    assert_eq!(batch.drifts, 0);
    for field in FIELDS {
        assert_eq!(f.agent_field("a1", field).await, "", "{field}");
    }
}

/// A run stopped at its run timeout is a failed attempt to learning (enforce_deadline.lua): the
/// agent's score, failure excess and its type's pattern learn it as the reference learns a
/// failure with no duration, and a replica reads it from the fleet log. Two timeouts, a success
/// between them, so the second sees the pattern the first left.
#[tokio::test]
async fn a_run_stopped_at_its_timeout_teaches_a_failure_as_the_reference_does() {
    let f = fixture().await;
    f.register("a1", cpu(4000)).await;
    let mut cache = FleetCache::new();
    cache.refresh(&f.store).await.expect("first refresh");
    let mut reference = Reference {
        lr: LR,
        pattern: PatternStats::neutral(),
        learned: AgentLearning::default(),
        drifts_seen: 0,
    };
    let mut score = switchyard_decision::NEUTRAL_SCORE;
    for (task, run) in [("t1", None), ("t2", Some(12.0)), ("t3", None)] {
        granted(&f, task, "a1", 10.0).await;
        match run {
            None => timed_out(&f, task).await,
            Some(actual) => {
                f.store
                    .complete_tasks(&[report(task, "a1", (true, 10.0, actual))], LR, RETENTION_S)
                    .await
                    .expect("complete_tasks");
            }
        }
        let outcome = (run.is_some(), 10.0, run.unwrap_or(0.0));
        score = switchyard_decision::updated_score(score, LR, outcome.0, 10.0, outcome.2);
        reference.fold(outcome);
        assert_matches(&stored(&f, "a1").await, &reference.learned, task);
    }
    let patterns = f.store.patterns().await.expect("patterns");
    let pattern = patterns
        .get("default", "worker")
        .expect("the pair is known");
    assert_eq!((pattern.attempts, pattern.successes), (3, 1));
    assert!(
        close(pattern.success_ema, reference.pattern.success_ema),
        "{pattern:?}"
    );
    assert!(
        close(
            pattern.duration_ratio_ema,
            reference.pattern.duration_ratio_ema
        ),
        "{pattern:?}"
    );
    let stored_score: f64 = f.agent_field("a1", "score").await.parse().expect("score");
    assert!(
        close(stored_score, score),
        "score {stored_score}, reference {score}"
    );
    assert_eq!(f.agent_i64("a1", "completions").await, 3);
    cache.refresh(&f.store).await.expect("refresh");
    assert_matches(&cache.agents()[0].learned, &reference.learned, "fleet log");
    assert!(
        reference.learned.failure_excess > 0.0,
        "{:?}",
        reference.learned
    );
}

/// Milliseconds since the Unix epoch by this host's clock (the test's Redis runs here too).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When an attempt was learned is stored with what was learned (Redis clock), by a completion
/// and by a run timeout alike; a replica reads it from the fleet log and ages the agent's view
/// by it (placement fades an idle agent's penalties), and an agent with a run out is not idle.
#[tokio::test]
async fn when_an_attempt_was_learned_reaches_a_replica_which_ages_the_view() {
    let f = fixture().await;
    f.register("a1", cpu(4000)).await;
    let mut cache = FleetCache::new();
    cache.refresh(&f.store).await.expect("first refresh");
    let before = wall_ms();
    granted(&f, "t1", "a1", 10.0).await;
    f.store
        .complete_tasks(&[report("t1", "a1", (true, 10.0, 10.0))], LR, RETENTION_S)
        .await
        .expect("complete_tasks");
    let at = stored(&f, "a1").await.learned_at_ms;
    assert!(
        (before..=wall_ms()).contains(&at),
        "learned at {at}, test ran from {before}"
    );
    cache.refresh(&f.store).await.expect("refresh");
    assert_eq!(cache.agents()[0].learned.learned_at_ms, at);
    cache.age(at + 5_000);
    assert_eq!(cache.agents()[0].idle_s, 5.0);

    // A run out: not idle, whatever the clock says.
    granted(&f, "t2", "a1", 10.0).await;
    cache.refresh(&f.store).await.expect("refresh after grant");
    cache.age(at + 60_000);
    assert_eq!(cache.agents()[0].idle_s, 0.0);

    // A run stopped at its timeout is learned, and dated, too.
    timed_out(&f, "t2").await;
    let after_timeout = stored(&f, "a1").await.learned_at_ms;
    assert!(after_timeout >= at, "{after_timeout} < {at}");
    cache
        .refresh(&f.store)
        .await
        .expect("refresh after timeout");
    assert_eq!(cache.agents()[0].learned.learned_at_ms, after_timeout);
    cache.age(after_timeout + 2_500);
    assert_eq!(cache.agents()[0].idle_s, 2.5);
}

/// Writes an agent's learned pace (`factor` × its type), changes detected and when, to its hash
/// and to the fleet log (`<id>|learned`, docs/operations.md), as a completion would have.
async fn set_learned(
    redis: &mut redis::aio::MultiplexedConnection,
    agent: &str,
    factor: f64,
    drifts: u64,
    learned_at_ms: u64,
) {
    let keys = Keys::new("switchyard");
    let pace = factor.ln().to_string();
    let values = [
        "1".to_owned(),
        pace.clone(),
        pace,
        "0".into(),
        "0".into(),
        drifts.to_string(),
        learned_at_ms.to_string(),
    ];
    let mut hset = redis::cmd("HSET");
    hset.arg(keys.agent(agent));
    for (field, value) in FIELDS.iter().zip(&values) {
        hset.arg(*field).arg(value);
    }
    let _: i64 = hset.query_async(redis).await.expect("HSET");
    let _: String = redis::cmd("XADD")
        .arg(keys.fleet_log())
        .arg("*")
        .arg(format!("{agent}|learned"))
        .arg(values.join("|"))
        .query_async(redis)
        .await
        .expect("XADD");
}

/// End to end over NATS: an adaptive optimizer gives a task to an agent that slowed down (a
/// change detected, 8× its type) once it has been idle long enough for its penalty to fade, and
/// not while what it showed is fresh. Its peer is 2× its type since it started (no change), so
/// it keeps its penalty however long it idles.
#[tokio::test]
async fn an_optimizer_tries_again_an_agent_idle_since_it_slowed_down() {
    for (age_ms, winner) in [(0u64, "steady"), (3_600_000, "changed")] {
        let cluster = Cluster::start(1).await;
        let _changed = cluster.agent("changed", "worker", 4.0, 1024.0).await;
        let _steady = cluster.agent("steady", "worker", 4.0, 1024.0).await;
        let mut redis = cluster.redis().await;
        let now = wall_ms();
        set_learned(&mut redis, "changed", 8.0, 1, now - age_ms).await;
        set_learned(&mut redis, "steady", 2.0, 0, now - 3_600_000).await;
        let orch = cluster.coordinator("orch").await;
        let task = TaskSubmit::new("probe")
            .resource("cpu", 1.0)
            .estimated_duration(1.0)
            .strategy(StrategyKind::Adaptive);
        orch.submit_task(task).await.expect("submit");
        wait_for_state(&mut redis, 10, "probe", "granted").await;
        let key = Keys::new("switchyard").task("probe");
        assert_eq!(
            hget(&mut redis, &key, "agent").await.as_deref(),
            Some(winner),
            "the slowed-down agent's pace learned {age_ms} ms ago"
        );
    }
}

/// Makes `task`'s run deadline due now and enforces it; the attempt must have been stopped.
async fn timed_out(f: &Fixture, task: &str) {
    let member = format!("{task}|1");
    let _: i64 = redis::cmd("ZADD")
        .arg(f.keys.run_deadlines())
        .arg(0)
        .arg(&member)
        .query_async(&mut f.raw.clone())
        .await
        .expect("ZADD");
    let deadline = Deadline {
        kind: DeadlineKind::Run,
        task_id: task.to_string(),
        member,
    };
    let outcome = f
        .store
        .enforce_deadline(&deadline, "a1", LR, RETENTION_S)
        .await
        .expect("enforce_deadline");
    assert!(
        matches!(
            outcome,
            DeadlineOutcome::Failed { .. } | DeadlineOutcome::Retrying { .. }
        ),
        "{outcome:?}"
    );
}

/// The same through a real optimizer over NATS: an agent reports on-estimate runs, then runs
/// 8× slower; `switchyard status` shows its pace against the reference, one drift, and the
/// replica counted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_metric_show_an_agent_that_slowed_down() {
    let cluster = Cluster::start(1).await;
    let lr = cluster.config.coordination.learning_rate;
    let agent = cluster.agent("slowing", "worker", 4.0, 1024.0).await;
    let mut grants = agent.grants().await.expect("grant stream");
    let orch = cluster.coordinator("orch").await;
    let mut reference = Reference {
        lr,
        pattern: PatternStats::neutral(),
        learned: AgentLearning::default(),
        drifts_seen: 0,
    };
    let actuals = [2.0, 2.1, 1.9, 2.0, 2.05, 16.0, 16.4, 15.8];
    for (i, actual) in actuals.into_iter().enumerate() {
        let task = TaskSubmit::new(format!("live-{i}"))
            .resource("cpu", 1.0)
            .estimated_duration(2.0);
        orch.submit_task(task).await.expect("submit");
        let grant = next_grant(10, "a grant", &mut grants).await;
        agent
            .complete_grant_confirmed(&grant.payload, true, actual)
            .await
            .expect("completion applied");
        reference.fold((true, 2.0, actual));
    }
    assert_eq!(reference.drifts_seen, 1);
    let status = orch.status().await.expect("status");
    let shown = status
        .agents
        .iter()
        .find(|a| a.agent_id == "slowing")
        .expect("the agent is listed");
    let want = reference.learned;
    assert!(
        close(shown.pace_factor, want.pace_factor()),
        "{shown:?} against {want:?}"
    );
    assert!(
        close(shown.failure_excess, want.failure_excess),
        "{shown:?}"
    );
    assert_eq!(shown.drifts, 1);
    assert!(shown.pace_factor > 4.0, "{shown:?}");
    assert_eq!(cluster.metrics[0].agent_drifts.get(), 1);
}
