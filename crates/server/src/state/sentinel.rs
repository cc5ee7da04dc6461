//! [`SentinelConnection`]: a Redis primary found through Sentinel, followed across failovers.
//!
//! redis-rs (1.8, feature `sentinel`) finds the primary: [`Sentinel::async_master_for`] asks
//! the sentinels in turn for the address of the named master and checks with ROLE that the node
//! there really is a primary. It does not follow a failover: the client it returns keeps talking
//! to that one address. So this type keeps the primary's multiplexed connection and looks the
//! primary up again when the connection shows that the primary may have changed: the connection
//! broke or timed out (the primary died or is cut off), or the node answered READONLY (it came
//! back, or stayed, as a replica) or NOREPLICAS (it lost its replicas, as a primary cut off by a
//! partition does when `min-replicas-to-write` is set).
//!
//! A primary that is demoted while alive (SENTINEL FAILOVER, or a failover decided while it was
//! cut off from the sentinels) keeps accepting writes until the sentinels reconfigure it, which
//! takes 10 to 30 seconds, and its resync as a replica then discards them. Errors do not show
//! that, so a watcher task also listens to the sentinels' `+switch-master` announcements and
//! drops the connection the moment one names this primary; what the old primary took between
//! the promotion and the announcement is still lost (docs/operations.md). The watcher follows
//! one sentinel at a time, moves to the next when that one goes away, and ends with the last
//! clone of the connection.
//!
//! The command that met the sign is not retried here: whether it took effect on the old primary
//! is unknown, and the error goes up as a retryable one (`switchyard_client::error`), so the
//! optimizer NAKs the event and applies it again later, which its transitions make idempotent.
//! Until the sentinels have promoted a replica every lookup fails the same way (the old address,
//! refused), and events wait in their redelivery back-off (the optimizer's Redis probe stops
//! pulling new ones meanwhile).
//!
//! Concurrent commands that need the primary while it is being looked up share one lookup
//! (a [`Shared`] future in the state), so a batch that fails at once does not send a burst of
//! lookups to the sentinels. The state's lock is never held across an `.await`: it is taken to
//! clone the connection or the lookup, and again to store the result.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::oneshot;

use crate::config::RedisConfig;
use switchyard_client::error::{Error, ErrorKind};

/// The primary named by the sentinels, cheap to clone: clones share the connection and the
/// lookup.
#[derive(Clone)]
pub struct SentinelConnection {
    target: Arc<Target>,
    state: Arc<Mutex<State>>,
    /// Dropped with the last clone, which ends the watcher (its receiver resolves).
    _watching: Arc<oneshot::Sender<()>>,
}

/// What a lookup needs; apart from the state, so a lookup in the state holds no reference to it.
struct Target {
    /// The sentinels' URLs.
    sentinels: Vec<String>,
    /// The name the sentinels know the primary by.
    master: String,
    /// How to log in to the primary (`redis.username` / `redis.password_file`); the sentinels
    /// get the login of their URLs, since they often have an ACL of their own or none.
    node: Option<SentinelNodeConnectionInfo>,
    /// The timeouts of the connection to the primary.
    timeouts: AsyncConnectionConfig,
    /// How long one lookup (sentinels, ROLE, connecting) may take in all.
    lookup_within: Duration,
}

/// The primary's address and a connection to it, as one lookup found them.
type Found = (String, MultiplexedConnection);
type Lookup = Shared<BoxFuture<'static, RedisResult<Found>>>;

/// `generation` counts lookups, so a result or a failure is only applied to the connection it
/// came from (a command that failed on an old connection does not drop a newer one).
enum State {
    Ready {
        generation: u64,
        conn: MultiplexedConnection,
    },
    Looking {
        generation: u64,
        lookup: Lookup,
    },
    Lost {
        generation: u64,
    },
}

impl SentinelConnection {
    /// `redis.url` lists the sentinels, `redis.sentinel_master` names the primary. Looks the
    /// primary up at once, so a deployment without one is reported at start-up.
    pub(crate) async fn open(config: &RedisConfig) -> Result<SentinelConnection, Error> {
        let sentinels: Vec<String> = super::seed_urls(&config.url)
            .into_iter()
            .map(str::to_string)
            .collect();
        // Checked here as well as in validation: the sentinel URLs must parse.
        Sentinel::build(sentinels.clone())
            .map_err(|e| Error::with_source(ErrorKind::Config, "invalid redis.url", e))?;
        let connection_timeout = Duration::from_millis(config.connection_timeout_ms);
        let response_timeout = Duration::from_millis(config.response_timeout_ms);
        let node = super::connection::Login::of(config)?.map(|login| {
            let settings = login.apply(redis::RedisConnectionInfo::default());
            SentinelNodeConnectionInfo::default().set_redis_connection_info(settings)
        });
        let target = Target {
            sentinels,
            master: config.sentinel_master.clone(),
            node,
            timeouts: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connection_timeout))
                .set_response_timeout(Some(response_timeout)),
            lookup_within: connection_timeout + response_timeout,
        };
        let (watching, stop) = oneshot::channel();
        let conn = SentinelConnection {
            target: Arc::new(target),
            state: Arc::new(Mutex::new(State::Lost { generation: 0 })),
            _watching: Arc::new(watching),
        };
        conn.primary().await.map_err(|e| {
            super::connection::refused_login(config, &e).unwrap_or_else(|| e.into())
        })?;
        let state = Arc::downgrade(&conn.state);
        tokio::spawn(watch_switches(Arc::clone(&conn.target), state, stop));
        Ok(conn)
    }

    /// The primary's connection and its generation: the current one, or the result of the
    /// lookup under way, or of a new lookup.
    async fn primary(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let (generation, lookup) = {
            let mut state = self.lock();
            match &*state {
                State::Ready { generation, conn } => return Ok((*generation, conn.clone())),
                State::Looking { generation, lookup } => (*generation, lookup.clone()),
                State::Lost { generation } => {
                    let generation = generation + 1;
                    let lookup = look_up(Arc::clone(&self.target)).boxed().shared();
                    *state = State::Looking {
                        generation,
                        lookup: lookup.clone(),
                    };
                    (generation, lookup)
                }
            }
        };
        let found = lookup.await;
        let mut state = self.lock();
        let current = matches!(&*state, State::Looking { generation: g, .. } if *g == generation);
        match found {
            Ok((address, conn)) => {
                if current {
                    tracing::info!(%address, master = %self.target.master, "redis primary found through the sentinels");
                    *state = State::Ready {
                        generation,
                        conn: conn.clone(),
                    };
                }
                Ok((generation, conn))
            }
            Err(e) => {
                if current {
                    *state = State::Lost { generation };
                }
                Err(e)
            }
        }
    }

    /// After `result` came from the connection of `generation`: if it is a sign that the
    /// primary may have changed, drops that connection so the next command looks it up again.
    fn watch<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && primary_may_have_changed(e)
        {
            let mut state = self.lock();
            if matches!(&*state, State::Ready { generation: g, .. } if *g == generation) {
                tracing::warn!(error = %e, master = %self.target.master, "redis primary lost; asking the sentinels again");
                *state = State::Lost { generation };
            }
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is replaced whole under the lock, so a panic elsewhere cannot leave it torn.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long the watcher waits before it tries the next sentinel.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// Follows `+switch-master` on one sentinel after another until `stop` resolves (the last clone
/// of the connection is gone) or the state is gone.
async fn watch_switches(
    target: Arc<Target>,
    state: Weak<Mutex<State>>,
    mut stop: oneshot::Receiver<()>,
) {
    for (round, url) in target.sentinels.iter().cycle().enumerate() {
        tokio::select! {
            _ = &mut stop => return,
            ended = follow_switches(&target, url, &state, round > 0) => {
                tracing::debug!(sentinel = %url, ?ended, "stopped following a sentinel");
            }
        }
        if state.upgrade().is_none() {
            return;
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
        }
    }
}

/// Subscribes to `+switch-master` on the sentinel at `url` and drops the primary's connection
/// on every switch of this master; returns when the subscription ends. A switch may have passed
/// while no sentinel was followed, so a `resubscribed` watcher drops it once subscribed, too
/// (one lookup); not when no sentinel answers, which would stop a healthy primary being used.
async fn follow_switches(
    target: &Target,
    url: &str,
    state: &Weak<Mutex<State>>,
    resubscribed: bool,
) -> RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe("+switch-master").await?;
    if resubscribed {
        forget_primary(state, "following the sentinels again");
    }
    let mut messages = pubsub.on_message();
    while let Some(message) = futures::StreamExt::next(&mut messages).await {
        // "<master> <old ip> <old port> <new ip> <new port>"
        let payload: String = message.get_payload()?;
        if payload.split(' ').next() == Some(target.master.as_str()) {
            forget_primary(state, "the sentinels switched the primary");
        }
    }
    Ok(())
}

/// Drops whatever connection or lookup the state holds, so the next command looks up anew.
fn forget_primary(state: &Weak<Mutex<State>>, why: &str) {
    let Some(state) = state.upgrade() else {
        return;
    };
    let mut state = lock(&state);
    let generation = match &*state {
        State::Ready { generation, .. }
        | State::Looking { generation, .. }
        | State::Lost { generation } => *generation,
    };
    tracing::info!(why, "asking the sentinels for the redis primary again");
    *state = State::Lost { generation };
}

/// Asks the sentinels for the primary, checks its role and connects, within the target's bound.
async fn look_up(target: Arc<Target>) -> RedisResult<Found> {
    let lookup = async {
        let mut sentinel = Sentinel::build(target.sentinels.clone())?;
        let client = sentinel
            .async_master_for(&target.master, target.node.as_ref())
            .await?;
        let address = client.get_connection_info().addr().to_string();
        let conn = client
            .get_multiplexed_async_connection_with_config(&target.timeouts)
            .await?;
        Ok((address, conn))
    };
    match tokio::time::timeout(target.lookup_within, lookup).await {
        Ok(found) => {
            if let Err(e) = &found {
                tracing::debug!(error = %e, master = %target.master, "no redis primary from the sentinels yet");
            }
            found
        }
        Err(_) => Err(RedisError::from(io::Error::new(
            io::ErrorKind::TimedOut,
            "the sentinels named no reachable primary in time",
        ))),
    }
}

/// Whether `e` says the primary may be another node now (see the module doc).
pub(crate) fn primary_may_have_changed(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(e.code(), Some("READONLY" | "NOREPLICAS" | "MASTERDOWN"))
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.primary().await?;
            let result = conn.req_packed_command(cmd).await;
            self.watch(generation, result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.primary().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            self.watch(generation, result)
        })
    }

    /// The sentinels are asked for the primary with the default node settings, database 0.
    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::primary_may_have_changed;
    use redis::{ErrorKind, RedisError};

    fn server_error(line: &str) -> RedisError {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).expect("parses");
        match value {
            redis::Value::ServerError(e) => e.into(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn a_dead_or_demoted_primary_is_looked_up_again_and_a_refusal_is_not() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(primary_may_have_changed(&RedisError::from(reset)));
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert!(primary_may_have_changed(&RedisError::from(timeout)));
        assert!(primary_may_have_changed(&server_error(
            "READONLY You can't write against a read only replica."
        )));
        assert!(primary_may_have_changed(&server_error(
            "NOREPLICAS Not enough good replicas to write."
        )));
        assert!(!primary_may_have_changed(&server_error(
            "ERR Error running script"
        )));
        assert!(!primary_may_have_changed(&server_error(
            "NOSCRIPT No matching script."
        )));
        let refused = RedisError::from((ErrorKind::UnexpectedReturnType, "not a list"));
        assert!(!primary_may_have_changed(&refused));
    }
}
