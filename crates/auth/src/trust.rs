//! The trust chain of a secured deployment: one NATS operator, a system account, and the
//! Switchyard account with one scoped signing key per role; and the identities (users) it signs.
//!
//! nats-server is given the operator JWT and both account JWTs (a memory resolver, preloaded).
//! It trusts any user JWT signed by one of the account's signing keys, so identities are minted
//! offline and never registered with the server: adding an agent is writing one `.creds` file.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use nkeys::KeyPair;
use serde_json::{Value, json};
use switchyard_protocol::Subjects;

use crate::AuthError;
use crate::jwt::{self, Claims};
use crate::roles::{self, Permissions, Role};

/// The secrets of a deployment: the keys that sign accounts and identities.
pub struct Trust {
    pub(crate) operator: KeyPair,
    pub(crate) system_account: KeyPair,
    pub(crate) account: KeyPair,
    /// One scoped signing key per role, in [`Role::ALL`] order.
    pub(crate) role_keys: Vec<(Role, KeyPair)>,
}

/// What differs between the system account and Switchyard's.
struct AccountExtras<'a> {
    signing_keys: Value,
    revocations: &'a BTreeMap<String, u64>,
    jetstream: bool,
}

/// The JWTs nats-server needs to trust the deployment.
pub struct ServerJwts {
    pub operator: String,
    pub system_account: (String, String),
    pub account: (String, String),
}

impl Trust {
    /// Fresh keys for a new deployment.
    pub fn generate() -> Trust {
        Trust {
            operator: KeyPair::new_operator(),
            system_account: KeyPair::new_account(),
            account: KeyPair::new_account(),
            role_keys: Role::ALL
                .iter()
                .map(|r| (*r, KeyPair::new_account()))
                .collect(),
        }
    }

    /// The operator and account JWTs, with the roles' permission templates for `subjects` and
    /// the revoked identities (user public key → seconds since the epoch: the server refuses
    /// that key's JWTs issued at or before then, and drops its connections).
    pub fn server_jwts(
        &self,
        subjects: &Subjects,
        revocations: &BTreeMap<String, u64>,
    ) -> Result<ServerJwts, AuthError> {
        let now = now_s();
        let operator = jwt::encode(
            Claims {
                subject: &self.operator.public_key(),
                name: "switchyard",
                issued_at: now,
                nats: json!({
                    "type": "operator",
                    "version": 2,
                    "system_account": self.system_account.public_key(),
                }),
            },
            &self.operator,
        )?;
        let system = self.account_jwt(
            &self.system_account,
            "SYS",
            AccountExtras {
                signing_keys: json!([]),
                revocations: &BTreeMap::new(),
                jetstream: false,
            },
            now,
        )?;
        let scoped: Vec<Value> = self
            .role_keys
            .iter()
            .map(|(role, key)| scoped_key(*role, key, subjects))
            .collect();
        let extras = AccountExtras {
            signing_keys: json!(scoped),
            revocations,
            jetstream: true,
        };
        let account = self.account_jwt(&self.account, "SWITCHYARD", extras, now)?;
        Ok(ServerJwts {
            operator,
            system_account: (self.system_account.public_key(), system),
            account: (self.account.public_key(), account),
        })
    }

    fn account_jwt(
        &self,
        account: &KeyPair,
        name: &str,
        extras: AccountExtras<'_>,
        now: u64,
    ) -> Result<String, AuthError> {
        // JetStream is on for an account whose storage limits are not zero; nats-server refuses
        // to start with JetStream on the system account.
        let storage = if extras.jetstream { -1 } else { 0 };
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": storage, "disk_storage": storage,
            "streams": storage, "consumer": storage,
        });
        jwt::encode(
            Claims {
                subject: &account.public_key(),
                name,
                issued_at: now,
                nats: json!({
                    "type": "account",
                    "version": 2,
                    "limits": unlimited,
                    "signing_keys": extras.signing_keys,
                    "revocations": extras.revocations,
                    "default_permissions": {"pub": {}, "sub": {}},
                }),
            },
            &self.operator,
        )
    }

    /// A user JWT for `name` in `role`, signed by the role's scoped key (so it carries no
    /// permissions itself: the server applies the role's template).
    pub fn user_jwt(&self, role: Role, name: &str, user: &KeyPair) -> Result<String, AuthError> {
        let signer = self.role_key(role)?;
        jwt::encode(
            Claims {
                subject: &user.public_key(),
                name,
                issued_at: now_s(),
                nats: json!({
                    "type": "user",
                    "version": 2,
                    // Nothing else: nats-server refuses a user of a scoped key that sets
                    // permissions or limits of its own.
                    "issuer_account": self.account.public_key(),
                    // Not a permission: tells a client which inbox prefix its role may use.
                    "tags": [roles::role_tag(role)],
                }),
            },
            signer,
        )
    }

    fn role_key(&self, role: Role) -> Result<&KeyPair, AuthError> {
        self.role_keys
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, key)| key)
            .ok_or_else(|| AuthError::Invalid(format!("no signing key for {}", role.as_str())))
    }
}

/// A `user_scope` signing key: the role's permission template, applied by the server to every
/// user the key signs.
fn scoped_key(role: Role, key: &KeyPair, subjects: &Subjects) -> Value {
    let Permissions { publish, subscribe } = roles::permissions(role, subjects);
    json!({
        "kind": "user_scope",
        "key": key.public_key(),
        "role": role.as_str(),
        "template": {
            "pub": {"allow": publish},
            "sub": {"allow": subscribe},
            "subs": -1, "data": -1, "payload": -1,
            "resp": answers_requests(role).then(|| json!({"max": 1, "ttl": 0})),
        },
    })
}

/// Whether `role` answers requests, and so may publish one reply to the reply subject of each
/// request it received (`resp`; a ttl of 0 is the server's default, 2 minutes): the optimizer
/// answers status queries, an agent answers other agents' synchronous requests.
fn answers_requests(role: Role) -> bool {
    matches!(role, Role::Optimizer | Role::Agent)
}

pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::decode_claims;

    #[test]
    fn each_role_has_a_scoped_key_with_its_template() {
        let trust = Trust::generate();
        let jwts = trust
            .server_jwts(&Subjects::new("coord"), &BTreeMap::new())
            .expect("jwts");
        let account = decode_claims(&jwts.account.1).expect("account claims");
        assert_eq!(account["iss"], trust.operator.public_key());
        let keys = account["nats"]["signing_keys"].as_array().expect("keys");
        assert_eq!(keys.len(), Role::ALL.len());
        let agent = keys
            .iter()
            .find(|k| k["role"] == "agent")
            .expect("agent key");
        assert_eq!(agent["kind"], "user_scope");
        let publish = agent["template"]["pub"]["allow"].as_array().expect("pub");
        assert!(publish.contains(&json!("coord.heartbeat.{{name()}}")));
        let system = decode_claims(&jwts.system_account.1).expect("system claims");
        assert_eq!(
            system["nats"]["limits"]["disk_storage"], 0,
            "no JetStream for SYS"
        );
    }

    #[test]
    fn a_user_is_signed_by_its_roles_key_and_carries_no_permissions() {
        let trust = Trust::generate();
        let user = KeyPair::new_user();
        let jwt = trust.user_jwt(Role::Agent, "a", &user).expect("user");
        let claims = decode_claims(&jwt).expect("claims");
        let agent_key = trust.role_key(Role::Agent).expect("key").public_key();
        assert_eq!(claims["iss"], agent_key);
        assert_eq!(claims["name"], "a");
        assert_eq!(claims["nats"]["issuer_account"], trust.account.public_key());
        assert!(claims["nats"].get("pub").is_none());
    }
}
