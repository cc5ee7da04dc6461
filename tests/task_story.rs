//! One task's story and the dashboard timeline, on real servers: the transition scripts append
//! one entry per transition (and none for a repeat), the story is bounded and expires with its
//! task, and the status answer (two optimizer replicas) and `Store::timeline` read them back.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::scripts::{Fixture, RETENTION_S, cpu, fixture, submit_req, with_deps};
use common::{Cluster, within};
use switchyard_client::Allocation;
use switchyard_protocol::{StoryEntry, StoryEvent, TaskSubmit};
use switchyard_server::config::RedisConfig;
use switchyard_server::state::{
    BeginHandoff, CancelOutcome, CompleteOutcome, ExpireOutcome, GrantOutcome, RequeueOutcome,
    ResolveOutcome, Store, SubmitOutcome,
};

async fn story(f: &Fixture, task_id: &str) -> Vec<StoryEntry> {
    f.store.task_story(task_id).await.expect("task_story")
}

fn events(story: &[StoryEntry]) -> Vec<StoryEvent> {
    story.iter().map(|e| e.event).collect()
}

fn detail<'a>(entry: &'a StoryEntry, name: &str) -> &'a str {
    entry.details.get(name).map(String::as_str).unwrap_or("")
}

/// A store on the fixture's server keeping `keep` story entries per task.
async fn store_keeping(f: &Fixture, keep: usize) -> Store {
    let config = RedisConfig {
        url: f.url.clone(),
        key_prefix: "t".into(),
        story_max_entries: keep,
        ..switchyard_server::config::Config::default().redis
    };
    Store::connect(&config).await.expect("store connects")
}

#[tokio::test]
async fn submit_grant_complete_is_told_once_each_and_repeats_add_nothing() {
    let f = fixture().await;
    f.register("a", cpu(4000)).await;
    let req = submit_req("t1", "m1", 7, cpu(1000));
    assert_eq!(f.submit(&req).await, SubmitOutcome::Queued);
    assert!(matches!(
        f.grant("t1", &["a"]).await,
        GrantOutcome::Granted { .. }
    ));
    assert!(matches!(
        f.complete("t1", "a", true).await,
        CompleteOutcome::Finished { success: true, .. }
    ));
    let told = story(&f, "t1").await;
    assert_eq!(
        events(&told),
        [
            StoryEvent::Submitted,
            StoryEvent::Queued,
            StoryEvent::Granted,
            StoryEvent::Completed
        ]
    );
    assert_eq!(detail(&told[0], "priority"), "7");
    assert_eq!(detail(&told[0], "tenant"), "default");
    assert_eq!(detail(&told[2], "agent"), "a");
    assert_eq!(detail(&told[2], "grant_seq"), "1");
    assert_eq!(detail(&told[2], "attempt"), "1");
    assert_eq!(detail(&told[3], "agent"), "a");
    assert!(told.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));

    // Redelivered: the same submit, the same completion, a grant of a task no longer queued.
    assert!(matches!(
        f.submit(&req).await,
        SubmitOutcome::Duplicate { .. }
    ));
    assert!(matches!(
        f.complete("t1", "a", true).await,
        CompleteOutcome::Finished { success: true, .. }
    ));
    assert!(matches!(
        f.grant("t1", &["a"]).await,
        GrantOutcome::NotQueued { .. }
    ));
    assert_eq!(story(&f, "t1").await, told, "repeats add nothing");
}

#[tokio::test]
async fn a_retried_task_shows_both_attempts_and_why() {
    let f = fixture().await;
    f.register("a", cpu(4000)).await;
    f.register("b", cpu(4000)).await;
    let mut req = submit_req("r", "m-r", 5, cpu(1000));
    req.options = vec![
        ("max_attempts", "2".into()),
        ("retry_backoff_ms", "0".into()),
        ("retry_backoff_max_ms", "0".into()),
    ];
    f.submit(&req).await;
    f.grant("r", &["a"]).await;
    assert!(matches!(
        f.complete("r", "a", false).await,
        CompleteOutcome::Retrying { .. }
    ));
    // A repeat of the failure answers the same and adds nothing.
    f.complete("r", "a", false).await;
    let due = f.store.due_retries(10).await.expect("due_retries");
    assert_eq!(f.store.promote_retries(&due).await.expect("promote"), ["r"]);
    f.grant("r", &["b"]).await;
    f.complete("r", "b", true).await;
    let told = story(&f, "r").await;
    assert_eq!(
        events(&told),
        [
            StoryEvent::Submitted,
            StoryEvent::Queued,
            StoryEvent::Granted,
            StoryEvent::AttemptFailed,
            StoryEvent::RetryPromoted,
            StoryEvent::Granted,
            StoryEvent::Completed
        ]
    );
    assert_eq!(
        (detail(&told[3], "agent"), detail(&told[3], "attempt")),
        ("a", "1")
    );
    assert_eq!(detail(&told[3], "reason"), "failed");
    assert!(!detail(&told[3], "retry_at").is_empty());
    assert_eq!(
        (detail(&told[5], "agent"), detail(&told[5], "attempt")),
        ("b", "2")
    );
    assert_eq!(detail(&told[6], "agent"), "b");
}

#[tokio::test]
async fn a_dependency_cascade_failure_names_the_dependency() {
    let f = fixture().await;
    f.register("a", cpu(4000)).await;
    f.submit(&submit_req("up", "m-up", 5, cpu(1000))).await;
    let down = with_deps(submit_req("down", "m-down", 5, cpu(1000)), &["up", "other"]);
    assert!(matches!(
        f.submit(&down).await,
        SubmitOutcome::Waiting { .. }
    ));
    f.submit(&submit_req("other", "m-other", 5, cpu(1000)))
        .await;
    f.grant("other", &["a"]).await;
    f.complete("other", "a", true).await;
    let met = f
        .store
        .resolve_dependency("down", "other", true, RETENTION_S)
        .await
        .unwrap();
    assert_eq!(met, ResolveOutcome::Waiting);
    f.grant("up", &["a"]).await;
    f.complete("up", "a", false).await;
    for _ in 0..2 {
        let failed = f
            .store
            .resolve_dependency("down", "up", false, RETENTION_S)
            .await
            .unwrap();
        assert!(
            matches!(failed, ResolveOutcome::Failed { .. }),
            "{failed:?}"
        );
    }
    f.store
        .resolve_dependency("down", "other", true, RETENTION_S)
        .await
        .unwrap();
    let told = story(&f, "down").await;
    assert_eq!(
        events(&told),
        [
            StoryEvent::Submitted,
            StoryEvent::Waiting,
            StoryEvent::DependencyMet,
            StoryEvent::Failed
        ]
    );
    assert_eq!(detail(&told[1], "unmet"), "2");
    assert_eq!(detail(&told[2], "dependency"), "other");
    assert_eq!(detail(&told[3], "reason"), "dependency_failed:up");
}

#[tokio::test]
async fn cancels_are_told_queued_and_granted() {
    let f = fixture().await;
    f.register("a", cpu(4000)).await;
    f.submit(&submit_req("q", "m-q", 5, cpu(1000))).await;
    for _ in 0..2 {
        let answer = f
            .store
            .cancel_task("q", "orch", false, "not needed", RETENTION_S)
            .await
            .unwrap();
        assert!(
            matches!(answer, CancelOutcome::Cancelled { .. }),
            "{answer:?}"
        );
    }
    let told = story(&f, "q").await;
    assert_eq!(
        events(&told),
        [
            StoryEvent::Submitted,
            StoryEvent::Queued,
            StoryEvent::Cancelled
        ]
    );
    assert_eq!(detail(&told[2], "reason"), "not needed");
    assert_eq!(detail(&told[2], "by"), "orch");

    f.granted("g", cpu(1000), "a").await;
    for _ in 0..2 {
        let answer = f
            .store
            .cancel_task("g", "ops", true, "", RETENTION_S)
            .await
            .unwrap();
        assert!(
            matches!(answer, CancelOutcome::Cancelling { .. }),
            "{answer:?}"
        );
    }
    f.complete("g", "a", false).await;
    assert_eq!(
        events(&story(&f, "g").await),
        [
            StoryEvent::Submitted,
            StoryEvent::Queued,
            StoryEvent::Granted,
            StoryEvent::CancelRequested,
            StoryEvent::Cancelled
        ]
    );
}

#[tokio::test]
async fn an_agent_death_requeues_with_the_reason() {
    let f = fixture().await;
    f.store
        .register_agent("mortal", "worker", &cpu(4000), 1.0, 1)
        .await
        .unwrap();
    f.register("left", cpu(4000)).await;
    f.granted("d", cpu(1000), "mortal").await;
    f.granted("l", cpu(1000), "left").await;
    let died = within(10, "the 1 ms lease to run out", async {
        loop {
            match f.store.expire_agent("mortal", 1).await.unwrap() {
                ExpireOutcome::Dead { tasks, .. } => return tasks,
                ExpireOutcome::Alive => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    assert_eq!(died, ["d"]);
    for _ in 0..2 {
        f.store
            .requeue_task("d", "mortal", RETENTION_S)
            .await
            .unwrap();
    }
    f.store.deregister_agent("left").await.unwrap();
    let requeued = f
        .store
        .requeue_task("l", "left", RETENTION_S)
        .await
        .unwrap();
    assert_eq!(requeued, RequeueOutcome::Requeued);
    let told = story(&f, "d").await;
    assert_eq!(
        events(&told),
        [
            StoryEvent::Submitted,
            StoryEvent::Queued,
            StoryEvent::Granted,
            StoryEvent::Requeued
        ]
    );
    assert_eq!(
        (detail(&told[3], "agent"), detail(&told[3], "reason")),
        ("mortal", "agent_died")
    );
    let told = story(&f, "l").await;
    assert_eq!(detail(&told[3], "reason"), "agent_left");
}

#[tokio::test]
async fn handoffs_are_told_with_their_verdicts() {
    let f = fixture().await;
    f.register("a", cpu(4000)).await;
    f.register("b", cpu(4000)).await;
    f.granted("h", cpu(1000), "a").await;
    let handoff = |id: &'static str| BeginHandoff {
        handoff_id: id,
        task_id: "h",
        from_agent: "a",
        to_agent: "b",
        grant_seq: None,
        timeout_ms: 10_000,
        priority: "normal",
    };
    for _ in 0..2 {
        f.store.begin_handoff(&handoff("no"), 10_000).await.unwrap();
        f.store
            .answer_handoff("no", "b", false, 10_000)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        f.store
            .begin_handoff(&handoff("yes"), 10_000)
            .await
            .unwrap();
        f.store
            .answer_handoff("yes", "b", true, 10_000)
            .await
            .unwrap();
    }
    f.complete("h", "b", true).await;
    let told = story(&f, "h").await;
    assert_eq!(
        events(&told),
        [
            StoryEvent::Submitted,
            StoryEvent::Queued,
            StoryEvent::Granted,
            StoryEvent::HandoffBegun,
            StoryEvent::HandoffRejected,
            StoryEvent::HandoffBegun,
            StoryEvent::HandoffAccepted,
            StoryEvent::Completed
        ]
    );
    assert_eq!(
        (detail(&told[6], "to"), detail(&told[6], "grant_seq")),
        ("b", "2")
    );
    assert_eq!(detail(&told[7], "agent"), "b");
}

#[tokio::test]
async fn a_story_keeps_its_newest_entries_and_expires_with_its_task() {
    let f = fixture().await;
    let store = store_keeping(&f, 3).await;
    f.register("a", cpu(4000)).await;
    store
        .submit_task(&submit_req("b", "m-b", 5, cpu(1000)), 1)
        .await
        .unwrap();
    store.grant_task("b", &["a".to_string()]).await.unwrap();
    let report = common::scripts::completion("b", "a");
    store.complete_task(&report, 0.5, 1).await.unwrap();
    let told = store.task_story("b").await.unwrap();
    assert_eq!(
        events(&told),
        [
            StoryEvent::Queued,
            StoryEvent::Granted,
            StoryEvent::Completed
        ],
        "the oldest entry (submitted) was trimmed"
    );
    let mut raw = f.raw.clone();
    let ttl: i64 = redis::cmd("TTL")
        .arg(f.keys.story("b"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        (0..=1).contains(&ttl),
        "the story expires with the task: {ttl}"
    );
    within(10, "the task and its story to expire", async {
        loop {
            let (task, story): (i64, i64) = redis::pipe()
                .exists(f.keys.task("b"))
                .exists(f.keys.story("b"))
                .query_async(&mut raw)
                .await
                .unwrap();
            if task == 0 && story == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(store.task_story("b").await.unwrap().is_empty());
}

/// `switchyard ARGS` against the cluster's NATS; its standard output.
async fn switchyard_cli(cluster: &Cluster, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args)
        .env("NATS_URL", cluster.servers.nats.url())
        .env_remove("SWITCHYARD_CONFIG");
    let output = within(60, "the switchyard command", async {
        tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("joined")
    })
    .await
    .expect("switchyard runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Two replicas: the story comes back in the status answer (the client's `task_story`) with each
/// transition once, and the timeline counts what was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_tell_the_story_and_count_the_timeline() {
    let cluster = Cluster::start(2).await;
    let agent = cluster.agent("w1", "worker", 8.0, 8192.0).await;
    let orch = cluster.coordinator("orch").await;
    let mut grants = agent.grants().await.expect("grants");
    for i in 0..4 {
        let answer = orch
            .allocate_task(TaskSubmit::new(format!("job{i}")).resource("cpu", 1.0))
            .await
            .expect("submit");
        assert!(matches!(answer, Allocation::Granted { .. }), "{answer:?}");
    }
    for _ in 0..4 {
        let grant = common::next_grant(10, "a grant", &mut grants).await;
        let success = grant.payload.task_id != "job3";
        agent
            .complete_grant_confirmed(&grant.payload, success, 0.1)
            .await
            .expect("reported");
    }
    let told = within(10, "the story through the status query", async {
        loop {
            let told = orch.task_story("job0").await.expect("task_story");
            if told.last().map(|e| e.event) == Some(StoryEvent::Completed) {
                return told;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        events(&told),
        [
            StoryEvent::Submitted,
            StoryEvent::Queued,
            StoryEvent::Granted,
            StoryEvent::Completed
        ]
    );
    assert_eq!(detail(&told[2], "agent"), "w1");
    assert!(!detail(&told[2], "strategy").is_empty());
    let failed = orch.task_story("job3").await.expect("task_story");
    assert_eq!(failed.last().map(|e| e.event), Some(StoryEvent::Failed));

    // The CLI prints the same story, one event a line, and as JSON.
    let text = switchyard_cli(&cluster, &["task", "job0"]).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("task job0: completed"),
        "{text}"
    );
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[3].contains("granted") && lines[3].contains("agent=w1"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(
        switchyard_cli(&cluster, &["task", "job3", "--json"])
            .await
            .trim(),
    )
    .expect("one JSON line");
    assert_eq!(json["task"]["state"], "failed");
    assert_eq!(json["story"].as_array().map(Vec::len), Some(4));
    let status = switchyard_cli(&cluster, &["status", "--task", "job0"]).await;
    assert!(status.contains("story of job0"), "{status}");

    let store = Store::connect(&cluster.config.redis).await.expect("store");
    let points = store.timeline(120).await.expect("timeline");
    assert_eq!(points.len(), 12);
    let sum = |f: fn(&switchyard_protocol::TimelinePoint) -> u64| points.iter().map(f).sum::<u64>();
    assert_eq!(sum(|p| p.submitted), 4);
    assert_eq!(sum(|p| p.granted), 4);
    assert_eq!(sum(|p| p.completed), 3);
    assert_eq!(sum(|p| p.failed), 1);
    assert_eq!(sum(|p| p.latency_counts.iter().sum()), 4);
    assert!(points.iter().any(|p| p.p50_ms.is_some()));
}
