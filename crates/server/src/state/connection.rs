//! [`Connection`]: one connection type for a single Redis, a primary under Sentinel and a Redis
//! Cluster, so every command and script of the store takes one code path whatever the topology.
//!
//! All kinds are multiplexed handles, cheap to clone. Under Sentinel the primary is looked up
//! through the sentinels and again after a failover (`sentinel.rs`). On a cluster the client routes each
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
    ClientTlsConfig, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    RedisFuture, RedisResult, TlsCertificates, Value,
};

use super::sentinel::SentinelConnection;
use crate::config::RedisConfig;
use switchyard_client::error::{Error, ErrorKind};

/// A connection to a single Redis (reconnecting by itself), to the primary the sentinels name
/// (following failovers), or to a Redis Cluster (following the cluster's slot map, MOVED and ASK
/// redirections and failovers).
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Sentinel(SentinelConnection),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects as `redis.cluster` and `redis.sentinel_master` say, with the configured timeouts.
    pub async fn open(config: &RedisConfig) -> Result<Connection, Error> {
        if config.cluster {
            open_cluster(config).await
        } else if !config.sentinel_master.is_empty() {
            Ok(Connection::Sentinel(
                SentinelConnection::open(config).await?,
            ))
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
            Connection::Sentinel(conn) => cmd.query_async(conn).await,
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
/// With `redis.password_file` set, it logs in as `redis.username` (or, without one, as the
/// default user) with that password instead of the URL's login.
pub fn redis_client(config: &RedisConfig) -> Result<redis::Client, Error> {
    let invalid = |e| Error::with_source(ErrorKind::Config, "invalid redis.url", e);
    let mut info = config.url.trim().into_connection_info().map_err(invalid)?;
    if let Some(login) = Login::of(config)? {
        let settings = login.apply(info.redis_settings().clone());
        info = info.set_redis_settings(settings);
    }
    let client = match tls_certificates(config)? {
        Some(certificates) => redis::Client::build_with_tls(info, certificates),
        None => redis::Client::open(info),
    };
    client.map_err(invalid)
}

/// `redis.username` and the password read from `redis.password_file`.
pub(crate) struct Login {
    pub(crate) username: Option<String>,
    pub(crate) password: String,
}

impl Login {
    /// The configured login, `None` without a password file (the URL's login, if any, applies).
    /// The file is read on every connect, so a rotated password is picked up on a restart.
    pub(crate) fn of(config: &RedisConfig) -> Result<Option<Login>, Error> {
        let file = config.password_file.trim();
        if file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("cannot read redis.password_file {file}"),
                e,
            )
        })?;
        let password = text.lines().next().unwrap_or("").trim().to_string();
        if password.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("redis.password_file {file} holds no password"),
            ));
        }
        let username = Some(config.username.trim().to_string()).filter(|u| !u.is_empty());
        Ok(Some(Login { username, password }))
    }

    pub(crate) fn apply(&self, settings: RedisConnectionInfo) -> RedisConnectionInfo {
        let settings = settings.set_password(&self.password);
        match &self.username {
            Some(username) => settings.set_username(username),
            None => settings,
        }
    }
}

/// Who a connection logs in as, for messages: the configured user, the URL's, or `default`.
fn login_name(config: &RedisConfig) -> String {
    let from_url = || {
        let url = seed_urls(&config.url)
            .first()?
            .into_connection_info()
            .ok()?;
        url.redis_settings().username().map(str::to_string)
    };
    let configured = config.username.trim();
    if !configured.is_empty() {
        configured.to_string()
    } else {
        from_url().unwrap_or_else(|| "default".to_string())
    }
}

/// `redis.url` without the passwords it may carry, for messages and logs.
pub(crate) fn redacted_url(url: &str) -> String {
    seed_urls(url)
        .iter()
        .map(|seed| match (seed.split_once("://"), seed.rfind('@')) {
            (Some((scheme, rest)), Some(_)) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                match authority.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let user = userinfo.split(':').next().unwrap_or("");
                        format!("{scheme}://{user}:***@{host}{path}")
                    }
                    None => seed.to_string(),
                }
            }
            _ => seed.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
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
    if let Some(refused) = refused_login(config, &e) {
        return refused;
    }
    let hint = if config.uses_tls() {
        ""
    } else {
        " (if that Redis serves TLS only, use rediss:// and redis.tls_ca_file)"
    };
    let message = format!(
        "cannot connect to Redis at {}{hint}",
        redacted_url(&config.url)
    );
    // Retryable or not as any other failure of the same Redis error.
    let kind = Error::from(e.clone()).kind();
    Error::with_source(kind, message, e)
}

/// A login or permission refusal as a configuration error (retrying does not help), naming the
/// user and the password file but never the password; `None` for any other error.
pub(crate) fn refused_login(config: &RedisConfig, e: &redis::RedisError) -> Option<Error> {
    let user = login_name(config);
    let url = redacted_url(&config.url);
    let text = e.to_string();
    let message = if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
    {
        let from = match config.password_file.trim() {
            "" => "the password in redis.url".to_string(),
            file => format!("the password in redis.password_file {file}"),
        };
        format!(
            "Redis at {url} refused the login of user {user:?}: {from} is wrong, or the user is off or missing from the server's ACL"
        )
    } else if e.code() == Some("NOAUTH") {
        format!(
            "Redis at {url} wants a login: set redis.username and redis.password_file (REDIS_USERNAME, REDIS_PASSWORD_FILE)"
        )
    } else if e.code() == Some("NOPERM") {
        format!(
            "the Redis user {user:?} at {url} lacks a permission Switchyard needs (its ACL must come from `switchyard auth init` for redis.key_prefix {:?})",
            config.key_prefix
        )
    } else {
        return None;
    };
    Some(Error::with_source(ErrorKind::Config, message, e.clone()))
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
    // The same login on every node; without one, the first seed's URL login applies to all.
    if let Some(login) = Login::of(config)? {
        builder = builder.password(&login.password);
        if let Some(username) = &login.username {
            builder = builder.username(username);
        }
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
            Connection::Sentinel(conn) => conn.req_packed_command(cmd),
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
            Connection::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Sentinel(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{redacted_url, seed_urls};

    #[test]
    fn passwords_in_the_url_are_not_repeated() {
        assert_eq!(
            redacted_url("redis://u:s3cret@h:1/0"),
            "redis://u:***@h:1/0"
        );
        assert_eq!(redacted_url("redis://:s3cret@h:1"), "redis://:***@h:1");
        assert_eq!(
            redacted_url("redis://a:1, rediss://x:y@b:2/"),
            "redis://a:1,rediss://x:***@b:2/"
        );
        assert_eq!(redacted_url("redis://h:1/"), "redis://h:1/");
    }

    #[test]
    fn seeds_are_split_on_commas() {
        assert_eq!(
            seed_urls("redis://a:1, redis://b:2 ,"),
            ["redis://a:1", "redis://b:2"]
        );
        assert_eq!(seed_urls("redis://a:1/"), ["redis://a:1/"]);
    }
}
