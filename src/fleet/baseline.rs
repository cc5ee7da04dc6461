//! The bare allocation loop: the reference `switchyard bench --baseline` measures lifecycles
//! against. It does the minimum an allocation needs on this machine and these servers, with
//! nothing of Switchyard's own on the path: pull a batch of requests from a work-queue stream,
//! reserve capacity for each with one Lua script (EVALSHA), publish a grant to JetStream with a
//! `Nats-Msg-Id` and wait for the server's ack, then ack the request. Requests in a batch are
//! handled concurrently, batches one after the other.
//!
//! Everything it creates (its stream, its keys) carries a random name and is removed afterwards,
//! so it can run next to a live deployment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;

use switchyard_client::error::{Error, ErrorKind, nats_error};
use switchyard_client::transport::msg_id_headers;
use switchyard_server::config::RedisConfig;

/// Requests pulled at once.
const BATCH: usize = 256;
/// How far the producer keeps ahead of the allocator, so a pull never waits for work.
const AHEAD: u64 = 4 * BATCH as u64;
/// Publishes the producer keeps awaiting their ack at once.
const PRODUCER_INFLIGHT: usize = 512;
/// Counter hashes the reservations spread over (as over a fleet's agents).
const COUNTERS: usize = 64;
/// How long a pull waits for a full batch before returning what it has.
const PULL_EXPIRES: Duration = Duration::from_millis(200);

/// Checks that the reservation fits the counter hash's capacity, then reserves it.
const RESERVE_LUA: &str = r"
local c = redis.call('HMGET', KEYS[1], 'capacity', 'reserved')
local want = tonumber(ARGV[1])
if (tonumber(c[2]) or 0) + want > (tonumber(c[1]) or 0) then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', want)
return 1
";

/// What the bare loop managed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BaselineResult {
    pub(crate) allocations: u64,
    pub(crate) seconds: f64,
}

impl BaselineResult {
    pub(crate) fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.allocations as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The loop's own stream, subjects and keys.
struct Names {
    stream: String,
    work: String,
    grant: String,
    counters: Vec<String>,
}

impl Names {
    fn random() -> Names {
        let rand = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        Names {
            stream: format!("BASELINE_{rand}"),
            work: format!("baseline.{rand}.work"),
            grant: format!("baseline.{rand}.grant"),
            counters: (0..COUNTERS)
                .map(|i| format!("baseline:{rand}:counter:{i}"))
                .collect(),
        }
    }
}

/// Everything one allocation needs.
struct Allocator {
    js: jetstream::Context,
    redis: redis::aio::MultiplexedConnection,
    script: redis::Script,
    names: Names,
    allocated: AtomicU64,
    /// Requests seen, to spread reservations over the counter hashes in turn.
    seen: AtomicU64,
}

/// Runs the bare loop for `seconds` on the servers behind `nats` and `redis`, then removes its
/// stream and keys.
pub(crate) async fn run_baseline(
    nats: async_nats::Client,
    redis: &RedisConfig,
    seconds: f64,
) -> Result<BaselineResult, Error> {
    let redis = switchyard_server::state::redis_client(redis)?
        .get_multiplexed_async_connection()
        .await?;
    let allocator = Arc::new(Allocator {
        js: jetstream::new(nats),
        redis,
        script: redis::Script::new(RESERVE_LUA),
        names: Names::random(),
        allocated: AtomicU64::new(0),
        seen: AtomicU64::new(0),
    });
    let consumer = allocator.set_up().await;
    let result = match consumer {
        Ok(consumer) => allocator.clone().measure(consumer, seconds).await,
        Err(e) => Err(e),
    };
    allocator.clean_up().await;
    result
}

impl Allocator {
    async fn set_up(&self) -> Result<consumer::PullConsumer, Error> {
        let mut conn = self.redis.clone();
        let mut pipe = redis::pipe();
        for key in &self.names.counters {
            pipe.hset(key, "capacity", i64::MAX / 2).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        let stream = self
            .js
            .create_stream(stream::Config {
                name: self.names.stream.clone(),
                subjects: vec![self.names.work.clone(), self.names.grant.clone()],
                // Like the events stream: requests are deleted once acked; grants stay stored.
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_error("cannot create the baseline stream", e))?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("allocator".into()),
                filter_subject: self.names.work.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_error("cannot create the baseline consumer", e))
    }

    /// Best effort: a leftover stream or key is logged, not an error of the measurement.
    async fn clean_up(&self) {
        if let Err(e) = self.js.delete_stream(&self.names.stream).await {
            tracing::warn!(stream = %self.names.stream, error = %e, "baseline stream not deleted");
        }
        let mut conn = self.redis.clone();
        let deleted: Result<(), _> = redis::cmd("DEL")
            .arg(&self.names.counters)
            .query_async(&mut conn)
            .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "baseline keys not deleted");
        }
    }

    /// Runs producer and allocator side by side; the clock starts after the first batch, so
    /// connection set-up and the script's first load are not counted.
    async fn measure(
        self: Arc<Self>,
        consumer: consumer::PullConsumer,
        seconds: f64,
    ) -> Result<BaselineResult, Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let producer = tokio::spawn(self.clone().produce(stop_rx));
        let result = self.allocate_for(&consumer, seconds).await;
        let _ = stop_tx.send(true);
        match producer.await {
            Ok(Err(e)) if result.is_ok() => return Err(e),
            Err(e) => tracing::warn!(error = %e, "baseline producer panicked"),
            _ => {}
        }
        result
    }

    async fn allocate_for(
        &self,
        consumer: &consumer::PullConsumer,
        seconds: f64,
    ) -> Result<BaselineResult, Error> {
        self.allocate_batch(consumer).await?;
        let counted_from = self.allocated.load(Ordering::Relaxed);
        let started = Instant::now();
        let window = Duration::from_secs_f64(seconds.max(0.1));
        while started.elapsed() < window {
            self.allocate_batch(consumer).await?;
        }
        Ok(BaselineResult {
            allocations: self.allocated.load(Ordering::Relaxed) - counted_from,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Pulls up to one batch and allocates every request in it concurrently.
    async fn allocate_batch(&self, consumer: &consumer::PullConsumer) -> Result<(), Error> {
        let messages = consumer
            .batch()
            .max_messages(BATCH)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| nats_error("baseline pull failed", e))?;
        let batch: Vec<jetstream::Message> = messages
            .filter_map(|m| async move { m.ok() })
            .collect()
            .await;
        let results = futures::future::join_all(batch.iter().map(|m| self.allocate_one(m))).await;
        results.into_iter().collect()
    }

    async fn allocate_one(&self, request: &jetstream::Message) -> Result<(), Error> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as usize;
        let key = &self.names.counters[n % COUNTERS];
        let mut conn = self.redis.clone();
        let fits: i64 = self.script.key(key).arg(1).invoke_async(&mut conn).await?;
        if fits == 1 {
            let id = uuid::Uuid::new_v4().to_string();
            let grant = Bytes::from(format!(r#"{{"grant":"{id}","counter":"{key}"}}"#));
            self.js
                .publish_with_headers(self.names.grant.clone(), msg_id_headers(&id), grant)
                .await
                .map_err(|e| nats_error("baseline grant publish failed", e))?
                .await
                .map_err(|e| nats_error("baseline grant not acknowledged", e))?;
        }
        request
            .ack()
            .await
            .map_err(|e| Error::new(ErrorKind::Nats, format!("baseline ack failed: {e}")))?;
        self.allocated
            .fetch_add(u64::from(fits == 1), Ordering::Relaxed);
        Ok(())
    }

    /// Keeps [`AHEAD`] requests waiting in the stream until `stop` turns true.
    async fn produce(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        let payload = Bytes::from_static(br#"{"task":"baseline","resources":{"cpu":1.0}}"#);
        let mut pending = FuturesUnordered::new();
        let mut published: u64 = 0;
        while !*stop.borrow() {
            let backlog = published.saturating_sub(self.allocated.load(Ordering::Relaxed));
            if backlog < AHEAD && pending.len() < PRODUCER_INFLIGHT {
                let ack = self
                    .js
                    .publish(self.names.work.clone(), payload.clone())
                    .await
                    .map_err(|e| nats_error("baseline request publish failed", e))?;
                pending.push(ack.into_future());
                published += 1;
                continue;
            }
            tokio::select! {
                _ = stop.changed() => break,
                Some(acked) = pending.next(), if !pending.is_empty() => {
                    acked.map_err(|e| nats_error("baseline request not acknowledged", e))?;
                }
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        Ok(())
    }
}
