//! The JetStream backlog as gauges, refreshed by the reporting replica each maintenance pass:
//! how many events each shared consumer has not delivered yet or not seen acknowledged, and how
//! many entries the dead-letter stream holds.

use super::Ctx;

/// Refreshes the consumer lag and dead-letter gauges. A failed read is logged (rate-limited)
/// and leaves the gauges as they were: it must not cost the interval's broadcast.
pub(crate) async fn refresh_backlog_gauges(ctx: &Ctx) {
    let events = ctx.subjects.events_stream();
    match ctx.js.get_stream(&events).await {
        Ok(stream) => {
            for consumer in [
                ctx.subjects.optimizer_consumer(),
                ctx.subjects.optimizer_control_consumer(),
            ] {
                match stream.consumer_info(&consumer).await {
                    Ok(info) => set_consumer_gauges(ctx, &consumer, &info),
                    Err(e) => warn_unread(ctx, &e),
                }
            }
        }
        Err(e) => warn_unread(ctx, &e),
    }
    match ctx.js.get_stream(ctx.subjects.dead_letter_stream()).await {
        Ok(stream) => ctx
            .metrics
            .dead_letter_depth
            .set(stream.cached_info().state.messages as f64),
        Err(e) => warn_unread(ctx, &e),
    }
}

fn set_consumer_gauges(ctx: &Ctx, consumer: &str, info: &async_nats::jetstream::consumer::Info) {
    let m = &ctx.metrics;
    m.consumer_pending
        .with_label_values(&[consumer])
        .set(info.num_pending as f64);
    m.consumer_ack_pending
        .with_label_values(&[consumer])
        .set(info.num_ack_pending as f64);
}

fn warn_unread(ctx: &Ctx, e: &dyn std::fmt::Display) {
    if let Some(held_back) = ctx.warnings.due("backlog gauges not refreshed") {
        tracing::warn!(error = %e, held_back, "backlog gauges not refreshed");
    }
}
