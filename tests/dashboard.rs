//! The web dashboard in a real headless browser (Debian's chromium, driven through chromedriver)
//! against a running deployment: real nats-server and redis-server, the `optimizer` binary serving
//! the dashboard on its metrics listener. The page is loaded once; everything after that must
//! arrive through its polling, without a reload.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::free_port;
use common::webdriver::{Browser, http, http_raw};
use common::{Cluster, OptimizerProcess, within};
use serde_json::Value;
use switchyard_client::Agent;
use switchyard_protocol::{AgentRegister, Envelope, MessageType, Replies, TaskSubmit, now_ms};

/// The optimizer binary serving the dashboard on `port`, with replay allowed or not; returns
/// once `/readyz` answers 200.
async fn optimizer_with_dashboard(
    cluster: &Cluster,
    port: u16,
    allow_replay: bool,
) -> OptimizerProcess {
    let mut config = cluster.config.clone();
    config.metrics.addr = format!("127.0.0.1:{port}");
    config.dashboard.allow_replay = allow_replay;
    let process = OptimizerProcess::spawn(&config, &[]);
    within(60, "the optimizer's /readyz", async {
        loop {
            if let Ok((200, _, _)) = http_raw(port, "GET", "/readyz", &[], None).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    process
}

async fn agent_with_lease(cluster: &Cluster, id: &str, lease_s: f64) -> Agent {
    let registration = AgentRegister::new(id, "worker")
        .capacity("cpu", 2.0)
        .lease(lease_s);
    within(
        30,
        &format!("{id} to register"),
        Agent::register(cluster.nats().await, cluster.subjects(), registration),
    )
    .await
    .expect("agent registers")
}

/// A TASK_SUBMIT that failed and was parked in the dead-letter stream, exactly as the optimizer
/// parks one (its subject and headers), but never applied: replaying it must queue the task.
async fn park_dead_letter(cluster: &Cluster, task_id: &str) {
    let subjects = cluster.subjects();
    let submit = TaskSubmit::new(task_id)
        .resource("cpu", 64.0)
        .replies(Replies::None);
    let envelope = Envelope::new("dash-orch", MessageType::TaskSubmit, submit, now_ms());
    let js = async_nats::jetstream::new(cluster.nats().await);
    let mut headers = async_nats::HeaderMap::new();
    let id = format!("dlq:{}", envelope.message_id);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    headers.insert("Switchyard-Error", "redis timed out (test)");
    headers.insert("Switchyard-Took-Effect", "no");
    let original = subjects.addressed(MessageType::TaskSubmit, "dash-orch");
    headers.insert("Switchyard-Subject", original.as_str());
    js.publish_with_headers(
        subjects.dead_letter("task_submit"),
        headers,
        serde_json::to_vec(&envelope).expect("json").into(),
    )
    .await
    .expect("published")
    .await
    .expect("stored");
}

/// Runs `scenario` on a runtime whose threads have 16 MiB stacks: the walk-through is one large
/// future, too deep for a test thread's default 2 MiB in a debug build.
fn on_big_stacks<F: std::future::Future<Output = ()> + 'static>(scenario: fn() -> F) {
    const STACK: usize = 16 << 20;
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(STACK)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(scenario())
        })
        .expect("test thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

#[test]
fn the_dashboard_shows_the_fleet_the_queue_a_task_a_death_and_replays_a_dead_letter() {
    on_big_stacks(walk_through);
}

async fn walk_through() {
    let cluster = Cluster::start(0).await;
    let port = free_port();
    let mut optimizer = optimizer_with_dashboard(&cluster, port, true).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://127.0.0.1:{port}/")).await;

    // The page renders and its first poll succeeds.
    browser.wait_for(30, "#status.live").await;
    for panel in [
        "#fleet-table",
        "#queue-table",
        "#throughput-chart",
        "#budgets-table",
        "#dead-letters-table",
    ] {
        assert!(browser.find(panel).await.is_some(), "{panel} rendered");
    }

    // An agent with a short lease shows as active.
    let mut fragile = agent_with_lease(&cluster, "dash-fragile", 1.0).await;
    browser
        .wait_for(
            30,
            r#"#fleet-table tr[data-agent="dash-fragile"][data-status="active"]"#,
        )
        .await;

    // A task no agent can hold stays queued: it appears in the queue with its reason...
    let orch = cluster.coordinator("dash-orch").await;
    orch.submit_task(
        TaskSubmit::new("dash-big")
            .resource("cpu", 64.0)
            .replies(Replies::None),
    )
    .await
    .expect("submitted");
    let row = browser
        .wait_for(30, r#"#queue-table tr[data-task="dash-big"]"#)
        .await;
    let text = browser.text(&row).await;
    assert!(text.contains("no agent with capacity"), "{text}");

    // ...and its page opens from the search box.
    let search = browser.wait_for(5, "#search").await;
    browser.type_into(&search, "dash-big").await;
    let open = browser.wait_for(5, "#search-form button").await;
    browser.click(&open).await;
    let task = browser
        .wait_for(
            30,
            r#"#task-view [data-task="dash-big"][data-state="queued"]"#,
        )
        .await;
    let text = browser.text(&task).await;
    assert!(text.contains("no agent with capacity"), "{text}");
    assert!(browser.find("#task-record").await.is_some());
    // Its story, as the scripts recorded it: submitted, then queued.
    for event in ["submitted", "queued"] {
        let entry = browser
            .wait_for(5, &format!(r#"#task-story li[data-event="{event}"]"#))
            .await;
        let text = browser.text(&entry).await;
        assert!(text.contains(event), "{text}");
    }

    // The agent goes silent: it shows as dead, without a reload.
    fragile.stop_heartbeats();
    let dead = browser
        .wait_for(
            30,
            r#"#fleet-table tr[data-agent="dash-fragile"][data-status="dead"]"#,
        )
        .await;
    let text = browser.text(&dead).await;
    assert!(text.contains("died"), "{text}");

    // A dead letter: listed, inspected (headers and payload), replayed, and the replay applied.
    park_dead_letter(&cluster, "dash-replayed").await;
    browser
        .wait_for(30, "#dead-letters-table tr[data-seq]")
        .await;
    let seq = browser
        .eval("return document.querySelector('#dead-letters-table tr[data-seq]').dataset.seq;")
        .await
        .as_str()
        .expect("a dead letter's sequence")
        .to_string();
    let inspect = browser
        .wait_for(
            5,
            &format!(r#"#dead-letters-table button[data-seq="{seq}"]"#),
        )
        .await;
    browser.click(&inspect).await;
    let header = browser
        .wait_for(
            10,
            r#"#dead-letter-headers tr[data-header="Switchyard-Error"]"#,
        )
        .await;
    assert!(browser.text(&header).await.contains("redis timed out"));
    let payload = browser.wait_for(5, "#dead-letter-payload").await;
    within(10, "the payload to show", async {
        while !browser.text(&payload).await.contains("dash-replayed") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let replay = browser.wait_for(5, "#replay:not([disabled])").await;
    browser.click(&replay).await;
    browser
        .wait_for(30, &format!(r#"#replay-result [data-replayed="{seq}"]"#))
        .await;
    // The replayed submit was applied: the task is queued, and the page lists it.
    browser
        .wait_for(30, r#"#queue-table tr[data-task="dash-replayed"]"#)
        .await;
    // The dead letter left the list.
    within(30, "the replayed dead letter to leave the list", async {
        let css = format!(r#"#dead-letters-table tr[data-seq="{seq}"]"#);
        while browser.find(&css).await.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (_, _, metrics) = http_raw(port, "GET", "/metrics", &[], None)
        .await
        .expect("metrics");
    assert!(
        metrics.contains(r#"switchyard_dashboard_replays_total{outcome="replayed"} 1"#),
        "{metrics}"
    );

    // The optimizer stops answering: the page says so instead of showing stale data as live.
    optimizer.kill();
    browser.wait_for(30, "#status.down").await;
}

/// Without `allow_replay`, or without the dashboard's header, a replay is refused and counted;
/// the read-only views still answer.
#[test]
fn a_replay_is_refused_unless_allowed_and_asked_by_the_page() {
    on_big_stacks(refused_replays);
}

async fn refused_replays() {
    let cluster = Cluster::start(0).await;
    let port = free_port();
    let mut optimizer = optimizer_with_dashboard(&cluster, port, false).await;
    park_dead_letter(&cluster, "dash-refused").await;
    let (status, list) = http(port, "GET", "/api/dead_letters.json", None)
        .await
        .expect("list");
    assert_eq!(status, 200, "{list}");
    let seq = list["dead_letters"][0]["seq"]
        .as_u64()
        .expect("one dead letter");
    assert_eq!(list["dead_letters"][0]["replayable"], Value::Bool(true));
    let path = format!("/api/dead_letter/replay?seq={seq}");
    let header = [("X-Switchyard-Dashboard", "replay")];
    let (status, _, body) = http_raw(port, "POST", &path, &header, None)
        .await
        .expect("replay");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("allow_replay"), "{body}");
    optimizer.kill();

    let port = free_port();
    let mut optimizer = optimizer_with_dashboard(&cluster, port, true).await;
    let (status, _, body) = http_raw(port, "POST", &path, &[], None)
        .await
        .expect("replay");
    assert_eq!(status, 403, "no header, no replay: {body}");
    let (status, _, body) = http_raw(port, "GET", &path, &header, None)
        .await
        .expect("replay");
    assert_eq!(status, 404, "a GET replays nothing: {body}");
    let (status, task) = http(port, "GET", "/api/task.json?id=dash-refused", None)
        .await
        .expect("task");
    assert_eq!(status, 404, "never applied: {task}");
    let (_, _, metrics) = http_raw(port, "GET", "/metrics", &[], None)
        .await
        .expect("metrics");
    assert!(
        metrics.contains(r#"switchyard_dashboard_replays_total{outcome="refused"} 1"#),
        "{metrics}"
    );
    optimizer.kill();
}

/// `switchyard dashboard` serves the same views from NATS and Redis alone, with no optimizer in
/// the process: it prints its URL, and the overview lists an agent registered in Redis.
#[test]
fn switchyard_dashboard_serves_a_deployment_without_an_optimizer() {
    on_big_stacks(standalone_dashboard);
}

async fn standalone_dashboard() {
    let mut cluster = Cluster::start(0).await;
    cluster.add_replica().await;
    let _agent = agent_with_lease(&cluster, "dash-standalone", 30.0).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["dashboard", "--listen", "127.0.0.1:0"])
        .env("NATS_URL", cluster.servers.nats.url())
        .env("REDIS_URL", cluster.servers.redis.url())
        .env_remove("METRICS_ADDR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("switchyard dashboard starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    });
    let line = within(30, "the dashboard's URL", line)
        .await
        .expect("join")
        .expect("a line");
    let port: u16 = line
        .trim()
        .trim_start_matches("dashboard: http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("a URL with a port: {line:?}"));
    let (status, _, page) = http_raw(port, "GET", "/", &[], None).await.expect("page");
    assert_eq!(status, 200);
    assert!(page.contains("/dashboard/app.js"), "{page}");
    let overview = within(30, "the agent in the overview", async {
        loop {
            if let Ok((200, o)) = http(port, "GET", "/api/overview.json", None).await {
                if o.to_string().contains("dash-standalone") {
                    return o;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(overview["allow_replay"], Value::Bool(false));
    let _ = child.kill();
    let _ = child.wait();
}
