//! Error kinds callers can match on, each saying whether retrying can help.
//!
//! Modelled on nats.rs's `Error<Kind>`: one [`Error`] type carrying an [`ErrorKind`] and the
//! underlying source. [`Error::is_retryable`] tells transient infrastructure trouble (a broker or
//! store connection that failed, a timeout) from a request that will never succeed as sent.

use std::fmt;

/// What went wrong, coarse enough to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// NATS connection, publish or JetStream API failure. Retry with backoff.
    Nats,
    /// Redis connection trouble, or a server state that passes (loading, failover, busy script).
    /// Retry with backoff.
    Redis,
    /// Redis refused the command as sent (a script error, a wrong type, a refused argument):
    /// the same command fails the same way again. Do not retry.
    RedisRefused,
    /// A reply the code does not understand (a script answering what its caller does not
    /// expect): a defect, not a condition that passes. Do not retry.
    Unexpected,
    /// Waited longer than allowed for a reply or acknowledgement. Retry may help.
    Timeout,
    /// The request was refused by the coordinator (bad input, unknown agent, ...). Do not retry.
    Rejected,
    /// Input that cannot be decoded or fails validation. Do not retry.
    InvalidInput,
    /// Configuration is invalid. Fix the configuration.
    Config,
    /// The nats-server is too old or lacks JetStream. Upgrade the server.
    UnsupportedServer,
    /// A local server (test harness) could not be started.
    Harness,
    /// The component is shutting down.
    Shutdown,
}

impl ErrorKind {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Nats | ErrorKind::Redis | ErrorKind::Timeout
        )
    }
}

/// The library's error: a kind plus a human-readable message and an optional source.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The coordinator's reason code, for [`ErrorKind::Rejected`] (see `docs/protocol.md`).
    code: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            code: None,
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            code: None,
            source: Some(Box::new(source)),
        }
    }

    /// A refusal by the coordinator, with its reason code (e.g. `unknown_agent`).
    pub fn rejected(code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        Error {
            kind: ErrorKind::Rejected,
            message: format!("{code}: {}", message.into()),
            code: Some(code),
            source: None,
        }
    }

    /// The coordinator's reason code when the request was refused.
    pub fn reason_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        let kind = if err.is_timeout() {
            ErrorKind::Timeout
        } else if passes_with_a_failover(&err) {
            ErrorKind::Redis
        } else if matches!(err.retry_method(), redis::RetryMethod::NoRetry) {
            ErrorKind::RedisRefused
        } else {
            ErrorKind::Redis
        };
        Error::with_source(kind, "redis command failed", err)
    }
}

/// Replies that redis-rs counts as final but that a failover explains, so a later try succeeds:
/// NOREPLICAS (a primary cut off from its replicas refuses writes under `min-replicas-to-write`
/// until the sentinels promote another) and NOSCRIPT (`redis::Script` loads a script the node
/// lacks and runs it again; a second NOSCRIPT means the primary changed in between).
#[cfg(feature = "redis")]
fn passes_with_a_failover(err: &redis::RedisError) -> bool {
    matches!(err.code(), Some("NOREPLICAS" | "NOSCRIPT"))
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::with_source(ErrorKind::InvalidInput, "invalid JSON", err)
    }
}

/// Wraps any NATS error (connect, publish, JetStream API) as [`ErrorKind::Nats`].
pub fn nats_error(context: &str, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Nats, context.to_string(), err)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    #[test]
    fn redis_errors_say_whether_a_retry_can_help() {
        let dropped = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let dropped = Error::from(redis::RedisError::from(dropped));
        assert_eq!(dropped.kind(), ErrorKind::Redis);
        assert!(dropped.is_retryable());
        let refused = Error::from(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "not a list",
        )));
        assert_eq!(refused.kind(), ErrorKind::RedisRefused);
        assert!(!refused.is_retryable());
        for line in [
            "READONLY You can't write against a read only replica.",
            "NOREPLICAS Not enough good replicas to write.",
            "NOSCRIPT No matching script.",
        ] {
            let reply = redis::parse_redis_value(format!("-{line}\r\n").as_bytes());
            let Ok(redis::Value::ServerError(e)) = reply else {
                panic!("{line}: not an error reply");
            };
            let during_failover = Error::from(redis::RedisError::from(e));
            assert!(during_failover.is_retryable(), "{line}");
        }
        let script = redis::parse_redis_value(b"-ERR Error running script\r\n");
        let Ok(redis::Value::ServerError(e)) = script else {
            panic!("not an error reply");
        };
        assert!(!Error::from(redis::RedisError::from(e)).is_retryable());
    }
}
