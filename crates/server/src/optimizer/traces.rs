//! The spans of a task's life (docs/operations.md "Tracing"): `submit`, `queue wait`, `grant`,
//! `run` and `completion`, all in the trace of the submit's W3C `traceparent` header. Made from
//! the times Redis holds (submitted_at, granted_at), so they are right whichever replica handles
//! each step. With no `[telemetry] otlp_endpoint` the [`Tracer`] is off: callers check
//! [`Tracer::enabled`] before building anything, and only the context is passed on.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::Ctx;
use crate::state::{CompleteOutcome, QueuedTask, SubmitOutcome, SubmitRequest};
use switchyard_protocol::{TaskComplete, TaskGrant, TraceContext, random_span_id};

/// An attribute value (OTLP's string, int, double and bool).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttrValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_string())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}

impl From<u64> for AttrValue {
    fn from(n: u64) -> Self {
        AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<f64> for AttrValue {
    fn from(x: f64) -> Self {
        AttrValue::Float(x)
    }
}

impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

/// OTLP span kinds used here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SpanKind {
    Internal = 1,
    Producer = 4,
    Consumer = 5,
}

/// One finished span, ready for export.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanRecord {
    pub name: &'static str,
    pub kind: SpanKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub tracestate: Option<String>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Marks the span as an error (a failed attempt or task).
    pub error: bool,
}

impl SpanRecord {
    /// A span of `name` in `context`'s trace, child of `parent` (`None`: a root).
    pub(crate) fn new(
        name: &'static str,
        kind: SpanKind,
        context: &TraceContext,
        parent: Option<[u8; 8]>,
        start_ns: u64,
        end_ns: u64,
    ) -> SpanRecord {
        SpanRecord {
            name,
            kind,
            trace_id: context.trace_id,
            span_id: context.span_id,
            parent_span_id: parent,
            tracestate: context.tracestate.clone(),
            start_ns,
            end_ns: end_ns.max(start_ns),
            attributes: Vec::new(),
            error: false,
        }
    }

    pub(crate) fn attr(mut self, key: &'static str, value: impl Into<AttrValue>) -> SpanRecord {
        self.attributes.push((key, value.into()));
        self
    }

    pub(crate) fn error(mut self, error: bool) -> SpanRecord {
        self.error = error;
        self
    }
}

/// Where spans go: the exporter's bounded queue, or nowhere (off).
pub(crate) struct Tracer {
    queue: Option<mpsc::Sender<SpanRecord>>,
    metrics: Option<prometheus::IntCounterVec>,
}

impl Tracer {
    /// No export: [`Tracer::enabled`] is false and nothing is built.
    pub(crate) fn off() -> Tracer {
        Tracer {
            queue: None,
            metrics: None,
        }
    }

    /// A tracer feeding a queue of `capacity` spans; the receiver goes to the exporter.
    pub(crate) fn with_queue(
        capacity: usize,
        counter: prometheus::IntCounterVec,
    ) -> (Tracer, mpsc::Receiver<SpanRecord>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let tracer = Tracer {
            queue: Some(tx),
            metrics: Some(counter),
        };
        (tracer, rx)
    }

    /// Whether spans are exported: check before building one.
    pub(crate) fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Hands a span to the exporter without waiting: a full queue drops it (counted).
    pub(crate) fn record(&self, span: SpanRecord) {
        let Some(queue) = &self.queue else {
            return;
        };
        if queue.try_send(span).is_err() {
            if let Some(counter) = &self.metrics {
                counter.with_label_values(&["dropped"]).inc();
            }
        }
    }
}

/// Now, in ns since the epoch (the clock of this replica).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// The context the `submit` span gets, and its parent: a submitter's fresh root (the client
/// library's own, [`TraceContext::new_root`]) makes the submit span the root with that span id;
/// any other context becomes its parent; without one, a new trace when spans are exported, else
/// none (nothing to pass on).
pub(crate) fn submit_context(
    received: Option<&TraceContext>,
    exporting: bool,
) -> Option<(TraceContext, Option<[u8; 8]>)> {
    match received {
        Some(c) if c.is_fresh_root() => Some((c.clone().without_root_marker(), None)),
        Some(c) => Some((c.at_span(random_span_id()), Some(c.span_id))),
        None if exporting => Some((TraceContext::new_root().without_root_marker(), None)),
        None => None,
    }
}

/// The span id of the grant numbered `grant_seq` of a task: derived, not stored, so every copy of
/// a grant (resends, re-publication after a restart) carries the same `traceparent`, and the
/// completion's `run` span finds its parent without another write.
pub(crate) fn grant_span_id(trace: &TraceContext, task_id: &str, grant_seq: u64) -> [u8; 8] {
    let name = format!("grant-span:{}:{task_id}:{grant_seq}", trace.trace_id_hex());
    let uuid = super::inbox::derived_id(&name);
    let mut id = [0u8; 8];
    // The second half holds the UUID's variant bits (`10`), so the id is never zero.
    id.copy_from_slice(&uuid.as_bytes()[8..16]);
    id
}

/// The context an agent gets with grant `grant_seq`: the grant span's.
pub(crate) fn grant_context(trace: &TraceContext, task_id: &str, grant_seq: u64) -> TraceContext {
    trace.at_span(grant_span_id(trace, task_id, grant_seq))
}

/// What a submit carries into its span: the submit span's context, its parent, and when the
/// replica started applying it.
pub(crate) struct SubmitTrace {
    pub context: TraceContext,
    pub parent: Option<[u8; 8]>,
    pub started_ns: u64,
}

impl SubmitTrace {
    /// For a submit that arrived with `received` (see [`submit_context`]).
    pub(crate) fn new(received: Option<&TraceContext>, exporting: bool) -> Option<SubmitTrace> {
        let (context, parent) = submit_context(received, exporting)?;
        Some(SubmitTrace {
            context,
            parent,
            started_ns: now_ns(),
        })
    }

    /// The task options that store the context with the task (SubmitRequest::options), so any
    /// replica making a later span finds it.
    pub(crate) fn options(&self) -> Vec<(&'static str, String)> {
        let mut options = vec![("traceparent", self.context.traceparent())];
        if let Some(state) = &self.context.tracestate {
            options.push(("tracestate", state.clone()));
        }
        options
    }
}

/// Records the `submit` span of an applied submit (a repeat of one applied before makes none).
pub(crate) fn submitted(
    ctx: &Ctx,
    req: &SubmitRequest,
    trace: &SubmitTrace,
    outcome: &SubmitOutcome,
) {
    if !ctx.tracer.enabled() || !trace.context.sampled() {
        return;
    }
    let (name, error) = match outcome {
        SubmitOutcome::Queued => ("queued", false),
        SubmitOutcome::Waiting { .. } => ("waiting", false),
        SubmitOutcome::Failed { .. } => ("failed", true),
        SubmitOutcome::Refused(_) => ("refused", true),
        SubmitOutcome::Duplicate { .. } => return,
    };
    let tenant = option(req, "tenant");
    let span = SpanRecord::new(
        "submit",
        SpanKind::Consumer,
        &trace.context,
        trace.parent,
        trace.started_ns,
        now_ns(),
    )
    .attr("task_id", req.task_id.as_str())
    .attr("task_type", req.task_type.as_str())
    .attr("priority", u64::from(req.priority))
    .attr("tenant", tenant)
    .attr("submitter", req.submitter.as_str())
    .attr("outcome", name)
    .error(error);
    ctx.tracer.record(span);
}

fn option(req: &SubmitRequest, name: &str) -> String {
    req.options
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The attributes every span of a task carries.
struct TaskAttrs<'a> {
    task_id: &'a str,
    task_type: &'a str,
    priority: u64,
    tenant: &'a str,
    attempt: u64,
}

impl TaskAttrs<'_> {
    fn on(&self, span: SpanRecord) -> SpanRecord {
        span.attr("task_id", self.task_id)
            .attr("task_type", self.task_type)
            .attr("priority", self.priority)
            .attr("tenant", self.tenant)
            .attr("attempt", self.attempt)
    }
}

/// Records a grant's `queue wait` (first grant only) and `grant` spans; `own` is the grant
/// span's context, the one the agent receives.
pub(crate) fn granted(
    ctx: &Ctx,
    task: &QueuedTask,
    grant: &TaskGrant,
    own: Option<&TraceContext>,
    score: Option<f64>,
    started_ns: u64,
) {
    let (Some(submit), Some(own)) = (&task.trace, own) else {
        return;
    };
    if !ctx.tracer.enabled() || !submit.sampled() {
        return;
    }
    let now = now_ns();
    let attrs = TaskAttrs {
        task_id: &task.view.task_id,
        task_type: &task.view.task_type,
        priority: u64::from(task.view.priority),
        tenant: &task.tenant,
        attempt: u64::from(task.attempt),
    };
    let parent = Some(submit.span_id);
    // The first grant's wait began at the submit; a later grant's (a retry, or a task taken back
    // from an agent that left) began when it was queued again, which no record keeps.
    if grant.grant_seq <= 1 {
        let wait = submit.at_span(random_span_id());
        let start = ms_to_ns(task.submitted_at_ms);
        let span = SpanRecord::new("queue wait", SpanKind::Internal, &wait, parent, start, now);
        ctx.tracer.record(attrs.on(span));
    }
    let strategy = task
        .strategy
        .map(|k| k.as_str().to_string())
        .unwrap_or_else(|| ctx.config.coordination.default_strategy.clone());
    let mut span = SpanRecord::new("grant", SpanKind::Producer, own, parent, started_ns, now)
        .attr("agent_id", grant.agent_id.as_str())
        .attr("grant_seq", grant.grant_seq)
        .attr("strategy", strategy);
    if let Some(score) = score {
        span = span.attr("score", score);
    }
    ctx.tracer.record(attrs.on(span));
}

/// Records the `run` and `completion` spans of the attempt an agent's report ended.
pub(crate) async fn completed(ctx: &Ctx, report: &TaskComplete, outcome: &CompleteOutcome) {
    let (name, next_attempt) = match outcome {
        CompleteOutcome::Finished { success, .. } => {
            (if *success { "completed" } else { "failed" }, None)
        }
        CompleteOutcome::Cancelled { .. } => ("cancelled", None),
        CompleteOutcome::Retrying { attempt, .. } => ("retrying", Some(*attempt)),
        CompleteOutcome::Refused(_) => return,
    };
    let end = AttemptEnd {
        task_id: &report.task_id,
        agent_id: &report.agent_id,
        grant_seq: report.grant_seq,
        next_attempt,
        success: report.success,
        execution_time_s: Some(report.execution_time_s),
        outcome: name,
        reason: report.error.clone().unwrap_or_default(),
        only_in_state: None,
    };
    end.record(ctx).await;
}

/// How an attempt (or a task that never ran) ended, by an agent's report or a time limit.
pub(crate) struct AttemptEnd<'a> {
    pub task_id: &'a str,
    /// Empty when no attempt ran (a queue timeout): then only a `completion` span, under
    /// `submit`.
    pub agent_id: &'a str,
    /// The grant that ended (`None`: the task's current one).
    pub grant_seq: Option<u64>,
    /// The attempt that comes next, for a retry (the task's record already counts it).
    pub next_attempt: Option<u32>,
    pub success: bool,
    pub execution_time_s: Option<f64>,
    /// completed, failed, retrying, cancelled.
    pub outcome: &'static str,
    pub reason: String,
    /// Record nothing unless the task is in this state when its record is read (the grant
    /// that ended may have been followed by another meanwhile; better no span than a wrong one).
    pub only_in_state: Option<&'static str>,
}

impl AttemptEnd<'_> {
    /// Records the `run` span (from the grant to now, under its `grant` span) and the
    /// `completion` span under it. Reads the task's record for the stored context and times.
    pub(crate) async fn record(&self, ctx: &Ctx) {
        let Ok(Some(record)) = ctx.store.task_record(self.task_id).await else {
            return;
        };
        let get = |k: &str| record.get(k).map(String::as_str);
        let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let Some(trace) = TraceContext::from_headers(get("traceparent"), get("tracestate")) else {
            return;
        };
        let moved_on = self.only_in_state.is_some_and(|s| get("state") != Some(s));
        if !trace.sampled() || moved_on {
            return;
        }
        let attempt = match self.next_attempt {
            Some(next) => u64::from(next).saturating_sub(1),
            None => num("attempt"),
        };
        let attrs = TaskAttrs {
            task_id: self.task_id,
            task_type: get("task_type").unwrap_or(""),
            priority: num("priority"),
            tenant: get("tenant").unwrap_or(switchyard_decision::DEFAULT_TENANT),
            attempt: attempt.max(1),
        };
        let grant_seq = self.grant_seq.unwrap_or_else(|| num("grant_seq"));
        let now = now_ns();
        let parent = if self.agent_id.is_empty() {
            trace.span_id
        } else {
            self.record_run(ctx, &trace, &attrs, grant_seq, num("granted_at"), now)
        };
        let done = trace.at_span(random_span_id());
        let span = SpanRecord::new(
            "completion",
            SpanKind::Consumer,
            &done,
            Some(parent),
            now,
            now_ns(),
        )
        .attr("agent_id", self.agent_id)
        .attr("outcome", self.outcome)
        .attr("reason", self.reason.as_str())
        .error(self.is_error());
        ctx.tracer.record(attrs.on(span));
    }

    /// Records the `run` span; answers its id.
    fn record_run(
        &self,
        ctx: &Ctx,
        trace: &TraceContext,
        attrs: &TaskAttrs,
        grant_seq: u64,
        granted_at_ms: u64,
        now: u64,
    ) -> [u8; 8] {
        let grant = grant_span_id(trace, self.task_id, grant_seq);
        let run = trace.at_span(random_span_id());
        let start = ms_to_ns(granted_at_ms);
        let mut span = SpanRecord::new("run", SpanKind::Internal, &run, Some(grant), start, now)
            .attr("agent_id", self.agent_id)
            .attr("grant_seq", grant_seq)
            .attr("success", self.success)
            .error(self.is_error());
        if let Some(seconds) = self.execution_time_s {
            span = span.attr("execution_time_s", seconds);
        }
        ctx.tracer.record(attrs.on(span));
        run.span_id
    }

    fn is_error(&self) -> bool {
        self.outcome == "failed" || self.outcome == "retrying"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> TraceContext {
        TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid")
    }

    #[test]
    fn the_submit_span_continues_the_submitters_trace() {
        let parent = received();
        let (own, of) = submit_context(Some(&parent), false).expect("kept");
        assert_eq!(own.trace_id, parent.trace_id);
        assert_ne!(own.span_id, parent.span_id);
        assert_eq!(of, Some(parent.span_id));

        let fresh = TraceContext::new_root();
        let (own, of) = submit_context(Some(&fresh), false).expect("kept");
        assert_eq!(
            (own.trace_id, own.span_id, of),
            (fresh.trace_id, fresh.span_id, None)
        );
        assert!(!own.is_fresh_root(), "the marker is not passed on");

        assert!(
            submit_context(None, false).is_none(),
            "off: nothing is made up"
        );
        assert!(submit_context(None, true).is_some_and(|(c, p)| p.is_none() && c.sampled()));
    }

    #[test]
    fn a_grant_span_id_is_the_same_for_every_copy_and_differs_per_grant() {
        let trace = received();
        let first = grant_span_id(&trace, "t1", 1);
        assert_eq!(first, grant_span_id(&trace, "t1", 1));
        assert_ne!(first, grant_span_id(&trace, "t1", 2));
        assert_ne!(first, grant_span_id(&trace, "t2", 1));
        assert_ne!(first, [0; 8]);
    }

    #[test]
    fn an_off_tracer_records_nothing_and_a_full_queue_drops() {
        let off = Tracer::off();
        assert!(!off.enabled());
        let span = SpanRecord::new("x", SpanKind::Internal, &received(), None, 2, 1);
        assert_eq!(span.end_ns, 2, "an end before the start is clamped");
        off.record(span.clone());
        let counter = prometheus::IntCounterVec::new(prometheus::Opts::new("c", "c"), &["outcome"])
            .expect("a valid counter");
        let (tracer, mut rx) = Tracer::with_queue(1, counter.clone());
        tracer.record(span.clone());
        tracer.record(span.clone());
        assert_eq!(counter.with_label_values(&["dropped"]).get(), 1);
        assert_eq!(rx.try_recv().ok(), Some(span));
    }
}
