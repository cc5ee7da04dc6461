//! The directory `switchyard auth init DIR` writes and `add-agent` / `add-orchestrator` add to:
//!
//! ```text
//! DIR/nats-auth.conf            include from nats-server.conf: operator, accounts, resolver
//! DIR/subject-prefix            the subject prefix the permissions were written for
//! DIR/keys/*.nk                 the seeds that sign (secret: 0600, keep them off the servers)
//! DIR/creds/<role>-<name>.creds one identity each, loaded by any NATS client
//! DIR/revocations               revoked identities: `<user public key> <unix time> <role>-<name>`
//! DIR/jwt/*.jwt                 the operator and system account JWTs, kept for `revoke`
//! DIR/redis/users.acl           redis-server --aclfile: default user off, the optimizer user
//! DIR/redis/optimizer.password  that user's password (secret: 0600; users.acl holds its hash)
//! ```
//!
//! The keys are read again on every `add-*`, so identities can be minted on any machine that
//! holds `keys/`; nats-server only ever needs `nats-auth.conf`, which holds no secret.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nkeys::KeyPair;
use switchyard_protocol::Subjects;

use crate::creds::{self, creds_file};
use crate::jwt;
use crate::redis_acl::users_acl;
use crate::trust::{Trust, now_s};
use crate::{AuthError, Role};

const OPERATOR_SEED: &str = "operator.nk";
const SYSTEM_SEED: &str = "system-account.nk";
const ACCOUNT_SEED: &str = "account.nk";
const SERVER_CONF: &str = "nats-auth.conf";
const PREFIX_FILE: &str = "subject-prefix";
const REVOCATIONS_FILE: &str = "revocations";
const OPERATOR_JWT: &str = "operator.jwt";
const SYSTEM_JWT: &str = "system-account.jwt";
const REDIS_ACL: &str = "redis/users.acl";
const REDIS_OPTIMIZER_PASSWORD: &str = "redis/optimizer.password";

/// A deployment's identity directory.
pub struct AuthDir {
    root: PathBuf,
    trust: Trust,
    subjects: Subjects,
}

impl AuthDir {
    /// Generates a new trust chain in `root` (refusing to overwrite one), writes the server's
    /// include file and the credentials of one optimizer and one operator, and the Redis ACL
    /// file for the keys under `redis_key_prefix` with the optimizer user's password.
    pub fn init(
        root: &Path,
        subjects: Subjects,
        redis_key_prefix: &str,
    ) -> Result<AuthDir, AuthError> {
        if root.join("keys").exists() {
            return Err(AuthError::Invalid(format!(
                "{} already holds keys; remove it to start over (every identity it issued stops working)",
                root.display()
            )));
        }
        let dir = AuthDir {
            root: root.to_path_buf(),
            trust: Trust::generate(),
            subjects,
        };
        // Checked before anything is written, so a bad prefix leaves no half-made directory.
        let password = new_password()?;
        let acl = users_acl(redis_key_prefix, &password)?;
        dir.write_keys()?;
        write(&root.join(PREFIX_FILE), dir.subjects.prefix(), false)?;
        write(&dir.redis_acl_path(), &acl, false)?;
        write(&dir.redis_password_path(), &format!("{password}\n"), true)?;
        dir.write_server_conf()?;
        dir.add(Role::Optimizer, "optimizer")?;
        dir.add(Role::Operator, "operator")?;
        Ok(dir)
    }

    /// Reads the directory `init` wrote.
    pub fn open(root: &Path) -> Result<AuthDir, AuthError> {
        let keys = root.join("keys");
        let seed = |file: &str| read_seed(&keys.join(file));
        let role_keys = Role::ALL
            .iter()
            .map(|role| Ok((*role, seed(&role_seed_file(*role))?)))
            .collect::<Result<Vec<_>, AuthError>>()?;
        let trust = Trust {
            operator: seed(OPERATOR_SEED)?,
            system_account: seed(SYSTEM_SEED)?,
            account: seed(ACCOUNT_SEED)?,
            role_keys,
        };
        let prefix = read(&root.join(PREFIX_FILE))?;
        Ok(AuthDir {
            root: root.to_path_buf(),
            trust,
            subjects: Subjects::new(prefix.trim()),
        })
    }

    /// Mints a new identity of `role` named `name` and writes its `.creds` file; answers its path.
    pub fn add(&self, role: Role, name: &str) -> Result<PathBuf, AuthError> {
        check_name(name)?;
        let user = KeyPair::new_user();
        let jwt = self.trust.user_jwt(role, name, &user)?;
        let path = self.creds_path(role, name);
        write(&path, &creds_file(&jwt, &user)?, true)?;
        Ok(path)
    }

    /// Revokes the identity `role` `name`: its user key goes into the account JWT's
    /// revocations and `nats-auth.conf` is written again. nats-server applies it on a reload
    /// (`nats-server --signal reload`), refusing that key and closing its connections. The
    /// creds file is removed; minting the same name again makes a new key, which is not revoked.
    /// Answers the revoked public key.
    pub fn revoke(&self, role: Role, name: &str) -> Result<String, AuthError> {
        check_name(name)?;
        let path = self.creds_path(role, name);
        let claims = jwt::decode_claims(creds::jwt_of(&read(&path)?)?)?;
        let key = claims["sub"]
            .as_str()
            .ok_or_else(|| AuthError::Invalid(format!("{}: no user key", path.display())))?
            .to_string();
        let line = format!("{key} {} {}-{name}\n", now_s(), role.as_str());
        append(&self.root.join(REVOCATIONS_FILE), &line)?;
        self.write_server_conf()?;
        fs::remove_file(&path).map_err(|source| AuthError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(key)
    }

    /// The revoked user keys and since when, from the revocations file (none if it is absent).
    fn revocations(&self) -> Result<BTreeMap<String, u64>, AuthError> {
        let path = self.root.join(REVOCATIONS_FILE);
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
        let mut revoked = BTreeMap::new();
        for line in read(&path)?.lines().filter(|l| !l.trim().is_empty()) {
            let mut fields = line.split_whitespace();
            let (Some(key), Some(Ok(at))) = (fields.next(), fields.next().map(str::parse::<u64>))
            else {
                return Err(AuthError::Invalid(format!(
                    "{}: bad line {line:?}",
                    path.display()
                )));
            };
            revoked.insert(key.to_string(), at);
        }
        Ok(revoked)
    }

    /// Where the credentials of `role` `name` are (or would be) written.
    pub fn creds_path(&self, role: Role, name: &str) -> PathBuf {
        self.root
            .join("creds")
            .join(format!("{}-{name}.creds", role.as_str()))
    }

    /// The ACL file for redis-server (`--aclfile`); it holds password hashes only.
    pub fn redis_acl_path(&self) -> PathBuf {
        self.root.join(REDIS_ACL)
    }

    /// The optimizer user's Redis password, in clear (`redis.password_file`).
    pub fn redis_password_path(&self) -> PathBuf {
        self.root.join(REDIS_OPTIMIZER_PASSWORD)
    }

    /// The file to include from nats-server's configuration.
    pub fn server_conf_path(&self) -> PathBuf {
        self.root.join(SERVER_CONF)
    }

    fn write_keys(&self) -> Result<(), AuthError> {
        let keys = self.root.join("keys");
        let t = &self.trust;
        write_seed(&keys.join(OPERATOR_SEED), &t.operator)?;
        write_seed(&keys.join(SYSTEM_SEED), &t.system_account)?;
        write_seed(&keys.join(ACCOUNT_SEED), &t.account)?;
        for (role, key) in &t.role_keys {
            write_seed(&keys.join(role_seed_file(*role)), key)?;
        }
        Ok(())
    }

    fn write_server_conf(&self) -> Result<(), AuthError> {
        let jwts = self
            .trust
            .server_jwts(&self.subjects, &self.revocations()?)?;
        let (system, system_jwt) = &jwts.system_account;
        let (account, account_jwt) = &jwts.account;
        // nats-server refuses a reload that changes the operator (a JWT issued again differs in
        // its time), so the first operator and system JWTs are kept and written again as they are.
        let operator = self.kept_jwt(OPERATOR_JWT, &jwts.operator)?;
        let system_jwt = self.kept_jwt(SYSTEM_JWT, system_jwt)?;
        let text = format!(
            "# Written by `switchyard auth init`; include it from nats-server's configuration.\n\
             # It holds no secret. Identities are added without touching it or the server.\n\
             operator: {operator}\n\
             system_account: {system}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {system}: {system_jwt}\n  {account}: {account_jwt}\n}}\n"
        );
        // Replaced whole (rename), so a server reloading at that moment never reads half a file.
        let path = self.server_conf_path();
        let next = path.with_extension("conf.new");
        write(&next, &text, false)?;
        fs::rename(&next, &path).map_err(|source| AuthError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

impl AuthDir {
    /// The JWT kept in `file` under `jwt/`, or `fresh`, kept there from now on.
    fn kept_jwt(&self, file: &str, fresh: &str) -> Result<String, AuthError> {
        let path = self.root.join("jwt").join(file);
        if path.exists() {
            return Ok(read(&path)?.trim().to_string());
        }
        write(&path, fresh, false)?;
        Ok(fresh.to_string())
    }
}

/// 32 random bytes from the operating system, hex: 256 bits, so the SHA-256 hash in the ACL file
/// (which Redis does not salt) cannot be reversed by guessing.
fn new_password() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| AuthError::Key(format!("no randomness for the Redis password: {e}")))?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}

fn role_seed_file(role: Role) -> String {
    format!("role-{}.nk", role.as_str())
}

/// Names become subject tokens through the permission templates: the protocol's id rule.
fn check_name(name: &str) -> Result<(), AuthError> {
    if switchyard_protocol::validate_agent_id(name) {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "{name:?} is not a valid id (1-64 of [A-Za-z0-9_-], not \"all\")"
        )))
    }
}

fn write_seed(path: &Path, key: &KeyPair) -> Result<(), AuthError> {
    let seed = key.seed().map_err(|e| AuthError::Key(e.to_string()))?;
    write(path, &seed, true)
}

fn read_seed(path: &Path) -> Result<KeyPair, AuthError> {
    KeyPair::from_seed(read(path)?.trim())
        .map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> Result<String, AuthError> {
    fs::read_to_string(path).map_err(|source| AuthError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Appends `line` to `path`, creating it.
fn append(path: &Path, line: &str) -> Result<(), AuthError> {
    use std::io::Write;
    let io = |source| AuthError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)
}

/// Writes `text` to `path`, creating its directory; `secret` files are readable by the owner only.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), AuthError> {
    let io = |source| AuthError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    fs::write(path, text).map_err(io)?;
    if secret {
        restrict(path).map_err(io)?;
    }
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::creds::jwt_of;
    use crate::jwt::decode_claims;

    #[test]
    fn init_then_open_mints_identities_of_the_same_trust_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = AuthDir::init(tmp.path(), Subjects::new("coord"), "switchyard").expect("init");
        assert!(dir.server_conf_path().exists());
        assert!(dir.creds_path(Role::Optimizer, "optimizer").exists());
        assert!(
            AuthDir::init(tmp.path(), Subjects::new("coord"), "switchyard").is_err(),
            "no overwrite"
        );

        let reopened = AuthDir::open(tmp.path()).expect("open");
        let path = reopened.add(Role::Agent, "agent-7").expect("add");
        let creds = fs::read_to_string(&path).expect("creds");
        let claims = decode_claims(jwt_of(&creds).expect("jwt")).expect("claims");
        let agent_key = dir.trust.role_keys.iter().find(|(r, _)| *r == Role::Agent);
        assert_eq!(claims["iss"], agent_key.expect("agent key").1.public_key());
        assert_eq!(claims["name"], "agent-7");
        assert!(reopened.add(Role::Agent, "all").is_err());
        assert!(reopened.add(Role::Agent, "a.b").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = AuthDir::init(tmp.path(), Subjects::new("coord"), "switchyard").expect("init");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("keys").join(OPERATOR_SEED)), 0o600);
        assert_eq!(mode(&dir.creds_path(Role::Operator, "operator")), 0o600);
        assert_eq!(mode(&dir.redis_password_path()), 0o600);
    }

    #[test]
    fn init_writes_the_redis_acl_with_the_hash_of_the_password_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = AuthDir::init(tmp.path(), Subjects::new("coord"), "fleet").expect("init");
        let password = fs::read_to_string(dir.redis_password_path()).expect("password");
        let password = password.trim();
        assert_eq!(password.len(), 64);
        let acl = fs::read_to_string(dir.redis_acl_path()).expect("acl");
        assert!(!acl.contains(password));
        let hash = crate::redis_acl::password_hash(password);
        assert!(acl.contains(&format!("#{hash} ")), "{acl}");
        assert!(acl.contains("~{fleet}:*"), "{acl}");

        let other = tempfile::tempdir().expect("tempdir");
        let again = AuthDir::init(other.path(), Subjects::new("coord"), "fleet").expect("init");
        let second = fs::read_to_string(again.redis_password_path()).expect("password");
        assert_ne!(second.trim(), password, "a new password per init");
        let bad = tempfile::tempdir().expect("tempdir");
        assert!(AuthDir::init(bad.path(), Subjects::new("coord"), "a b").is_err());
        assert!(!bad.path().join("keys").exists(), "nothing written");
    }
}
