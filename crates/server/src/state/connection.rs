//! [`Connection`]: one connection type for a single Redis and for a Redis Cluster, so every
//! command and script of the store takes one code path whatever the topology.
//!
//! Both kinds are multiplexed handles, cheap to clone. On a cluster the client routes each
//! command by its keys; every key of a deployment carries the same hash tag (`keys.rs`), so a
//! script or a pipeline always goes to the one node that serves the deployment's slot. Commands
//! that name no key go there too ([`Connection::query_in_slot`]); redis-rs alone would send
//! TIME to a random node, whose clock need not be the one the scripts read.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    ClientTlsConfig, Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, TlsCertificates,
    Value,
};

use crate::config::RedisConfig;
use switchyard_client::error::{Error, ErrorKind};

/// A connection to a single Redis (reconnecting by itself) or to a Redis Cluster (following the
/// cluster's slot map, MOVED and ASK redirections and failovers).
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects as `redis.cluster` says, with the configured timeouts.
    pub async fn open(config: &RedisConfig) -> Result<Connection, Error> {
        if config.cluster {
            open_cluster(config).await
        } else {
            open_single(config).await
        }
    }

    /// Runs a command that names no key (TIME) on the node serving the slot of `slot_key`; on a
    /// single Redis, simply runs it.
    pub async fn query_in_slot<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        slot_key: &str,
    ) -> RedisResult<T> {
        match self {
            Connection::Single(conn) => cmd.query_async(conn).await,
            Connection::Cluster(conn) => {
                let route = Route::with_key(slot_key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = conn.route_command(cmd.clone(), routing).await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }
}

/// A client for the single Redis of `config`: with its TLS files (CA, client certificate) when
/// any is set, which needs a `rediss://` URL; a `rediss://` URL alone trusts the system's roots.
/// Everything that opens a Redis connection for a deployment starts here, so every one of them
/// honours the same settings.
pub fn redis_client(config: &RedisConfig) -> Result<redis::Client, Error> {
    let url = config.url.trim();
    let client = match tls_certificates(config)? {
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
        None => redis::Client::open(url),
    };
    client.map_err(|e| Error::with_source(ErrorKind::Config, "invalid redis.url", e))
}

/// The TLS files of `config`, read; `None` when none is set.
fn tls_certificates(config: &RedisConfig) -> Result<Option<TlsCertificates>, Error> {
    let read = |setting: &str, file: &str| -> Result<Option<Vec<u8>>, Error> {
        if file.is_empty() {
            return Ok(None);
        }
        std::fs::read(file).map(Some).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("cannot read {setting} {file}"),
                e,
            )
        })
    };
    let root_cert = read("redis.tls_ca_file", &config.tls_ca_file)?;
    let cert = read("redis.tls_cert_file", &config.tls_cert_file)?;
    let key = read("redis.tls_key_file", &config.tls_key_file)?;
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

/// What a failed connection says: the URL, and for a plain URL that the server may want TLS (a
/// TLS-only Redis just closes a plain connection, which alone reads as a network fault).
fn cannot_connect(config: &RedisConfig, e: redis::RedisError) -> Error {
    let hint = if config.uses_tls() {
        ""
    } else {
        " (if that Redis serves TLS only, use rediss:// and redis.tls_ca_file)"
    };
    let message = format!("cannot connect to Redis at {}{hint}", config.url);
    // Retryable or not as any other failure of the same Redis error.
    let kind = Error::from(e.clone()).kind();
    Error::with_source(kind, message, e)
}

async fn open_single(config: &RedisConfig) -> Result<Connection, Error> {
    let client = redis_client(config)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_millis(config.response_timeout_ms)))
        .set_connection_timeout(Some(Duration::from_millis(config.connection_timeout_ms)))
        .set_number_of_retries(3);
    let conn = client
        .get_connection_manager_with_config(manager_config)
        .await
        .map_err(|e| cannot_connect(config, e))?;
    Ok(Connection::Single(conn))
}

/// `redis.url` lists the seed nodes, comma-separated: the client reads the whole cluster's
/// layout from the first that answers, so one seed is enough and more survive a seed being down.
async fn open_cluster(config: &RedisConfig) -> Result<Connection, Error> {
    let mut builder = ClusterClient::builder(seed_urls(&config.url))
        .connection_timeout(Duration::from_millis(config.connection_timeout_ms))
        .response_timeout(Duration::from_millis(config.response_timeout_ms))
        .retries(3);
    if let Some(certificates) = tls_certificates(config)? {
        builder = builder.certs(certificates);
    }
    let client = builder
        .build()
        .map_err(|e| Error::with_source(ErrorKind::Config, "invalid redis.url", e))?;
    let conn = client
        .get_async_connection()
        .await
        .map_err(|e| cannot_connect(config, e))?;
    Ok(Connection::Cluster(conn))
}

/// The seed URLs of `redis.url`: comma-separated, blanks around them ignored.
pub(crate) fn seed_urls(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::seed_urls;

    #[test]
    fn seeds_are_split_on_commas() {
        assert_eq!(
            seed_urls("redis://a:1, redis://b:2 ,"),
            ["redis://a:1", "redis://b:2"]
        );
        assert_eq!(seed_urls("redis://a:1/"), ["redis://a:1/"]);
    }
}
