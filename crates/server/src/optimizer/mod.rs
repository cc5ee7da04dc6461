//! The stateless optimizer service.
//!
//! A replica holds no coordination state of its own: it pulls events from the shared durable
//! consumer in batches, applies them through the Redis transition scripts, dispatches the queue,
//! publishes grants and replies, and acknowledges. Any number of replicas can run side by side;
//! correctness comes from the atomic scripts and idempotent handling, never from memory.
//!
//! [`Optimizer::connect`] sets everything up (and refuses an old nats-server);
//! [`Optimizer::run`] works until the `shutdown` future resolves, then finishes the batches in
//! flight and leaves everything else unacknowledged for another replica.

mod applied;
mod backlog;
mod batch;
mod budget_hints;
mod cancel;
mod deadlines;
mod dispatch;
mod events;
mod grants;
mod handoff;
mod head;
pub mod http;
mod inbox;
mod liveness;
mod maintenance;
mod otlp;
mod publish;
mod readiness;

pub use readiness::Readiness;
mod signals;
mod took_effect;
mod traces;
mod warnings;

use std::future::Future;
use std::sync::Arc;

use async_nats::jetstream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::Store;
use switchyard_client::error::Error;
use switchyard_client::transport;
use switchyard_decision::{Strategy, StrategyKind};
use switchyard_protocol::Subjects;

/// Deliberate faults for crash tests (set by the test suite through the environment of an
/// optimizer process; never in production).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Stop forever after committing a batch to Redis, before publishing and acknowledging, so a
    /// test can SIGKILL the process at exactly that point.
    pub stall_after_commit: bool,
}

impl Faults {
    /// Reads `SWITCHYARD_FAULT_STALL_AFTER_COMMIT=1`, in builds with the `fault-injection` feature
    /// (the test suite's); every other build has no faults, whatever the environment says.
    #[cfg(feature = "fault-injection")]
    pub fn from_env() -> Faults {
        Faults {
            stall_after_commit: std::env::var("SWITCHYARD_FAULT_STALL_AFTER_COMMIT")
                .is_ok_and(|v| v == "1"),
        }
    }

    /// No faults: this build was made without the `fault-injection` feature.
    #[cfg(not(feature = "fault-injection"))]
    pub fn from_env() -> Faults {
        Faults::default()
    }
}

/// Everything a batch needs, shared by all of a replica's tasks.
pub(crate) struct Ctx {
    pub config: Config,
    pub subjects: Subjects,
    pub store: Store,
    /// A second connection for dispatch passes, so their reads do not queue behind a batch's
    /// scripts on the one multiplexed connection (Redis interleaves separate connections).
    pub dispatch_store: Store,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub metrics: Metrics,
    pub strategy: Arc<dyn Strategy>,
    pub faults: Faults,
    pub dispatcher: dispatch::Dispatcher,
    /// This replica's name for leases (unique per process start).
    pub replica_id: String,
    /// Since when (Redis clock, ms) this replica receives heartbeats; 0 until it subscribed.
    pub listening_since_ms: std::sync::atomic::AtomicU64,
    /// Whether Redis and NATS answer now (`/readyz`; lanes pause while Redis does not).
    pub readiness: Readiness,
    /// Repeated warnings (failed events, messages not sent) are logged once per interval and
    /// site with a count, not once each.
    pub warnings: warnings::Warnings,
    /// Where the tasks' spans go; off (nothing built) without `[telemetry] otlp_endpoint`.
    pub tracer: traces::Tracer,
}

/// A connected optimizer replica.
pub struct Optimizer {
    ctx: Arc<Ctx>,
    /// Registrations, deregistrations and completions: the lane that frees capacity.
    control: jetstream::consumer::PullConsumer,
    /// New tasks.
    submits: jetstream::consumer::PullConsumer,
    /// The exporter's end of the span queue (only when spans are exported).
    spans: Option<tokio::sync::mpsc::Receiver<traces::SpanRecord>>,
}

impl Optimizer {
    /// Connects to NATS (checking the server version) and Redis, creates streams and the shared
    /// consumer if missing, and loads the scripts.
    pub async fn connect(config: Config, faults: Faults) -> Result<Optimizer, Error> {
        let client = transport::connect_secured(
            &config.nats.url,
            "switchyard-optimizer",
            &config.nats.security(),
        )
        .await?;
        transport::check_server(&client.server_info())?;
        let js = jetstream::new(client.clone());
        let subjects = Subjects::new(config.nats.subject_prefix.clone());
        crate::streams::ensure_streams(
            &js,
            &subjects,
            &config.jetstream,
            config.messages.max_message_bytes,
        )
        .await?;
        let (control, submits) =
            crate::streams::optimizer_consumers(&js, &subjects, &config.jetstream).await?;
        // Validated with the rest of the config; the fallback only guards a hand-built Config.
        let default_strategy =
            StrategyKind::parse(&config.coordination.default_strategy).unwrap_or_default();
        let store = Store::connect(&config.redis)
            .await?
            .with_infeasible_policy(config.coordination.infeasible)
            .with_budgets(config.budgets.iter().map(|b| b.name.clone()).collect());
        // Agents registered by a version that kept no capacity index enter it now.
        store.index_capacities().await?;
        define_budgets(&store, &config.budgets).await?;
        let dispatch_store = Store::connect(&config.redis).await?;
        let metrics = Metrics::new()?;
        let (tracer, spans) = if config.telemetry.enabled() {
            let (tracer, spans) = traces::Tracer::with_queue(
                config.telemetry.max_queued_spans,
                metrics.trace_spans.clone(),
            );
            (tracer, Some(spans))
        } else {
            (traces::Tracer::off(), None)
        };
        let ctx = Ctx {
            config,
            subjects,
            store,
            dispatch_store,
            client,
            js,
            metrics,
            tracer,
            strategy: Arc::from(default_strategy.build()),
            faults,
            dispatcher: dispatch::Dispatcher::new(),
            listening_since_ms: std::sync::atomic::AtomicU64::new(0),
            readiness: Readiness::new(),
            warnings: warnings::Warnings::new(transport::WARN_EVERY),
            replica_id: format!("optimizer-{}", uuid::Uuid::new_v4().simple()),
        };
        Ok(Optimizer {
            ctx: Arc::new(ctx),
            control,
            submits,
            spans,
        })
    }

    /// This replica's metrics (for the HTTP endpoint and tests).
    pub fn metrics(&self) -> Metrics {
        self.ctx.metrics.clone()
    }

    /// The web dashboard over this replica's connections, `None` when `[dashboard] enabled` is
    /// off. Serve it with [`http::serve`].
    pub fn dashboard(&self) -> Option<crate::dashboard::Dashboard> {
        let ctx = &self.ctx;
        ctx.config.dashboard.enabled.then(|| {
            crate::dashboard::Dashboard::new(
                ctx.store.clone(),
                ctx.js.clone(),
                ctx.subjects.clone(),
                ctx.metrics.clone(),
                &ctx.config.dashboard,
            )
        })
    }

    /// Whether this replica reaches Redis and NATS now (for `/readyz` and tests).
    pub fn readiness(&self) -> Readiness {
        self.ctx.readiness.clone()
    }

    /// Consumes events until `shutdown` resolves; then drains the batches in flight.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut background = JoinSet::new();
        if let Some(spans) = self.spans.take() {
            background.spawn(otlp::run_exporter(self.ctx.clone(), spans, stop_rx.clone()));
        }
        background.spawn(maintenance::run_maintenance(
            self.ctx.clone(),
            stop_rx.clone(),
        ));
        background.spawn(maintenance::answer_status_queries(
            self.ctx.clone(),
            stop_rx.clone(),
        ));
        background.spawn(signals::run_signals(self.ctx.clone(), stop_rx.clone()));
        background.spawn(grants::run_resender(self.ctx.clone(), stop_rx.clone()));
        background.spawn(readiness::run_probe(self.ctx.clone(), stop_rx.clone()));
        let (ctx, stop) = (self.ctx.clone(), stop_rx.clone());
        background.spawn(async move { ctx.dispatcher.run(&ctx, stop).await });
        let (lanes_stop_tx, lanes_stop) = watch::channel(false);
        let lanes = async {
            tokio::try_join!(
                self.consume(&self.control, "control", lanes_stop.clone()),
                self.consume(&self.submits, "submit", lanes_stop.clone()),
            )
        };
        tokio::pin!(lanes);
        let result = tokio::select! {
            result = &mut lanes => result,
            _ = shutdown => {
                let _ = lanes_stop_tx.send(true);
                lanes.await
            }
        }
        .map(|_| ());
        let _ = stop_tx.send(true);
        while background.join_next().await.is_some() {}
        tracing::info!("optimizer stopped");
        result
    }

    /// One lane: pulls batches and processes up to MAX_CONCURRENT_COORDINATIONS at once, until
    /// `stop` turns true; then finishes the batches in flight.
    async fn consume(
        &self,
        consumer: &jetstream::consumer::PullConsumer,
        lane: &'static str,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let batch_size = self.ctx.config.coordination.batch_size;
        let permits = Arc::new(Semaphore::new(
            self.ctx.config.coordination.max_concurrent_coordinations,
        ));
        let mut in_flight = JoinSet::new();
        // Chunks of a request are processed as they arrive, so one open request at a time costs
        // no concurrency.
        let mut puller = transport::Puller::new(consumer.clone(), batch_size, PULL_EXPIRES, lane);
        // Events are pulled only while Redis answers: see readiness.rs.
        while self.ctx.readiness.redis_reachable(&mut stop).await {
            let Some(batch) = puller.next_chunk(&mut stop).await else {
                break;
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let ctx = self.ctx.clone();
            in_flight.spawn(async move {
                batch::process_batch(&ctx, batch).await;
                drop(permit);
            });
            while in_flight.try_join_next().is_some() {}
        }
        tracing::info!(
            lane,
            in_flight = in_flight.len(),
            "shutting down: finishing batches in flight"
        );
        while in_flight.join_next().await.is_some() {}
        Ok(())
    }
}

/// How long one pull request for events waits on the server before it is renewed.
const PULL_EXPIRES: std::time::Duration = std::time::Duration::from_secs(1);

/// Connects and runs one replica until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    Optimizer::connect(config, Faults::default())
        .await?
        .run(shutdown)
        .await
}

/// Writes this replica's budget definitions to Redis, so every replica's grants apply the same
/// numbers; a definition another replica wrote differently is replaced (the last to start wins)
/// and said so in the log.
async fn define_budgets(
    store: &Store,
    budgets: &[crate::config::BudgetConfig],
) -> Result<(), Error> {
    let verdicts = store.define_budgets(budgets).await?;
    for (budget, verdict) in budgets.iter().zip(verdicts) {
        if verdict == crate::state::Defined::Changed {
            tracing::warn!(budget = %budget.name, limit = budget.limit, "budget defined differently in Redis (another replica's config): replaced by this one's");
        }
    }
    Ok(())
}
