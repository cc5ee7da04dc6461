//! Identities for a secured Switchyard deployment.
//!
//! # Layout
//!
//! * [`roles`] — the four roles and what each may publish and subscribe to, as permission
//!   templates built from the protocol's subject map.
//! * [`trust`] — the keys and JWTs of one deployment: operator, accounts, one scoped signing key
//!   per role, and the user JWTs they sign.
//! * [`directory`] — the files `switchyard auth` writes: the server's include file, the seeds,
//!   one `.creds` file per identity.
//! * [`redis_acl`] — the Redis ACL file: the default user off, the optimizer user limited to the
//!   deployment's keys and the commands Switchyard sends.
//! * `jwt` — encoding and signing NATS JWTs.

pub mod creds;
pub mod directory;
mod jwt;
pub mod redis_acl;
pub mod roles;
pub mod trust;

pub use roles::{Permissions, Role};
pub use trust::{ServerJwts, Trust};

/// Why an identity could not be made or read. None of these is helped by retrying.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A key could not sign or be read.
    #[error("nkey: {0}")]
    Key(String),
    /// Something written or read is not what it should be.
    #[error("{0}")]
    Invalid(String),
    /// JSON could not be written or read.
    #[error("json: {0}")]
    Json(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl AuthError {
    pub(crate) fn json(e: serde_json::Error) -> AuthError {
        AuthError::Json(e.to_string())
    }
}
