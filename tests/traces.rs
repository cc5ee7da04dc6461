//! OpenTelemetry traces over a real nats-server and redis-server with in-process optimizers: an
//! in-process OTLP/HTTP collector (a small HTTP server on a free port, decoding the JSON the
//! exporter posts) receives the spans, and the W3C `traceparent` header is followed from the
//! submitter through the optimizer to the agent and back.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use common::{Cluster, config_for, next_grant, wait_for_state, within};
use futures::StreamExt;
use serde_json::Value;
use switchyard_client::Allocation;
use switchyard_harness::LocalServers;
use switchyard_protocol::{
    Envelope, MessageType, TRACEPARENT_HEADER, TaskSubmit, TraceContext, to_hex,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// An OTLP/HTTP collector: every span of every request, flattened, with its resource's
/// attributes under `resource`.
struct Collector {
    url: String,
    spans: watch::Receiver<Vec<Value>>,
    requests: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (spans_tx, spans) = watch::channel(Vec::new());
        let (requests_tx, requests) = watch::channel(0usize);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let body = answer(stream).await;
                requests_tx.send_modify(|n| *n += 1);
                spans_tx.send_modify(|all| all.extend(flatten(&body)));
            }
        });
        Collector {
            url,
            spans,
            requests,
            task,
        }
    }

    /// Waits (at most 30 s) until the spans of `trace_id` include all of `names` as often as
    /// listed; answers that trace's spans.
    async fn trace(&mut self, trace_id: &str, names: &[&str]) -> Vec<Value> {
        let of_trace = |all: &Vec<Value>| -> Vec<Value> {
            all.iter()
                .filter(|s| s["traceId"] == trace_id)
                .cloned()
                .collect()
        };
        let complete = |all: &Vec<Value>| {
            let spans = of_trace(all);
            names.iter().all(|n| {
                let want = names.iter().filter(|m| *m == n).count();
                spans.iter().filter(|s| s["name"] == *n).count() >= want
            })
        };
        let what = format!("spans {names:?} of trace {trace_id}");
        let all = within(30, &what, self.spans.wait_for(complete))
            .await
            .expect("collector runs")
            .clone();
        of_trace(&all)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP request, answers 200, and returns its JSON body.
async fn answer(mut stream: TcpStream) -> Value {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let (head_end, length) = loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "request ended early");
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            assert!(head.starts_with("post /v1/traces "), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("content-length");
            break (end + 4, length);
        }
    };
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.expect("read body");
        assert!(n > 0, "body ended early");
        data.extend_from_slice(&buf[..n]);
    }
    let response =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    stream.write_all(response.as_bytes()).await.expect("answer");
    serde_json::from_slice(&data[head_end..head_end + length]).expect("OTLP JSON body")
}

fn flatten(body: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for rs in body["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                let mut span = span.clone();
                span["resource"] = rs["resource"]["attributes"].clone();
                out.push(span);
            }
        }
    }
    out
}

/// A subscription the server has certainly registered: a probe published after it on the same
/// connection came back (a flush alone does not wait for the server).
async fn subscribed(nats: &async_nats::Client, subject: String) -> async_nats::Subscriber {
    let subscription = nats.subscribe(subject).await.expect("subscribe");
    let probe = format!("probe.{}", uuid::Uuid::new_v4().simple());
    let mut echo = nats.subscribe(probe.clone()).await.expect("subscribe");
    nats.publish(probe, "probe".into()).await.expect("probe");
    within(30, "the probe", echo.next())
        .await
        .expect("probe back");
    subscription
}

fn attr(span: &Value, key: &str) -> Value {
    let attributes = span["attributes"].as_array().cloned().unwrap_or_default();
    let found = attributes.into_iter().find(|a| a["key"] == key);
    let value = found.map(|a| a["value"].clone()).unwrap_or(Value::Null);
    ["stringValue", "intValue", "boolValue", "doubleValue"]
        .iter()
        .find_map(|k| value.get(*k).cloned())
        .unwrap_or(Value::Null)
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

async fn traced_cluster(collector: Option<&Collector>) -> Cluster {
    let servers = LocalServers::start().await.expect("servers start");
    let mut config = config_for(&servers);
    if let Some(collector) = collector {
        config.telemetry.otlp_endpoint = collector.url.clone();
        config.telemetry.export_interval_ms = 50;
    }
    Cluster::start_on(servers, config, 1).await
}

/// The submitter's context: the trace the task's spans must join.
fn submitters_context() -> TraceContext {
    let mut context = TraceContext::new_root();
    context.tracestate = Some("vendor=kept".into());
    TraceContext::from_headers(Some(&context.traceparent()), Some("vendor=kept")).expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tasks_spans_form_one_trace_under_the_submitters_context() {
    let mut collector = Collector::start().await;
    let cluster = traced_cluster(Some(&collector)).await;
    let agent = cluster.agent("tracer-a", "worker", 2.0, 1024.0).await;
    let mut grants = agent.grants().await.expect("grant stream");
    let orch = cluster.coordinator("orch").await;
    let parent = submitters_context();
    let task = TaskSubmit::new("traced-1").priority(7).resource("cpu", 1.0);
    let allocation = orch.allocate_task_traced(task, Some(parent.clone())).await;
    assert!(
        matches!(allocation, Ok(Allocation::Granted { .. })),
        "{allocation:?}"
    );

    // The agent sees the grant span's context: the submitter's trace, its own span.
    let grant = next_grant(30, "the traced grant", &mut grants).await;
    let seen = grant.trace.clone().expect("the grant carries traceparent");
    assert_eq!(seen.trace_id, parent.trace_id);
    assert_ne!(seen.span_id, parent.span_id);
    assert_eq!(seen.tracestate.as_deref(), Some("vendor=kept"));

    // ... and sends it back with its report.
    let nats = cluster.nats().await;
    let complete_subject = cluster
        .subjects()
        .addressed(MessageType::TaskComplete, agent.agent_id());
    let mut reports = subscribed(&nats, complete_subject).await;
    agent
        .complete_work(&grant, true, 0.2)
        .await
        .expect("reported");
    let report = within(30, "the report", reports.next())
        .await
        .expect("report");
    let header = report
        .headers
        .as_ref()
        .and_then(|h| h.get(TRACEPARENT_HEADER));
    assert_eq!(header.map(|v| v.to_string()), Some(seen.traceparent()));

    let trace_id = to_hex(&parent.trace_id);
    let names = ["submit", "queue wait", "grant", "run", "completion"];
    let spans = collector.trace(&trace_id, &names).await;
    let (submit, wait, granted) = (
        one(&spans, "submit"),
        one(&spans, "queue wait"),
        one(&spans, "grant"),
    );
    let (run, completion) = (one(&spans, "run"), one(&spans, "completion"));
    let span_id = |s: &Value| s["spanId"].as_str().unwrap_or_default().to_string();
    let parent_of = |s: &Value| s["parentSpanId"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        parent_of(submit),
        to_hex(&parent.span_id),
        "submit under the submitter's span"
    );
    assert_eq!(parent_of(wait), span_id(submit));
    assert_eq!(parent_of(granted), span_id(submit));
    assert_eq!(
        span_id(granted),
        to_hex(&seen.span_id),
        "the agent got the grant span"
    );
    assert_eq!(parent_of(run), span_id(granted));
    assert_eq!(parent_of(completion), span_id(run));
    for span in [submit, wait, granted, run, completion] {
        assert_eq!(attr(span, "task_id"), "traced-1", "{span}");
        assert_eq!(span["traceState"], "vendor=kept", "{span}");
        let service = span["resource"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["key"] == "service.name").cloned());
        assert_eq!(
            service.map(|s| s["value"]["stringValue"].clone()),
            Some("switchyard-optimizer".into())
        );
    }
    assert_eq!(attr(granted, "agent_id"), "tracer-a");
    assert_eq!(
        attr(granted, "strategy"),
        cluster.config.coordination.default_strategy.as_str()
    );
    assert_eq!(attr(submit, "priority"), "7");
    assert_eq!(attr(submit, "tenant"), "default");
    assert_eq!(attr(run, "attempt"), "1");
    assert_eq!(attr(completion, "outcome"), "completed");
    let ns = |s: &Value, k: &str| {
        s[k].as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .expect("time")
    };
    assert!(ns(wait, "startTimeUnixNano") <= ns(wait, "endTimeUnixNano"));
    assert!(ns(run, "startTimeUnixNano") <= ns(run, "endTimeUnixNano"));
    // Counted once the collector's answer is read, which may be just after it stored them.
    let exported = cluster.metrics[0]
        .trace_spans
        .with_label_values(&["exported"]);
    within(30, "the exported spans to be counted", async {
        while exported.get() < 5 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_task_has_a_run_span_per_attempt_under_a_submit_root() {
    let mut collector = Collector::start().await;
    let cluster = traced_cluster(Some(&collector)).await;
    let agent = cluster.agent("retry-a", "worker", 2.0, 1024.0).await;
    let mut grants = agent.grants().await.expect("grant stream");
    let orch = cluster.coordinator("orch").await;
    // No context given: the client starts the trace, and the submit span is its root.
    let task = TaskSubmit::new("traced-retry")
        .resource("cpu", 1.0)
        .max_attempts(2)
        .retry_backoff(0.05);
    orch.submit_task(task).await.expect("submitted");
    let first = next_grant(30, "the first attempt", &mut grants).await;
    agent
        .complete_work(&first, false, 0.1)
        .await
        .expect("reported");
    let second = next_grant(30, "the second attempt", &mut grants).await;
    assert_eq!(second.payload.grant_seq, first.payload.grant_seq + 1);
    agent
        .complete_work(&second, true, 0.1)
        .await
        .expect("reported");
    let (a, b) = (first.trace.expect("traced"), second.trace.expect("traced"));
    assert_eq!(a.trace_id, b.trace_id, "both attempts in one trace");
    assert_ne!(a.span_id, b.span_id, "one grant span each");

    let names = [
        "submit",
        "grant",
        "grant",
        "run",
        "run",
        "completion",
        "completion",
    ];
    let spans = collector.trace(&to_hex(&a.trace_id), &names).await;
    let submit = one(&spans, "submit");
    assert!(
        submit.get("parentSpanId").is_none(),
        "the submit span is the root: {submit}"
    );
    let runs = named(&spans, "run");
    let mut attempts: Vec<String> = runs
        .iter()
        .map(|r| attr(r, "attempt").to_string())
        .collect();
    attempts.sort();
    assert_eq!(attempts, ["\"1\"", "\"2\""]);
    for (run, grant) in [(1, &a), (2, &b)] {
        let span = runs
            .iter()
            .find(|r| attr(r, "attempt") == run.to_string().as_str())
            .expect("run span");
        assert_eq!(
            span["parentSpanId"],
            to_hex(&grant.span_id),
            "attempt {run}"
        );
    }
    let mut outcomes: Vec<String> = named(&spans, "completion")
        .iter()
        .map(|c| attr(c, "outcome").to_string())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["\"completed\"", "\"retrying\""]);
    assert_eq!(
        named(&spans, "queue wait").len(),
        1,
        "only the first attempt's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_the_header_still_travels() {
    let collector = Collector::start().await;
    let mut cluster = traced_cluster(None).await;
    assert!(!cluster.config.telemetry.enabled());
    let agent = cluster.agent("quiet-a", "worker", 2.0, 1024.0).await;
    let mut grants = agent.grants().await.expect("grant stream");
    let orch = cluster.coordinator("orch").await;
    let parent = submitters_context();
    let task = TaskSubmit::new("untraced-1").resource("cpu", 1.0);
    orch.submit_task_traced(task, Some(parent.clone()))
        .await
        .expect("submitted");
    let grant = next_grant(30, "the grant", &mut grants).await;
    let seen = grant.trace.clone().expect("the header is passed on");
    assert_eq!(seen.trace_id, parent.trace_id);
    agent
        .complete_work(&grant, true, 0.1)
        .await
        .expect("reported");

    // A submit with a garbled header is handled as usual; the header is counted and ignored.
    let nats = cluster.nats().await;
    let js = async_nats::jetstream::new(nats);
    let envelope = Envelope::new(
        "orch",
        MessageType::TaskSubmit,
        TaskSubmit::new("garbled-1").resource("cpu", 1.0),
        switchyard_protocol::now_ms(),
    );
    let mut headers =
        switchyard_client::transport::msg_id_headers(&envelope.message_id.to_string());
    headers.insert(TRACEPARENT_HEADER, "00-not-a-trace-context-01");
    let subject = cluster
        .subjects()
        .addressed(MessageType::TaskSubmit, "orch");
    let body = serde_json::to_vec(&envelope).expect("json");
    js.publish_with_headers(subject, headers, body.into())
        .await
        .expect("published")
        .await
        .expect("stored");
    let garbled = next_grant(30, "the garbled submit's grant", &mut grants).await;
    assert_eq!(garbled.payload.task_id, "garbled-1");
    assert_eq!(
        garbled.trace, None,
        "no context made up when nothing is exported"
    );
    assert_eq!(cluster.metrics[0].invalid_trace_headers.get(), 1);
    agent
        .complete_work(&garbled, true, 0.1)
        .await
        .expect("reported");

    let mut redis = cluster.redis().await;
    wait_for_state(&mut redis, 30, "untraced-1", "completed").await;
    wait_for_state(&mut redis, 30, "garbled-1", "completed").await;
    cluster.stop_replicas().await;
    assert_eq!(*collector.requests.borrow(), 0, "nothing was exported");
    for outcome in ["exported", "dropped", "failed"] {
        let count = cluster.metrics[0]
            .trace_spans
            .with_label_values(&[outcome])
            .get();
        assert_eq!(count, 0, "{outcome}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_spans_never_tasks() {
    // A port nobody listens on: every export is refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let servers = LocalServers::start().await.expect("servers start");
    let mut config = config_for(&servers);
    config.telemetry.otlp_endpoint = url;
    config.telemetry.export_interval_ms = 20;
    let cluster = Cluster::start_on(servers, config, 1).await;
    let agent = cluster.agent("down-a", "worker", 2.0, 1024.0).await;
    let mut grants = agent.grants().await.expect("grant stream");
    let orch = cluster.coordinator("orch").await;
    for i in 0..3 {
        let task = TaskSubmit::new(format!("down-{i}")).resource("cpu", 2.0);
        orch.submit_task(task).await.expect("submitted");
    }
    for _ in 0..3 {
        let grant = next_grant(30, "a grant", &mut grants).await;
        agent
            .complete_work(&grant, true, 0.1)
            .await
            .expect("reported");
    }
    let mut redis = cluster.redis().await;
    for i in 0..3 {
        wait_for_state(&mut redis, 30, &format!("down-{i}"), "completed").await;
    }
    let failed = cluster.metrics[0]
        .trace_spans
        .with_label_values(&["failed"]);
    within(30, "the lost spans to be counted", async {
        while failed.get() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let exported = cluster.metrics[0]
        .trace_spans
        .with_label_values(&["exported"]);
    assert_eq!(exported.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limits_end_their_spans_too() {
    let mut collector = Collector::start().await;
    let cluster = traced_cluster(Some(&collector)).await;
    let agent = cluster.agent("slow-a", "worker", 1.0, 1024.0).await;
    let mut grants = agent.grants().await.expect("grant stream");
    let orch = cluster.coordinator("orch").await;
    // Granted, never reported: its run timeout ends the attempt.
    let parent = submitters_context();
    let task = TaskSubmit::new("slow-1")
        .resource("cpu", 1.0)
        .run_timeout(0.2);
    orch.submit_task_traced(task, Some(parent.clone()))
        .await
        .expect("submitted");
    let grant = next_grant(30, "the grant", &mut grants).await;
    let seen = grant.trace.clone().expect("traced");
    // Never granted (the agent is full): its queue timeout fails it.
    let starved = submitters_context();
    let task = TaskSubmit::new("starved-1")
        .resource("cpu", 1.0)
        .queue_timeout(0.1);
    orch.submit_task_traced(task, Some(starved.clone()))
        .await
        .expect("submitted");

    let names = ["submit", "grant", "run", "completion"];
    let spans = collector.trace(&to_hex(&parent.trace_id), &names).await;
    let (run, completion) = (one(&spans, "run"), one(&spans, "completion"));
    assert_eq!(run["parentSpanId"], to_hex(&seen.span_id));
    assert_eq!(completion["parentSpanId"], run["spanId"]);
    assert_eq!(attr(completion, "reason"), "run_timeout");
    assert_eq!(attr(completion, "outcome"), "failed");
    assert_eq!(run["status"]["code"], 2, "an error span");

    let spans = collector
        .trace(&to_hex(&starved.trace_id), &["submit", "completion"])
        .await;
    let (submit, completion) = (one(&spans, "submit"), one(&spans, "completion"));
    assert!(named(&spans, "run").is_empty(), "it never ran");
    assert_eq!(completion["parentSpanId"], submit["spanId"]);
    assert_eq!(attr(completion, "reason"), "queue_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_taken_back_from_a_leaving_agent_ends_its_run() {
    let mut collector = Collector::start().await;
    let cluster = traced_cluster(Some(&collector)).await;
    let leaving = cluster.agent("leaving-a", "worker", 1.0, 1024.0).await;
    let mut leaving_grants = leaving.grants().await.expect("grant stream");
    let orch = cluster.coordinator("orch").await;
    let parent = submitters_context();
    let task = TaskSubmit::new("moved-1").resource("cpu", 1.0);
    orch.submit_task_traced(task, Some(parent.clone()))
        .await
        .expect("submitted");
    let first = next_grant(30, "the first grant", &mut leaving_grants).await;
    let staying = cluster.agent("staying-b", "worker", 1.0, 1024.0).await;
    let mut staying_grants = staying.grants().await.expect("grant stream");
    leaving.deregister().await.expect("deregistered");
    let second = next_grant(30, "the grant after the requeue", &mut staying_grants).await;
    assert_eq!(second.payload.grant_seq, 2);
    staying
        .complete_work(&second, true, 0.1)
        .await
        .expect("reported");

    let names = [
        "submit",
        "grant",
        "grant",
        "run",
        "run",
        "completion",
        "completion",
    ];
    let spans = collector.trace(&to_hex(&parent.trace_id), &names).await;
    let first_span = to_hex(&first.trace.expect("traced").span_id);
    let taken_back = named(&spans, "run")
        .into_iter()
        .find(|r| r["parentSpanId"] == first_span.as_str())
        .expect("the first attempt's run span");
    assert_eq!(attr(taken_back, "agent_id"), "leaving-a");
    let ended = named(&spans, "completion")
        .into_iter()
        .find(|c| c["parentSpanId"] == taken_back["spanId"])
        .expect("its completion");
    assert_eq!(attr(ended, "outcome"), "requeued");
    assert_eq!(attr(ended, "reason"), "agent_left");
    assert_eq!(
        named(&spans, "queue wait").len(),
        1,
        "the first grant's only"
    );
}
