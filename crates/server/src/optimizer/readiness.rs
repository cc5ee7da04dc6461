//! Whether this replica can reach its dependencies now: served as `/readyz`, and used to stop
//! pulling events while Redis is out of reach. Pulling on regardless would take events it cannot
//! apply and spend their deliveries one by one until they are dead-lettered, although the
//! trouble is the replica's, not the events'.
//!
//! A probe reads the Redis clock and the NATS connection state every second; a batch that fails
//! with a Redis error marks Redis down at once, and the next successful probe marks it up again.
//! Only changes are logged, so a long outage writes two lines, not one per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::Ctx;
use super::maintenance::run_every;

/// How often the probe looks, and how long it waits for Redis to answer.
const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// The probe's latest view, shared by the lanes, the probe and the HTTP endpoint.
#[derive(Clone)]
pub struct Readiness {
    redis: watch::Sender<bool>,
    nats: Arc<AtomicBool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Readiness {
    /// Ready: a replica is built only after it connected to both.
    pub fn new() -> Readiness {
        Readiness {
            redis: watch::Sender::new(true),
            nats: Arc::new(AtomicBool::new(true)),
        }
    }

    /// `None` when ready, else what is out of reach (for `/readyz`).
    pub fn problem(&self) -> Option<String> {
        let redis = *self.redis.borrow();
        let nats = self.nats.load(Ordering::Relaxed);
        match (redis, nats) {
            (true, true) => None,
            (false, true) => Some("redis unreachable".into()),
            (true, false) => Some("nats unreachable".into()),
            (false, false) => Some("redis and nats unreachable".into()),
        }
    }

    pub(crate) fn set_redis(&self, reachable: bool) {
        let changed = self
            .redis
            .send_if_modified(|up| std::mem::replace(up, reachable) != reachable);
        if changed && reachable {
            tracing::info!("redis reachable again: pulling events");
        } else if changed {
            tracing::warn!("redis unreachable: no new events are pulled until it answers");
        }
    }

    fn set_nats(&self, reachable: bool) {
        if self.nats.swap(reachable, Ordering::Relaxed) != reachable {
            tracing::warn!(reachable, "nats connection state changed");
        }
    }

    /// Waits until Redis is reachable; false when `stop` turned true first.
    pub(crate) async fn redis_reachable(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut redis = self.redis.subscribe();
        tokio::select! {
            up = redis.wait_for(|up| *up) => up.is_ok(),
            _ = stop.wait_for(|stopped| *stopped) => false,
        }
    }
}

/// Probes Redis and NATS every second until `stop`.
pub(crate) async fn run_probe(ctx: Arc<Ctx>, stop: watch::Receiver<bool>) {
    run_every(PROBE_PERIOD, stop, "readiness probe", || probe(&ctx)).await
}

async fn probe(ctx: &Ctx) -> Result<(), switchyard_client::error::Error> {
    let clock = tokio::time::timeout(PROBE_PERIOD, ctx.store.redis_now_ms()).await;
    ctx.readiness.set_redis(matches!(clock, Ok(Ok(_))));
    let state = ctx.client.connection_state();
    ctx.readiness
        .set_nats(state == async_nats::connection::State::Connected);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_lanes_wait_while_redis_is_down_and_go_on_when_it_is_back() {
        let readiness = Readiness::new();
        let (_stop_tx, mut stop) = watch::channel(false);
        assert!(readiness.redis_reachable(&mut stop).await);
        readiness.set_redis(false);
        assert_eq!(readiness.problem().as_deref(), Some("redis unreachable"));
        let waiting = readiness.clone();
        let waiter = tokio::spawn(async move {
            let (_tx, mut stop) = watch::channel(false);
            waiting.redis_reachable(&mut stop).await
        });
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a lane must not pull while redis is down"
        );
        readiness.set_redis(true);
        let resumed = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(resumed, Ok(Ok(true))), "{resumed:?}");
        assert_eq!(readiness.problem(), None);
    }

    #[tokio::test]
    async fn stopping_ends_the_wait() {
        let readiness = Readiness::new();
        readiness.set_redis(false);
        let (stop_tx, mut stop) = watch::channel(false);
        let _ = stop_tx.send(true);
        assert!(!readiness.redis_reachable(&mut stop).await);
    }
}
