//! The Grafana board and the Prometheus setup of the compose files (deploy/): the board parses,
//! every metric one of its queries names is served on /metrics by a real optimizer that has done
//! the work that makes each labelled family appear, the deployment-wide gauges are never summed
//! across replicas, and the files the compose files mount exist. No Docker engine is needed.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::webdriver::http_raw;
use common::{Cluster, config_for, next_grant};
use switchyard_client::Cancellation;
use switchyard_client::error::ErrorKind;
use switchyard_harness::LocalServers;
use switchyard_protocol::TaskSubmit;
use switchyard_server::config::{BudgetConfig, BudgetKind};
use switchyard_server::metrics::GLOBAL_GAUGES;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn board() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/switchyard.json"))
        .expect("the board is JSON")
}

/// Every panel of the board (rows' nested panels included) that is not a row.
fn panels(board: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> =
        board["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        if panel["type"] != "row" {
            out.push(panel);
        }
    }
    out
}

/// Every PromQL expression of the board.
fn queries(board: &serde_json::Value) -> Vec<String> {
    panels(board)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("a target's expr").to_string())
        .collect()
}

/// The Switchyard metric names (sample names, `_bucket` included) an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("switchyard_"))
        .map(str::to_string)
        .collect()
}

/// The sample names of a Prometheus text exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_board_parses_and_reads_global_gauges_with_max() {
    let board = board();
    assert_eq!(board["uid"], "switchyard");
    let panels = panels(&board);
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let datasource = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    for panel in &panels {
        let title = &panel["title"];
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        for target in targets {
            let uid = target["datasource"]["uid"]
                .as_str()
                .expect("datasource uid");
            assert!(
                datasource.contains(&format!("uid: {uid}")),
                "{title}: datasource {uid} is not provisioned"
            );
        }
    }
    // One replica exports each deployment-wide gauge; summing is right only by accident and
    // wrong while two replicas overlap, so the board takes the max.
    for expr in queries(&board) {
        for name in metric_names(&expr) {
            if GLOBAL_GAUGES.contains(&name.as_str()) {
                assert!(expr.starts_with("max"), "{expr}: read {name} with max");
            }
            if name.ends_with("_total") || name.ends_with("_bucket") {
                assert!(expr.contains("rate("), "{expr}: {name} is a counter");
            }
        }
    }
}

#[test]
fn the_compose_files_mount_files_that_exist_and_scrape_their_optimizers() {
    let scrape = read("deploy/prometheus/prometheus.yml");
    for compose in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        let text = read(compose);
        let mounts: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- ./"))
            .map(|l| l.split(':').next().expect("a mount's source"))
            .collect();
        assert!(
            mounts.iter().any(|m| m.starts_with("deploy/grafana")),
            "{compose}"
        );
        for mount in mounts {
            assert!(
                root().join(mount).exists(),
                "{compose} mounts ./{mount}, which is missing"
            );
        }
        for service in ["prometheus:", "grafana:", "optimizer-1:", "optimizer-2:"] {
            assert!(
                text.contains(&format!("\n  {service}")),
                "{compose} has no {service}"
            );
        }
        for target in ["optimizer-1:9464", "optimizer-2:9464"] {
            assert!(
                scrape.contains(target),
                "prometheus.yml does not scrape {target}"
            );
        }
        assert!(text.contains("METRICS_ADDR: 0.0.0.0:9464"), "{compose}");
    }
}

fn budget(name: &str, kind: BudgetKind, limit: u64) -> BudgetConfig {
    BudgetConfig {
        name: name.into(),
        kind,
        limit,
        period_s: None,
        burst: None,
        unit: None,
    }
}

/// What makes every labelled family appear: grants (tenant, latency, budget draws), a task
/// blocked by a budget, a refused submit, a cancel, a queue timeout, a failed attempt retried.
async fn drive_work(cluster: &Cluster) {
    let agent = cluster.agent("w1", "worker", 4.0, 1000.0).await;
    let mut grants = agent.grants().await.expect("grant stream");
    let orch = cluster.coordinator("orch").await;
    let task = |id: &str| TaskSubmit::new(id).resource("cpu", 1.0);
    // Holds the only gpu slot for the rest of the test, so "b" stays blocked.
    orch.allocate_task(task("a").budget("gpu", 1).budget("tpm", 100))
        .await
        .expect("a is granted");
    orch.submit_task(task("b").budget("gpu", 1))
        .await
        .expect("b");
    let refused = orch
        .allocate_task(task("x").budget("no-such-budget", 1))
        .await;
    assert_eq!(refused.err().map(|e| e.kind()), Some(ErrorKind::Rejected));
    orch.submit_task(task("late").depends_on("never").queue_timeout(0.2))
        .await
        .expect("late");
    // Waits for the answer, so the cancel (another lane) cannot arrive before the submit.
    let waiting = orch.allocate_task(task("c").depends_on("never")).await;
    assert!(waiting.is_ok(), "{waiting:?}");
    assert!(matches!(
        orch.cancel_task("c").await.expect("cancel c"),
        Cancellation::Cancelled
    ));
    orch.submit_task(task("r").max_attempts(2).retry_backoff(0.05))
        .await
        .expect("r");
    let mut attempts_of_r = 0;
    while attempts_of_r < 2 {
        let grant = next_grant(30, "the grants of r", &mut grants).await.payload;
        if grant.task_id == "r" {
            attempts_of_r += 1;
            let success = attempts_of_r == 2;
            agent
                .complete_grant(&grant, success, 0.01)
                .await
                .expect("complete r");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_board_queries_is_on_the_metrics_endpoint() {
    let wanted: BTreeSet<String> = queries(&board())
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    let servers = LocalServers::start().await.expect("servers");
    let mut config = config_for(&servers);
    config.budgets = vec![
        budget("gpu", BudgetKind::Concurrency, 1),
        budget("tpm", BudgetKind::Rate, 1_000_000),
    ];
    let cluster = Cluster::start_on(servers, config, 1).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(switchyard_server::optimizer::http::serve(
        listener,
        switchyard_server::optimizer::http::Endpoints {
            metrics: cluster.metrics[0].clone(),
            readiness: cluster.readiness[0].clone(),
            dashboard: None,
        },
        async {
            let _ = http_stopped.await;
        },
    ));
    drive_work(&cluster).await;
    // The gauges are refreshed by the maintenance pass (every 0.5 s here), so look until every
    // name is there, for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, response) = http_raw(port, "GET", "/metrics", &[], None)
            .await
            .expect("the metrics endpoint answers");
        let served = sample_names(&response);
        let missing: Vec<&String> = wanted.difference(&served).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the board queries metrics /metrics does not serve: {missing:?}\n{response}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_http.send(());
    let _ = http.await;
}
