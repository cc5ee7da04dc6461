//! Work a replica does besides events: every OPTIMIZATION_INTERVAL it expires agents past their
//! lease, dispatches the queue (capacity may have freed without an event
//! reaching this replica), and refreshes the fleet gauges; the holder of the sync lease
//! broadcasts COORDINATION_SYNC and exports the deployment-wide gauges; and it answers status
//! queries.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::Ctx;
use super::publish::OPTIMIZER_SENDER;
use switchyard_client::error::Error;
use switchyard_protocol::{Envelope, MessageType, StatusQuery, now_ms};

pub(crate) async fn run_maintenance(ctx: Arc<Ctx>, stop: watch::Receiver<bool>) {
    let period = Duration::from_secs_f64(ctx.config.coordination.optimization_interval_s);
    run_every(period, stop, "maintenance pass", || maintenance_pass(&ctx)).await
}

/// Runs `pass` every `period` until `stop` turns true. A failed pass is logged and retried at the
/// next tick; a pass that overruns delays the next one rather than bunching them up.
pub(crate) async fn run_every<F, Fut, T>(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = pass().await {
            tracing::warn!(error = %e, "{what} failed; retrying next interval");
        }
    }
}

/// How many intervals the coordination-sync lease outlives its last renewal: a holder that
/// misses a pass keeps it, one that stopped hands it over within this many intervals.
const SYNC_LEASE_INTERVALS: f64 = 3.0;

async fn maintenance_pass(ctx: &Ctx) -> Result<(), Error> {
    let result = maintain(ctx).await;
    if result.is_err() {
        // Its lease may lapse before the next pass: stop exporting the global gauges rather than
        // risk a second replica exporting them too.
        ctx.metrics.reporting.set(0);
    }
    result
}

async fn maintain(ctx: &Ctx) -> Result<(), Error> {
    super::liveness::expire_silent_agents(ctx).await?;
    ctx.dispatcher.dispatch_after_commit().await;
    // Without the agent table: reading every agent each interval would make an idle fleet's
    // cost grow with its size. The table is a status query away; the utilization gauges come
    // from the dispatcher's fleet cache.
    let totals = StatusQuery {
        include_agents: false,
        ..StatusQuery::default()
    };
    let sync = ctx.store.coordination_sync(&totals).await?;
    ctx.metrics.queue_depth.set(sync.queue_depth as f64);
    ctx.metrics.waiting_depth.set(sync.waiting_depth as f64);
    broadcast_sync(ctx, sync).await
}

/// Publishes the coordination snapshot on `<prefix>.coordination_sync`, once per interval for
/// the whole deployment: the replica holding the sync lease in Redis publishes and exports the
/// global gauges ([`crate::metrics::GLOBAL_GAUGES`]), the others skip. The holder renews the
/// lease each pass, so the reporting replica changes only when its holder stops.
async fn broadcast_sync(
    ctx: &Ctx,
    sync: switchyard_protocol::CoordinationSync,
) -> Result<(), Error> {
    let interval_s = ctx.config.coordination.optimization_interval_s;
    let ttl_ms = (interval_s * SYNC_LEASE_INTERVALS * 1000.0) as u64;
    let held = ctx
        .store
        .take_sync_lease(&ctx.replica_id, ttl_ms.max(1))
        .await?;
    ctx.metrics.reporting.set(i64::from(held));
    if !held {
        return Ok(());
    }
    super::backlog::refresh_backlog_gauges(ctx).await;
    let envelope = Envelope::new(
        OPTIMIZER_SENDER,
        MessageType::CoordinationSync,
        sync,
        now_ms(),
    );
    let subject = ctx.subjects.unaddressed(MessageType::CoordinationSync);
    switchyard_client::transport::publish_core(&ctx.client, subject, &envelope).await?;
    ctx.metrics
        .messages
        .with_label_values(&[MessageType::CoordinationSync.as_str(), "out"])
        .inc();
    Ok(())
}

/// Answers `<prefix>.status_query` (core request/reply, one replica per query via a queue group)
/// with a COORDINATION_SYNC snapshot.
pub(crate) async fn answer_status_queries(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let subject = ctx.subjects.unaddressed(MessageType::StatusQuery);
    let mut sub = match ctx
        .client
        .queue_subscribe(subject, ctx.subjects.optimizer_queue_group())
        .await
    {
        Ok(sub) => sub,
        Err(e) => return tracing::error!(error = %e, "cannot subscribe to status queries"),
    };
    loop {
        let message = tokio::select! {
            _ = stop.changed() => return,
            m = sub.next() => m,
        };
        let Some(message) = message else { return };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let query = serde_json::from_slice::<Envelope<StatusQuery>>(&message.payload)
            .map(|e| e.payload)
            .unwrap_or_default();
        let body = match ctx.store.coordination_sync(&query).await {
            Ok(sync) => Envelope::new(
                OPTIMIZER_SENDER,
                MessageType::CoordinationSync,
                sync,
                now_ms(),
            ),
            Err(e) => {
                if let Some(held_back) = ctx.warnings.due("status query failed") {
                    tracing::warn!(error = %e, held_back, "status query failed");
                }
                continue;
            }
        };
        if let Ok(bytes) = serde_json::to_vec(&body) {
            let _ = ctx.client.publish(reply_to, bytes.into()).await;
        }
    }
}
